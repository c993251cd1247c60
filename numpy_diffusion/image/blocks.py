"""The pieces of the time-conditioned U-Net (:mod:`.unet`), as forward/backward pairs.

Not in the paper: this is the residual block of DDPM (Ho et al. 2020), as improved
by Nichol & Dhariwal (2021), built from the project's convolutions.

- :func:`group_norm_forward`: GroupNorm (Wu & He 2018), per example and group of channels;
- :func:`timestep_embedding`: the sinusoidal embedding of the step ``t`` (a plain function);
- :func:`norm_act_conv_forward`: ``conv(SiLU(GN(x)))``, the unit a residual block repeats;
- :func:`time_shift_forward`: a per-channel shift from the time embedding;
- :func:`res_block_forward`: two such units, the time shift between them, and a skip connection;
- :func:`upsample_conv_forward`: nearest-neighbour upsampling by 2, then a convolution.

Images are ``(N, H, W, C)``, channels last (see :mod:`.conv`).  Parameters are a dict of
named arrays; a block reads the keys under its ``prefix`` and returns gradients keyed the same.
"""
from typing import NamedTuple

from ..backend import array_module
from ..nn.layers import linear_backward, linear_forward, silu_backward, silu_forward
from .conv import conv_backward, conv_forward, upsample_backward, upsample_forward
from .layers import pointwise_backward, pointwise_forward


class GroupNormCache(NamedTuple):
    """The normalized input (the Jacobian is written in it), ``1 / sigma``, the gain."""
    xhat: object       # (N, H, W, C)
    inv_sigma: object  # (N, 1, 1, G, 1), one per example and group
    g: object          # (C,), for dxhat = g dout
    groups: int


