"""The image network of App. D.2.1 (Fig. D.1): ``x_t, t -> z = [z_mu, z_Sigma]``.

    x_t (N, D) -> image (N, H, W, C)
      -> multi-scale convolution + soft ReLU, ``n_layers_conv`` times   (N, H, W, n_hidden_conv)
      [beside it, optional: the dense pathway on the whole image vector
       x_t (N, D) -> linear + tanh, ``n_layers_dense`` times            (N, n_hidden_dense)
         -> linear + tanh to ``n_dense_channels`` per pixel             (N, H, W, n_dense_channels)
       joined to the convolutions' channels                             (N, H, W, n_hidden_conv + n_dense_channels)]
      -> 1 x 1 convolution + tanh, ``n_layers_pixel`` times             (N, H, W, n_hidden_pixel)
      [optional, not the paper's: with ``time_embedding = E``, every multi-scale and 1 x 1
       layer's output shifted per channel by the step's embedding, as in the U-Net
       (:func:`~.blocks.time_shift_forward`; t -> sinusoids -> SiLU MLP  (N, E))]
      -> 1 x 1 linear map to 2 C J temporal coefficients                (N, H, W, 2 C J)
      -> temporal readout, eqs. (62)-(63), at every pixel               (N, H, W, 2 C)
      -> z = [z_mu, z_Sigma], each flattened like x_t                   (N, 2 D)

Names.  The paper's "Dense Layers" (App. D.2.1) are of two kinds with one form, a
linear map and a tanh: "Dense (acting on the full image vector)" and
"kernel-width-1 convolutional (acting separately on the feature vector for each
pixel)".  Here, as in Fig. D.1, ``dense`` names the first only: the dense pathway,
an MLP on the whole image vector (the reference code's "dense lower" MLP); ``pixel``
names the second, the 1 x 1 layers (its "dense upper" MLP, applied at each pixel).

**Layout** (said here once; the layers and the models refer to it).  ``D = H W C``;
``x_t`` (N, D) is the image ``(N, H, W, C)`` flattened row-major over ``(H, W, C)``.
At each pixel the coefficient map gives ``y`` (2 C J): ``J`` coefficients for each of
``2 C`` outputs, output ``m`` reading ``y[m J : (m + 1) J]``
(:func:`~.layers.pixel_readout_forward`); the outputs are the mean's ``C`` colours,
then the variance's, ``m = i C + c`` with ``i = 0`` for ``z_mu`` and ``i = 1`` for
``z_Sigma`` (the paper's ``y^mu`` and ``y^Sigma``).  The network returns ``z`` (N, 2 D)
``= [z_mu, z_Sigma]``, each flattened row-major over ``(H, W, C)`` like ``x_t``: so
``z[:, :D]`` lines up with ``x_t``, and the Gaussian diffusion uses ``z`` as it uses
the outputs of its other networks (eqs. 64-65 or the project's other
parameterizations turn ``z`` into the reverse kernel).  The dense pathway's last
layer gives ``H W n_dense_channels`` units per image, read row-major as
``(H, W, n_dense_channels)`` and joined after the convolutions' channels.

Parameters are a dict of named arrays: ``conv{l}.W`` (S, k, k, C_in, C_out) and
``conv{l}.b``; the dense pathway's, named as an MLP's (:mod:`~numpy_diffusion.nn.mlp`),
``dense.W{l}`` and ``dense.b{l}``: ``dense.W0`` (D, n_hidden_dense), the middle ones
(n_hidden_dense, n_hidden_dense), the last (n_hidden_dense, H W n_dense_channels);
``pixel{l}.W`` (C_in, C_out) and ``pixel{l}.b``; ``readout.W`` and ``readout.b``, the
per-pixel map to the temporal coefficients (the paper's "Readout", App. D.2.1).  With a
time embedding, ``time.W0``, ``time.b0``, ``time.W1``, ``time.b1`` (its MLP, E -> E -> E) and
each layer's shift, ``conv{l}.emb.W`` (E, n_hidden_conv), ``pixel{l}.emb.W`` (E, n_hidden_pixel)
and their biases.
Gradients come back keyed the same way.
"""
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import numpy

