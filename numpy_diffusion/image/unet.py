"""A time-conditioned U-Net for the image model: ``x_t, t -> z = [z_mu, z_Sigma]``.

Not the paper's network (that is :mod:`.network`, App. D.2.1, where ``t`` enters only at
the last per-pixel layer): this is DDPM's (Ho et al. 2020), small, in which the step ``t``
shifts the features of every residual block.  With ``L = len(widths)`` levels, ``w_l =
widths[l]`` channels at resolution ``size / 2^l``, and ``blocks`` residual blocks per level:

    t (N,) -> sinusoidal embedding (N, w_0) -> linear, SiLU, linear -> emb   (N, emb_dim)
    x_t (N, D) -> image (N, H, W, C) -> k x k conv                            (N, H, W, w_0)
    down, level l = 0..L-1: res blocks to w_l; keep h as skip_l;
        2 x 2 mean pool (not after the coarsest)                          (N, H/2^l, W/2^l, w_l)
    middle: res block, attention block (if ``attention``), res block      (N, H/2^(L-1), ., w_{L-1})
    up, level l = L-1..0: concatenate skip_l; res blocks to w_l (the first reads the
        concatenation); nearest upsampling + k x k conv (not at the finest)
    out: GroupNorm, SiLU, k x k conv to 2 C channels                          (N, H, W, 2 C)
    -> z = [z_mu, z_Sigma]                                                    (N, 2 D)

The output's first ``C`` channels are ``z_mu``, the next ``C`` ``z_Sigma``; each is flattened
row-major over ``(H, W, C)`` like ``x_t`` (``D = H W C``), so ``z[:, :D]`` lines up with
``x_t``: the layout of the paper network's ``z``.  ``out`` starts at zero, so the untrained
network outputs ``z = 0`` exactly: the point around which the reverse kernels are written
as perturbations (with eqs. 64-65, the forward kernel itself).  Every residual block's
second convolution and the attention block's output map also start at zero, so every
block starts as its skip connection.  Convolutions are ``k x k`` (``kernel``, 3 by default).

Parameters, a dict of named arrays (:func:`~.unet_config.param_shapes` lists them, in order):

- ``time.W0`` (w_0, emb_dim), ``time.b0``, ``time.W1`` (emb_dim, emb_dim), ``time.b1``: the time MLP;
- ``in.W`` (k, k, C, w_0), ``in.b``: the first convolution;
- per residual block, ``down{l}.block{i}.``, ``mid.block0.``, ``mid.block1.``, ``up{l}.block{i}.``
  followed by ``norm1.g``, ``norm1.b``, ``conv1.W``, ``conv1.b``, ``emb.W``, ``emb.b``,
  ``norm2.g``, ``norm2.b``, ``conv2.W``, ``conv2.b``, and ``skip.W``, ``skip.b`` where its input
  and output widths differ (:func:`~.blocks.res_block_forward`);
- ``mid.attn.`` followed by ``norm.g``, ``norm.b``, ``qkv.W``, ``qkv.b``, ``out.W``, ``out.b``
  (:func:`~.attention.attention_block_forward`);
- ``up{l}.up.W`` (k, k, w_l, w_l), ``up{l}.up.b`` for ``l = 1..L-1``: the upsampling convolutions;
- ``out.norm.g``, ``out.norm.b``, ``out.W`` (k, k, w_0, 2 C), ``out.b``.

Gradients come back keyed the same way.
"""
from typing import NamedTuple

import numpy

from ..backend import array_module
from ..nn.mlp import mlp_backward, mlp_forward
from ..validation import check_steps
from .attention import attention_block_backward, attention_block_forward
from .blocks import norm_act_conv_backward, norm_act_conv_forward, res_block_backward, res_block_forward
from .blocks import timestep_embedding, upsample_conv_backward, upsample_conv_forward
from .conv import conv_backward, conv_forward, mean_pool_backward, mean_pool_forward
from .unet_config import UNetConfig, init_unet