def _grouped(a, groups):
    """``a`` (N, H, W, C) viewed as (N, H, W, G, C/G): the last axis runs within a group."""
    N, H, Wd, C = a.shape
    return a.reshape(N, H, Wd, groups, C // groups)


def _group_mean(a):
    """Mean of ``a`` (N, H, W, G, C/G) over H, W and C/G: (N, 1, 1, G, 1).  Summed over the pixels
    first, the contiguous axis of a channels-last image, then within the group: the same sum as
    ``a.mean(axis=(1, 2, 4))``, in an order NumPy runs about 7 times faster (GroupNorm was 40 %
    of a U-Net step)."""
    N, H, Wd, G, Cg = a.shape
    per_channel = a.reshape(N, H * Wd, G, Cg).sum(axis=1)             # over the pixels  (N, G, C/G)
    return per_channel.sum(axis=2).reshape(N, 1, 1, G, 1) / (H * Wd * Cg)   # within each group


def group_norm_forward(x, g, b, *, groups, eps=1e-5):
    """GroupNorm: normalize each example's group of ``C / G`` channels over ``(H, W)``
    and those channels, then a per-channel gain ``g`` and bias ``b``.

    With ``mu`` and ``var`` the mean and (biased) variance of one example's group,
    ``sigma = sqrt(var + eps)``:  ``xhat = (x - mu) / sigma``,  ``out = g xhat + b``.

    Backward.  In one group of ``M = H W C / G`` entries,
    ``d mu / d x_j = 1 / M`` and ``d sigma / d x_j = (x_j - mu) / (M sigma) = xhat_j / M``, so

        d xhat_i / d x_j = (delta_ij - 1/M) / sigma - (x_i - mu) xhat_j / (M sigma^2)
                         = (delta_ij - 1/M - xhat_i xhat_j / M) / sigma,

    and with ``dxhat = g dout``, summing over ``i``,

        dx_j = (dxhat_j - mean(dxhat) - xhat_j mean(dxhat xhat)) / sigma,

    means over the group: LayerNorm's backward over the group's axes.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C), ``C`` divisible by ``groups``
    g, b : ndarrays of shape (C,)
    groups : int, ``G``
    eps : float, added to the variance

    Returns
    -------
    out : ndarray of shape (N, H, W, C)
    cache : GroupNormCache
    """
    if x.ndim != 4 or x.shape[3] % groups or g.shape != x.shape[3:] or b.shape != g.shape:
        raise ValueError(f"group norm: x {tuple(x.shape)}, g {tuple(g.shape)}, b {tuple(b.shape)} with "
                         f"{groups} groups do not fit; need x (N, H, W, C), C divisible by groups, g and b (C,)")
    xg = _grouped(x, groups)                                          # (N, H, W, G, C/G)
    centred = xg - _group_mean(xg)                                    # x - mu
    inv_sigma = 1 / array_module(x).sqrt(_group_mean(centred * centred) + eps)   # 1 / sigma  (N, 1, 1, G, 1)
    xhat = (centred * inv_sigma).reshape(x.shape)                     # (N, H, W, C)
    return g * xhat + b, GroupNormCache(xhat, inv_sigma, g, groups)


def group_norm_backward(dout, cache):
    """Gradients of :func:`group_norm_forward`: ``(dx, dg, db)``, shaped like ``x`` (N, H, W, C),
    ``g`` (C,) and ``b`` (C,)."""
    xhat, inv_sigma, g, groups = cache
    dg = (dout * xhat).sum(axis=(0, 1, 2))                            # d out/d g = xhat    (C,)
    db = dout.sum(axis=(0, 1, 2))                                     # d out/d b = 1       (C,)
    dxhat, xh = _grouped(dout * g, groups), _grouped(xhat, groups)    # d out/d xhat = g
    dx = inv_sigma * (dxhat - _group_mean(dxhat) - xh * _group_mean(dxhat * xh))   # d xhat/d x (docstring)
    return dx.reshape(xhat.shape), dg, db


def timestep_embedding(t, dim):
    """The sinusoidal embedding of the integer step ``t`` (Vaswani et al. 2017; DDPM).

    With ``h = dim // 2`` frequencies ``w_i = 1 / 10000^(2 i / dim)``, ``i = 0..h-1``,

        e[n, i] = sin(t_n w_i),    e[n, h + i] = cos(t_n w_i),

    and a last column of zeros when ``dim`` is odd.  (Vaswani et al. interleave the sines
    and cosines; concatenating them, as DDPM does, is a permutation that the linear layer
    reading ``e`` absorbs.)  Wavelengths run from ``2 pi`` steps to about ``2 pi 10^4``:
    nearby steps get nearby embeddings, and every step of ``1..T`` its own.
    Not differentiable (``t`` is an integer); computed in float64.

    Parameters
    ----------
    t : int ndarray of shape (N,)
    dim : int, ``>= 1``

    Returns
    -------
    e : float64 ndarray of shape (N, dim)
    """
    xp, half = array_module(t), dim // 2
    w = 10000.0 ** (-2 * xp.arange(half, dtype=xp.float64) / dim)    # w_i                (h,)
    angle = t.astype(xp.float64)[:, None] * w                          # t_n w_i            (N, h)
    pad = xp.zeros((t.shape[0], dim - 2 * half))                       # (N, dim mod 2)
    return xp.concatenate([xp.sin(angle), xp.cos(angle), pad], axis=1)   # (N, dim)


class NormActConvCache(NamedTuple):
    """The three layers' caches and the names of the parameters they read."""
    norm: GroupNormCache
    act: object        # SiLUCache
    conv: object       # ConvCache
    names: tuple       # (norm, conv): the gradients' keys


def norm_act_conv_forward(x, params, norm, conv, *, groups):
    """``conv(SiLU(GN(x)))``: GroupNorm with ``params[norm + '.g']``, ``[norm + '.b']``, then
    SiLU, then the same-padded convolution ``params[conv + '.W']`` (k, k, C, O), ``[conv + '.b']``.

    Returns ``out`` (N, H, W, O) and a :class:`NormActConvCache`.
    """
    h, c_norm = group_norm_forward(x, params[f"{norm}.g"], params[f"{norm}.b"], groups=groups)
    h, c_act = silu_forward(h)                                        # (N, H, W, C)
    out, c_conv = conv_forward(h, params[f"{conv}.W"], params[f"{conv}.b"])   # (N, H, W, O)
    return out, NormActConvCache(c_norm, c_act, c_conv, (norm, conv))


def norm_act_conv_backward(dout, cache):
    """Gradients of :func:`norm_act_conv_forward`: ``(dx, grads)``, ``dx`` (N, H, W, C) and
    ``grads`` the four parameters' keyed like them."""
    norm, conv = cache.names
    grads = {}
    dh, grads[f"{conv}.W"], grads[f"{conv}.b"] = conv_backward(dout, cache.conv)   # (N, H, W, C)
    dh = silu_backward(dh, cache.act)                                 # SiLU' = sigma (1 + x (1 - sigma))
    dx, grads[f"{norm}.g"], grads[f"{norm}.b"] = group_norm_backward(dh, cache.norm)
    return dx, grads


class TimeShiftCache(NamedTuple):
    """The caches of the embedding's SiLU and of its linear map."""
    act: object        # SiLUCache of the time embedding
    lin: object        # LinearCache of the per-channel shift


def time_shift_forward(h, emb, W, b):
    """The time embedding's shift of every channel: ``out = h + (SiLU(emb) W + b)[:, None, None, :]``,
    the same at every pixel (DDPM's way of telling a layer the step ``t``).

    Parameters
    ----------
    h : ndarray of shape (N, H, W, O)
    emb : ndarray of shape (N, E), the time embedding
    W : ndarray of shape (E, O)
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, H, W, O)
    cache : TimeShiftCache
    """
    if emb.ndim != 2 or emb.shape[0] != h.shape[0] or W.shape != (emb.shape[1], h.shape[3]):
        raise ValueError(f"time shift: h {tuple(h.shape)}, emb {tuple(emb.shape)}, W {tuple(W.shape)} do not fit; "
                         "need h (N, H, W, O), emb (N, E), W (E, O)")
    e, act = silu_forward(emb)                                        # (N, E)
    e, lin = linear_forward(e, W, b)                                  # (N, O)
    return h + e[:, None, None, :], TimeShiftCache(act, lin)


def time_shift_backward(dout, cache):
    """Gradients of :func:`time_shift_forward`: ``(dh, demb, dW, db)``, shaped like ``h``, ``emb``,
    ``W`` and ``b``."""
    de = dout.sum(axis=(1, 2))                                        # d out/d e = 1 at every pixel  (N, O)
    de, dW, db = linear_backward(de, cache.lin)                       # (N, E)
    return dout, silu_backward(de, cache.act), dW, db                 # d out/d h = 1; SiLU'(emb)


class ResBlockCache(NamedTuple):
    """The caches of the block's pieces; ``skip`` is ``None`` for the identity."""
    first: NormActConvCache
    shift: TimeShiftCache
    second: NormActConvCache
    skip: object       # PointwiseCache or None
    prefix: str


def res_block_forward(x, emb, params, prefix, *, groups):
    """A residual block conditioned on the time embedding (DDPM's, Ho et al. 2020):

        h = conv1(SiLU(GN1(x)))                               (N, H, W, O)
        h = h + (SiLU(emb) W_emb + b_emb)[:, None, None, :]   a shift per channel, from t
        out = skip(x) + conv2(SiLU(GN2(h)))

    ``skip`` is a 1 x 1 convolution where ``x`` has ``C != O`` channels, the identity otherwise.
    Its parameters are ``{prefix}`` + ``norm1.g``, ``norm1.b``, ``conv1.W``, ``conv1.b``, ``emb.W``
    (E, O), ``emb.b``, ``norm2.g``, ``norm2.b``, ``conv2.W``, ``conv2.b`` and, where the widths
    differ, ``skip.W`` (C, O), ``skip.b``.  With ``conv2`` at zero (its initialization,
    improved-diffusion's choice) the block is its skip: the identity where ``C = O``.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    emb : ndarray of shape (N, E), the time embedding
    params : mapping name -> ndarray
    prefix : str, e.g. ``'down0.block0.'``
    groups : int, GroupNorm's groups (dividing ``C`` and ``O``)

    Returns
    -------
    out : ndarray of shape (N, H, W, O)
    cache : ResBlockCache
    """
    O, has_skip = params[f"{prefix}conv1.W"].shape[3], f"{prefix}skip.W" in params
    if emb.ndim != 2 or emb.shape[0] != x.shape[0] or (x.shape[3] != O and not has_skip):
        raise ValueError(f"res block {prefix!r}: x {tuple(x.shape)}, emb {tuple(emb.shape)} do not fit; need "
                         f"emb (N, E) for x (N, H, W, C), and {prefix}skip.W where C differs from {O}")
    h, first = norm_act_conv_forward(x, params, prefix + "norm1", prefix + "conv1", groups=groups)   # (N, H, W, O)
    h, shift = time_shift_forward(h, emb, params[f"{prefix}emb.W"], params[f"{prefix}emb.b"])   # (N, H, W, O)
    h, second = norm_act_conv_forward(h, params, prefix + "norm2", prefix + "conv2", groups=groups)   # (N, H, W, O)
    s, skip = pointwise_forward(x, params[f"{prefix}skip.W"], params[f"{prefix}skip.b"]) if has_skip else (x, None)
    return s + h, ResBlockCache(first, shift, second, skip, prefix)


def res_block_backward(dout, cache):
    """Gradients of :func:`res_block_forward`: ``(dx, demb, grads)``, ``dx`` (N, H, W, C),
    ``demb`` (N, E) and ``grads`` keyed like the block's parameters."""
    p = cache.prefix
    dh, grads = norm_act_conv_backward(dout, cache.second)            # d out/d conv2 = 1   (N, H, W, O)
    dh, demb, grads[f"{p}emb.W"], grads[f"{p}emb.b"] = time_shift_backward(dh, cache.shift)   # (N, E)
    dx, first = norm_act_conv_backward(dh, cache.first)               # (N, H, W, C)
    grads.update(first)
    if cache.skip is None:
        return dx + dout, demb, grads                                 # d skip/d x = 1
    ds, grads[f"{p}skip.W"], grads[f"{p}skip.b"] = pointwise_backward(dout, cache.skip)   # d skip/d x = W_skip
    return dx + ds, demb, grads


class UpsampleConvCache(NamedTuple):
    up: object         # ShapeCache
    conv: object       # ConvCache


def upsample_conv_forward(x, W, b):
    """Nearest-neighbour upsampling by 2, then a same-padded convolution (DDPM's upsampling).

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    W : ndarray of shape (k, k, C, O)
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, 2H, 2W, O)
    cache : UpsampleConvCache
    """
    h, up = upsample_forward(x)                                       # (N, 2H, 2W, C)
    out, conv = conv_forward(h, W, b)                                 # (N, 2H, 2W, O)
    return out, UpsampleConvCache(up, conv)


def upsample_conv_backward(dout, cache):
    """Gradients of :func:`upsample_conv_forward`: ``(dx, dW, db)``."""
    dh, dW, db = conv_backward(dout, cache.conv)                      # (N, 2H, 2W, C)
    return upsample_backward(dh, cache.up), dW, db                    # block sums   (N, H, W, C)