from ..backend import array_module
from ..nn.layers import tanh_backward, tanh_forward
from ..nn.mlp import init_mlp, mlp_backward, mlp_forward
from ..nn.readout import SPACINGS, bump_basis
from ..validation import check_choice, check_positive_int
from .layers import multiscale_backward, multiscale_forward, pixel_readout_backward, pixel_readout_forward
from .layers import pointwise_backward, pointwise_forward
from .blocks import time_shift_backward, time_shift_forward, timestep_embedding


@dataclass
class ImageNetConfig:
    """Architecture.  The paper gives no widths; the defaults are the authors' code's
    (``n_hidden_conv = 20``, ``n_layers_conv = 4``, ``n_temporal_basis = 10``, a 20-unit
    per-pixel hidden layer before the linear readout), with 3 x 3 kernels.

    Attributes
    ----------
    size : int             image side in pixels (square images), divisible by ``2^(n_scales - 1)``.
    channels : int         colours ``C`` (1: grey).
    T : int                trajectory length.
    n_scales : int         scales of each multi-scale layer (1: plain convolution).
    kernel : int           odd kernel side ``k``.
    n_hidden_conv, n_layers_conv : int     width and number of multi-scale layers.
    n_hidden_pixel, n_layers_pixel : int   width and number of 1 x 1 tanh layers.
    n_temporal_basis : int                 bumps ``J`` of the readout (eq. 63).
    bump_spacing : str     ``'linear'`` (the paper's: centres evenly spaced in ``t``) or
                           ``'log'`` (evenly spaced in ``log t``); see :func:`~numpy_diffusion.nn.readout.bump_basis`.
    n_layers_dense : int   hidden layers of the dense pathway on the whole image vector
                           (Fig. D.1; the paper's CIFAR-10 model); 0: no dense pathway.  It has
                           ``n_layers_dense + 1`` linear + tanh layers: the last gives the channels.
    n_hidden_dense : int   width of its hidden layers.
    n_dense_channels : int   channels per pixel the dense pathway adds to the 1 x 1 layers' input.
    time_embedding : int   ``E``, the width of a time embedding that shifts every multi-scale and
                           1 x 1 layer's output (the U-Net's conditioning, not the paper's); 0: none,
                           ``t`` enters only at the readout, as in the paper.  Its shifts start at zero,
                           so an untrained network computes what the paper's does.
    """
    size: int = 16
    channels: int = 1
    T: int = 1000
    n_scales: int = 3
    kernel: int = 3
    n_hidden_conv: int = 20
    n_layers_conv: int = 4
    n_hidden_pixel: int = 20
    n_layers_pixel: int = 1
    n_temporal_basis: int = 10
    bump_spacing: str = "linear"
    n_layers_dense: int = 0
    n_hidden_dense: int = 500
    n_dense_channels: int = 2
    time_embedding: int = 0

    def __post_init__(self):
        for name in ("size", "channels", "n_scales", "kernel", "n_hidden_conv", "n_hidden_pixel",
                     "n_temporal_basis", "n_hidden_dense", "n_dense_channels"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("T", self.T, 2)
        check_positive_int("n_layers_conv", self.n_layers_conv, 0)
        check_positive_int("n_layers_pixel", self.n_layers_pixel, 0)
        check_positive_int("n_layers_dense", self.n_layers_dense, 0)
        check_positive_int("time_embedding", self.time_embedding, 0)
        if self.time_embedding and not (self.n_layers_conv or self.n_layers_pixel):
            raise ValueError("time_embedding shifts the multi-scale and 1 x 1 layers; with neither "
                             "(n_layers_conv = n_layers_pixel = 0) it must be 0")
        check_choice("bump_spacing", self.bump_spacing, SPACINGS)
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same padding), got {self.kernel}")
        if self.size % 2 ** (self.n_scales - 1):
            raise ValueError(f"size {self.size} must be divisible by 2^(n_scales - 1) = "
                             f"{2 ** (self.n_scales - 1)} to pool {self.n_scales} scales")

    @property
    def D(self):
        """Data dimension ``H W C``."""
        return self.size * self.size * self.channels

    @property
    def pixel_features(self):
        """Channels per pixel entering the 1 x 1 layers: the convolutions' (the image's ``C``
        when there are no convolution layers), then the dense pathway's, if any."""
        local = self.n_hidden_conv if self.n_layers_conv else self.channels
        return local + (self.n_dense_channels if self.n_layers_dense else 0)

    @property
    def dense_widths(self):
        """The dense pathway's layer widths, ``[D, n_hidden_dense, ..., H W n_dense_channels]``
        (``n_layers_dense + 2`` of them), or ``[]`` without it."""
        if not self.n_layers_dense:
            return []
        return [self.D] + [self.n_hidden_dense] * self.n_layers_dense + [self.size ** 2 * self.n_dense_channels]

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The configuration of a :meth:`to_dict` dict, or of a network's ``config()`` (its
        ``kind`` dropped).  Every field must be there and no other: a dict that names its
        fields otherwise is refused, never read with defaults."""
        d = {k: v for k, v in d.items() if k != "kind"}
        names = [f.name for f in fields(cls)]
        missing, unknown = [k for k in names if k not in d], sorted(set(d) - set(names))
        if missing or unknown:
            raise ValueError(f"not an image network configuration of this version: missing {missing}, "
                             f"unknown {unknown}")
        return cls(**d)


def init_image_net(cfg, rng, dtype=numpy.float64):
    """Initial parameters (host arrays).

    Convolution kernels are normal with variance ``1 / (S k^2 C_in)`` (the ``S``
    scales add up), the dense pathway's and the 1 x 1 layers Glorot-uniform, biases zero; the coefficient
    map starts at zero, so the untrained network outputs ``z = 0``.
    """
    params, c_in, S, k = {}, cfg.channels, cfg.n_scales, cfg.kernel

    def glorot(name, n_in, n_out):
        limit = numpy.sqrt(6.0 / (n_in + n_out))
        params[f"{name}.W"] = rng.uniform(-limit, limit, (n_in, n_out)).astype(dtype)
        params[f"{name}.b"] = numpy.zeros(n_out, dtype=dtype)

    for l in range(cfg.n_layers_conv):
        std = 1.0 / numpy.sqrt(S * k * k * c_in)
        params[f"conv{l}.W"] = (std * rng.standard_normal((S, k, k, c_in, cfg.n_hidden_conv))).astype(dtype)
        params[f"conv{l}.b"] = numpy.zeros(cfg.n_hidden_conv, dtype=dtype)
        c_in = cfg.n_hidden_conv
    if cfg.n_layers_dense:                                            # the dense pathway: an MLP
        params.update(init_mlp(cfg.dense_widths, rng, dtype, prefix="dense."))
    c_in = cfg.pixel_features
    for l in range(cfg.n_layers_pixel):
        glorot(f"pixel{l}", c_in, cfg.n_hidden_pixel)
        c_in = cfg.n_hidden_pixel
    n_coef = 2 * cfg.channels * cfg.n_temporal_basis
    params["readout.W"] = numpy.zeros((c_in, n_coef), dtype=dtype)
    params["readout.b"] = numpy.zeros(n_coef, dtype=dtype)
    E = cfg.time_embedding
    if E:                                                             # the time MLP, then shifts at zero
        params.update(init_mlp([E, E, E], rng, dtype, prefix="time."))
        for name, width in [(f"conv{l}", cfg.n_hidden_conv) for l in range(cfg.n_layers_conv)] + \
                           [(f"pixel{l}", cfg.n_hidden_pixel) for l in range(cfg.n_layers_pixel)]:
            params[f"{name}.emb.W"] = numpy.zeros((E, width), dtype=dtype)
            params[f"{name}.emb.b"] = numpy.zeros(width, dtype=dtype)
    return params


class ImageNetCache(NamedTuple):
    """The layers' caches, in forward order, and the image shape."""
    convs: tuple            # MultiScaleCache per multi-scale layer
    dense: object           # MLPCache of the dense pathway, or None without it
    dense_channels: int     # channels per pixel it adds (0 without it)
    pixels: tuple           # (PointwiseCache, OutputCache) per 1 x 1 tanh layer
    coef: object            # PointwiseCache of the readout's coefficient map
    readout: object         # PixelReadoutCache
    shape: tuple            # (N, H, W, C)
    time: object = None     # MLPCache of the time embedding, or None without it
    shifts: tuple = ()      # TimeShiftCache per multi-scale layer, then per 1 x 1 layer