def z_from_maps(F):
    """The output maps (N, H, W, 2 C) as ``z`` (N, 2 D): channels ``:C`` give ``z_mu``, ``C:`` give
    ``z_Sigma``, each flattened row-major over ``(H, W, C)``."""
    N, H, Wd, C2 = F.shape
    return F.reshape(N, H, Wd, 2, C2 // 2).transpose(0, 3, 1, 2, 4).reshape(N, H * Wd * C2)


def maps_from_z(dz, shape):
    """The inverse of :func:`z_from_maps` for images of ``shape`` (N, H, W, C); a permutation, so
    also its transpose (the backward pass's).  Returns (N, H, W, 2 C)."""
    N, H, Wd, C = shape
    return dz.reshape(N, 2, H, Wd, C).transpose(0, 2, 3, 1, 4).reshape(N, H, Wd, 2 * C)


class UNetCache(NamedTuple):
    """Each piece's cache under its parameters' prefix (``'time'``, ``'in'``, ``'down0.block0'``,
    ``'down0.pool'``, ``'mid.attn'``, ``'up1.up'``, ``'out'``, ...), and what the backward needs besides."""
    pieces: dict
    cfg: UNetConfig
    shape: tuple       # (N, H, W, C)
    dtype: object


def _down_forward(h, emb, params, cfg):
    pieces, skips, G = {}, [], cfg.groups
    for l in range(len(cfg.widths)):
        for i in range(cfg.blocks):
            h, pieces[f"down{l}.block{i}"] = res_block_forward(h, emb, params, f"down{l}.block{i}.", groups=G)
        skips.append(h)                                               # skip_l  (N, H/2^l, W/2^l, w_l)
        if l < len(cfg.widths) - 1:
            h, pieces[f"down{l}.pool"] = mean_pool_forward(h)         # (N, H/2^(l+1), W/2^(l+1), w_l)
    return h, skips, pieces


def _middle_forward(h, emb, params, cfg):
    pieces, G = {}, cfg.groups
    h, pieces["mid.block0"] = res_block_forward(h, emb, params, "mid.block0.", groups=G)
    if cfg.attention:
        h, pieces["mid.attn"] = attention_block_forward(h, params, "mid.attn.", groups=G)
    h, pieces["mid.block1"] = res_block_forward(h, emb, params, "mid.block1.", groups=G)
    return h, pieces


def _up_forward(h, skips, emb, params, cfg):
    pieces, G, xp = {}, cfg.groups, array_module(h)
    for l in reversed(range(len(cfg.widths))):
        h = xp.concatenate([h, skips[l]], axis=3)                     # (N, H/2^l, W/2^l, . + w_l)
        for i in range(cfg.blocks):
            h, pieces[f"up{l}.block{i}"] = res_block_forward(h, emb, params, f"up{l}.block{i}.", groups=G)
        if l > 0:
            h, pieces[f"up{l}.up"] = upsample_conv_forward(h, params[f"up{l}.up.W"], params[f"up{l}.up.b"])
    return h, pieces


def unet_forward(xt, t, params, cfg):
    """``z = unet(x_t, t)`` (module docstring).

    Parameters
    ----------
    xt : ndarray of shape (N, D), ``D = size^2 C``, row-major over (H, W, C), in the parameters' dtype
    t : int ndarray of shape (N,), values ``1..T``
    params : mapping name -> ndarray, from :func:`init_unet`
    cfg : UNetConfig

    Returns
    -------
    z : ndarray of shape (N, 2 D), ``[z_mu, z_Sigma]``
    cache : UNetCache
    """
    N, s, C, xp = xt.shape[0], cfg.size, cfg.channels, array_module(xt)
    if xt.ndim != 2 or xt.shape[1] != cfg.D:
        raise ValueError(f"x_t must have shape (N, {cfg.D}) for {s} x {s} x {C} images, got {tuple(xt.shape)}")
    check_steps("t", t, 1, cfg.T, shape=(N,))
    e = xp.asarray(timestep_embedding(t, cfg.widths[0]), dtype=xt.dtype)             # (N, w_0)
    emb, c_time = mlp_forward(e, params, activation="silu", prefix="time.")          # (N, emb_dim)
    h, c_in = conv_forward(xt.reshape(N, s, s, C), params["in.W"], params["in.b"])   # (N, H, W, w_0)
    h, skips, down = _down_forward(h, emb, params, cfg)
    h, middle = _middle_forward(h, emb, params, cfg)                                  # coarsest
    h, up = _up_forward(h, skips, emb, params, cfg)                                   # (N, H, W, w_0)
    F, c_out = norm_act_conv_forward(h, params, "out.norm", "out", groups=cfg.groups)   # (N, H, W, 2 C)
    pieces = {"time": c_time, "in": c_in, **down, **middle, **up, "out": c_out}
    return z_from_maps(F), UNetCache(pieces, cfg, (N, s, s, C), xt.dtype)


def _up_backward(dh, pieces, cfg):
    grads, demb, dskips = {}, 0, [None] * len(cfg.widths)
    for l in range(len(cfg.widths)):                                  # finest first
        if l > 0:
            dh, grads[f"up{l}.up.W"], grads[f"up{l}.up.b"] = upsample_conv_backward(dh, pieces[f"up{l}.up"])
        for i in reversed(range(cfg.blocks)):
            dh, de, g = res_block_backward(dh, pieces[f"up{l}.block{i}"])
            demb, grads = demb + de, {**grads, **g}
        dh, dskips[l] = dh[..., :-cfg.widths[l]], dh[..., -cfg.widths[l]:]   # the concatenation, split
    return dh, dskips, demb, grads


def _middle_backward(dh, pieces, cfg):
    dh, demb, grads = res_block_backward(dh, pieces["mid.block1"])
    if cfg.attention:
        dh, g = attention_block_backward(dh, pieces["mid.attn"])
        grads = {**grads, **g}
    dh, de, g = res_block_backward(dh, pieces["mid.block0"])
    return dh, demb + de, {**grads, **g}


def _down_backward(dh, dskips, pieces, cfg):
    grads, demb = {}, 0
    for l in reversed(range(len(cfg.widths))):                        # coarsest first
        if l < len(cfg.widths) - 1:
            dh = mean_pool_backward(dh, pieces[f"down{l}.pool"])      # d pool/d h = 1/4 per pixel
        dh = dh + dskips[l]                                           # h went on and into the skip
        for i in reversed(range(cfg.blocks)):
            dh, de, g = res_block_backward(dh, pieces[f"down{l}.block{i}"])
            demb, grads = demb + de, {**grads, **g}
    return dh, demb, grads


def unet_backward(dz, cache, *, need_dx=True):
    """Gradients of :func:`unet_forward`: ``(dx, grads)``, ``dx`` (N, D) or ``None`` without
    ``need_dx`` (a fixed schedule needs no gradient through ``x_t``; the first convolution's
    input gradient is then skipped), ``grads`` keyed and shaped like the parameters.

    ``emb`` feeds every residual block, so its gradient is the sum of the blocks'.
    """
    pieces, cfg, (N, s, _, C) = cache.pieces, cache.cfg, cache.shape
    dh, out = norm_act_conv_backward(maps_from_z(dz, cache.shape), pieces["out"])    # (N, H, W, w_0)
    dh, dskips, demb_up, up = _up_backward(dh, pieces, cfg)
    dh, demb_mid, middle = _middle_backward(dh, pieces, cfg)
    dh, demb_down, down = _down_backward(dh, dskips, pieces, cfg)
    dx, dW_in, db_in = conv_backward(dh, pieces["in"], need_dx=need_dx)
    _, time = mlp_backward(demb_up + demb_mid + demb_down, pieces["time"], need_dx=False)
    grads = {**time, "in.W": dW_in, "in.b": db_in, **down, **middle, **up, **out}
    return (dx.reshape(N, s * s * C) if need_dx else None), grads


class UNet:
    """The U-Net as an object a diffusion model can hold: the configuration, no parameters.

    ``init_params(rng, dtype) -> params``, ``forward(xt, t, params) -> (z, cache)``,
    ``backward(dz, cache, *, need_dxt) -> (dxt, dparams)``.  The backend and dtype are
    those of the parameters; ``xt`` is cast to that dtype.
    """

    def __init__(self, cfg):
        self.cfg = UNetConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg

    @property
    def D(self):
        return self.cfg.D

    @property
    def T(self):
        return self.cfg.T

    def init_params(self, rng, dtype=numpy.float64):
        return init_unet(self.cfg, rng, dtype)

    def forward(self, xt, t, params):
        """:func:`unet_forward` in the parameters' dtype: ``x_t`` (N, D), ``t`` (N,) -> ``z`` (N, 2 D), cache."""
        return unet_forward(xt.astype(params["in.W"].dtype, copy=False), t, params, self.cfg)

    def backward(self, dz, cache, *, need_dxt=True):
        """:func:`unet_backward`: ``dz`` (N, 2 D) -> ``dx_t`` (N, D) or ``None``, and the parameter gradients."""
        return unet_backward(dz.astype(cache.dtype, copy=False), cache, need_dx=need_dxt)

    def config(self):
        return {"kind": "unet", **self.cfg.to_dict()}

    @classmethod
    def from_config(cls, d):
        return cls(UNetConfig.from_dict(d))