def image_net_forward(xt, t, params, cfg, G):
    """``z = net(x_t, t)``; the layout of ``x_t`` and ``z`` is the module docstring's.

    Parameters
    ----------
    xt : ndarray of shape (N, D), ``D = size^2 C``
    t : int ndarray of shape (N,), values ``1..T``
    params : mapping name -> ndarray, from :func:`init_image_net`
    cfg : ImageNetConfig
    G : ndarray of shape (T + 1, J), the bump basis (eq. 63) in the parameters' dtype

    Returns
    -------
    z : ndarray of shape (N, 2 D), ``[z_mu, z_Sigma]``
    cache : ImageNetCache
    """
    N, s, C, xp = xt.shape[0], cfg.size, cfg.channels, array_module(xt)
    if xt.ndim != 2 or xt.shape[1] != cfg.D:
        raise ValueError(f"x_t must have shape (N, {cfg.D}) for {s} x {s} x {C} images, got {tuple(xt.shape)}")
    h = xt.reshape(N, s, s, C)                                        # (N, H, W, C)
    convs, dense, pixels, shifts, time = [], None, [], [], None
    if cfg.time_embedding:                                            # not the paper's: t in every layer
        e = xp.asarray(timestep_embedding(t, cfg.time_embedding), dtype=xt.dtype)
        emb, time = mlp_forward(e, params, activation="silu", prefix="time.")   # (N, E)

    def shifted(h, name):                                             # h + shift(emb), or h as it is
        if time is None:
            return h
        h, c = time_shift_forward(h, emb, params[f"{name}.emb.W"], params[f"{name}.emb.b"])
        shifts.append(c)
        return h
    for l in range(cfg.n_layers_conv):
        h, c = multiscale_forward(h, params[f"conv{l}.W"], params[f"conv{l}.b"])   # (N, H, W, n_hidden_conv)
        convs.append(c)
        h = shifted(h, f"conv{l}")
    if cfg.n_layers_dense:                                            # the dense pathway, on the whole image
        g, dense = mlp_forward(xt, params, activation="tanh", activate_last=True, prefix="dense.")  # (N, H W c_d)
        h = xp.concatenate([h, g.reshape(N, s, s, -1)], axis=3)      # (N, H, W, pixel_features)
    for l in range(cfg.n_layers_pixel):
        a, c_lin = pointwise_forward(h, params[f"pixel{l}.W"], params[f"pixel{l}.b"])
        h, c_act = tanh_forward(a)                                    # (N, H, W, n_hidden_pixel)
        pixels.append((c_lin, c_act))
        h = shifted(h, f"pixel{l}")
    y, c_coef = pointwise_forward(h, params["readout.W"], params["readout.b"])   # y_i, App. D.2.1  (N, H, W, 2 C J)
    z, c_read = pixel_readout_forward(y, t, G)                        # eq. (62)        (N, H, W, 2 C)
    z = z.reshape(N, s, s, 2, C).transpose(0, 3, 1, 2, 4).reshape(N, 2 * cfg.D)   # [z_mu, z_Sigma]  (N, 2 D)
    c_d = cfg.n_dense_channels if cfg.n_layers_dense else 0
    return z, ImageNetCache(tuple(convs), dense, c_d, tuple(pixels), c_coef, c_read, (N, s, s, C), time,
                            tuple(shifts))


def image_net_backward(dz, cache, *, need_dx=True):
    """Gradients: returns ``(dx, dparams)``, ``dx`` (N, D) or ``None`` without ``need_dx``
    (a fixed schedule needs no gradient through ``x_t``), ``dparams`` keyed and shaped like
    the parameters (:func:`init_image_net`)."""
    N, s, _, C = cache.shape
    grads, shifts, dembs = {}, list(cache.shifts), []

    def unshifted(dh, name):                                          # through h + shift(emb)
        if cache.time is None:
            return dh
        dh, demb, grads[f"{name}.emb.W"], grads[f"{name}.emb.b"] = time_shift_backward(dh, shifts.pop())
        dembs.append(demb)                                            # (N, E)
        return dh
    dz = dz.reshape(N, 2, s, s, C).transpose(0, 2, 3, 1, 4).reshape(N, s, s, 2 * C)   # (N, H, W, 2 C)
    dy = pixel_readout_backward(dz, cache.readout)                    # (N, H, W, 2 C J)
    below = bool(cache.convs or cache.dense)                          # layers beneath the 1 x 1 ones
    dh, grads["readout.W"], grads["readout.b"] = pointwise_backward(
        dy, cache.coef, need_dx=need_dx or below or bool(cache.pixels))
    for l in reversed(range(len(cache.pixels))):
        c_lin, c_act = cache.pixels[l]
        da = tanh_backward(unshifted(dh, f"pixel{l}"), c_act)
        dh, grads[f"pixel{l}.W"], grads[f"pixel{l}.b"] = pointwise_backward(
            da, c_lin, need_dx=need_dx or l > 0 or below)
    dx_dense = None
    if cache.dense is not None:                                       # split the joined channels
        c_d = cache.dense_channels
        dh, dg = dh[..., :-c_d], dh[..., -c_d:].reshape(N, -1)        # (N, H, W, c_local), (N, H W c_d)
        dx_dense, dense_grads = mlp_backward(dg, cache.dense, need_dx=need_dx)   # (N, D)
        grads.update(dense_grads)
    for l in reversed(range(len(cache.convs))):
        dh, grads[f"conv{l}.W"], grads[f"conv{l}.b"] = multiscale_backward(
            unshifted(dh, f"conv{l}"), cache.convs[l], need_dx=need_dx or l > 0)
    if cache.time is not None:                                        # every layer's shift read emb
        grads.update(mlp_backward(sum(dembs), cache.time, need_dx=False)[1])
    if not need_dx:
        return None, grads
    dx = dh.reshape(N, -1)                                            # both pathways read x_t
    return (dx + dx_dense if dx_dense is not None else dx), grads


class ImageNetwork:
    """The image network as an object a diffusion model can hold: configuration and
    the temporal basis; no parameters.

    ``init_params(rng, dtype) -> params``, ``forward(xt, t, params) -> (z, cache)``,
    ``backward(dz, cache, *, need_dxt) -> (dxt, dparams)``.  The backend and
    dtype are those of the parameters; ``xt`` is cast to that dtype.
    """

    def __init__(self, cfg):
        self.cfg = ImageNetConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        self._G = {}

    @property
    def D(self):
        return self.cfg.D

    @property
    def T(self):
        return self.cfg.T

    def init_params(self, rng, dtype=numpy.float64):
        return init_image_net(self.cfg, rng, dtype)

    def basis(self, xp, dtype):
        """The bump basis ``G`` (T + 1, J) of eq. (63), as an ``xp`` array of ``dtype``, made once."""
        key = (xp.__name__, numpy.dtype(dtype).str)
        if key not in self._G:
            G = bump_basis(self.cfg.T, self.cfg.n_temporal_basis, spacing=self.cfg.bump_spacing)
            self._G[key] = xp.asarray(G, dtype=dtype)
        return self._G[key]

    def forward(self, xt, t, params):
        """:func:`image_net_forward` in the parameters' dtype: ``x_t`` (N, D), ``t`` (N,) ->
        ``z`` (N, 2 D) and the cache."""
        W = params["readout.W"]
        xp = array_module(W)
        return image_net_forward(xt.astype(W.dtype, copy=False), t, params, self.cfg, self.basis(xp, W.dtype))

    def backward(self, dz, cache, *, need_dxt=True):
        """:func:`image_net_backward`: ``dz`` (N, 2 D) -> ``dx_t`` (N, D) or ``None``, and the
        parameter gradients."""
        dz = dz.astype(cache.coef.W.dtype, copy=False)
        return image_net_backward(dz, cache, need_dx=need_dxt)

    def config(self):
        return {"kind": "image", **self.cfg.to_dict()}

    @classmethod
    def from_config(cls, d):
        return cls(ImageNetConfig.from_dict(d))
