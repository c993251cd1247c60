"""The layers of the image network (App. D.2.1, Fig. D.1), as forward/backward pairs.

- :func:`multiscale_forward`: the multi-scale convolution layer: mean-pool the
  image to scales 1, 1/2, 1/4, ...; convolve at each scale; upsample each to
  full resolution and sum; the paper's "soft relu" ``log(1 + e^a)``, which is
  :func:`~numpy_diffusion.nn.layers.softplus_forward`;
- :func:`pointwise_forward`: a 1 x 1 convolution, the same dense map at every pixel
  (the per-pixel layers, and the map to the temporal coefficients);
- :func:`pixel_readout_forward`: the temporal readout of eqs. (62)-(63) at every pixel.

The network's other pieces come from :mod:`numpy_diffusion.nn`: the tanh pair, and
the dense pathway on the whole image vector, which is an MLP (:mod:`~numpy_diffusion.nn.mlp`).
Images are ``(N, H, W, C)``, channels last (see :mod:`.conv`); how the network lays
out its outputs is said once, in :mod:`.network`.
"""
from typing import NamedTuple

from ..backend import array_module
from ..nn.layers import OutputCache, softplus_backward, softplus_forward
from .conv import conv_backward, conv_forward, mean_pool_backward, mean_pool_forward
from .conv import upsample_backward, upsample_forward


class MultiScaleCache(NamedTuple):
    """One cache per pooling (scale s to s + 1), per convolution (scale s), per
    upsampling (scale s + 1 to s), and the soft ReLU's."""
    pools: tuple
    convs: tuple
    ups: tuple
    act: OutputCache


def multiscale_forward(x, W, b):
    """Multi-scale convolution followed by the soft ReLU, i.e. softplus (App. D.2.1).

    With ``P`` the 2 x 2 mean-pool, ``U`` the nearest upsampling by 2 and
    ``x_s = P^s x`` the image at scale ``2^-s``,

        a = sum_s U^s conv(x_s, W_s)  (+ b)  = y_0 + U(y_1 + U(y_2 + ...)),
        out = log(1 + exp(a)),

    the sum taken coarse to fine (Horner's scheme: ``S - 1`` upsamplings).  The
    bias enters once, with the finest convolution (a constant upsamples to itself).
    ``S = 1`` is a plain convolution layer.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C), ``H`` and ``W`` divisible by ``2^(S - 1)``
    W : ndarray of shape (S, k, k, C, O), one kernel per scale, ``k`` odd
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, H, W, O)
    cache : MultiScaleCache
    """
    S, xp = W.shape[0], array_module(x)
    if x.ndim != 4 or x.shape[1] % 2 ** (S - 1) or x.shape[2] % 2 ** (S - 1):
        raise ValueError(f"multi-scale layer with {S} scales: x must have shape (N, H, W, C) with H and W "
                         f"divisible by {2 ** (S - 1)}, got {tuple(x.shape)}")
    pyramid, pools = [x], []
    for _ in range(S - 1):
        xs, c = mean_pool_forward(pyramid[-1])                        # x_{s+1} = P x_s   (N, H/2^s, W/2^s, C)
        pyramid.append(xs)
        pools.append(c)
    bias = [b] + [xp.zeros_like(b)] * (S - 1)                         # b once, with the finest scale
    ys, convs = zip(*(conv_forward(xs, W[s], bias[s])
                      for s, xs in enumerate(pyramid)))               # y_s at scale 2^-s  (N, ., ., O)
    a, ups = ys[-1], [None] * (S - 1)
    for s in reversed(range(S - 1)):
        a, ups[s] = upsample_forward(a)                               # U(y_{s+1} + ...)
        a = ys[s] + a                                                 # (N, H/2^s, W/2^s, O)
    out, act = softplus_forward(a)                                    # soft ReLU  (N, H, W, O)
    return out, MultiScaleCache(tuple(pools), convs, tuple(ups), act)


def multiscale_backward(dout, cache, *, need_dx=True):
    """Gradients of :func:`multiscale_forward`: returns ``(dx, dW, db)``, shaped like
    ``x`` (N, H, W, C), ``W`` (S, k, k, C, O) and ``b`` (O,).

    Fine to coarse through the sum (``da/dy_s = U^s``, transposed: block sums), then
    coarse to fine through the pyramid (``dx_s = dconv_s + P^T dx_{s+1}``).
    ``dx`` is ``None`` without ``need_dx``.
    """
    S = len(cache.convs)
    dys = [softplus_backward(dout, cache.act)]                        # d out/d a = sigmoid(a)
    for s in range(S - 1):
        dys.append(upsample_backward(dys[-1], cache.ups[s]))          # d a/d y_{s+1}: block sums
    dW, db, dx = [None] * S, [None] * S, None
    for s in reversed(range(S)):
        # a coarser scale's dx always flows on to the finer one; only x_0's may be skipped
        dxs, dW[s], db[s] = conv_backward(dys[s], cache.convs[s], need_dx=need_dx or s > 0)
        if dx is not None and dxs is not None:
            dxs = dxs + mean_pool_backward(dx, cache.pools[s])       # d x_{s+1}/d x_s = P
        dx = dxs
    return dx, array_module(dys[0]).stack(dW), db[0]                  # b entered at scale 0: d a/d b = 1


class PointwiseCache(NamedTuple):
    """The two factors of the per-pixel product."""
    x: object          # (N, H, W, C)
    W: object          # (C, O)


def pointwise_forward(x, W, b):
    """1 x 1 convolution: ``out[n, h, w] = x[n, h, w] W + b`` at every pixel.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    W : ndarray of shape (C, O)
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, H, W, O)
    cache : PointwiseCache
    """
    if x.ndim != 4 or W.ndim != 2 or x.shape[3] != W.shape[0] or b.shape != W.shape[1:]:
        raise ValueError(f"1 x 1 convolution: x {tuple(x.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)} "
                         "do not fit; need x (N, H, W, C), W (C, O), b (O,)")
    return x @ W + b, PointwiseCache(x, W)                            # (N, H, W, O)


def pointwise_backward(dout, cache, *, need_dx=True):
    """Gradients of :func:`pointwise_forward`: returns ``(dx, dW, db)``, shaped like
    ``x`` (N, H, W, C) (``None`` without ``need_dx``), ``W`` (C, O) and ``b`` (O,)."""
    x, W = cache
    dW = x.reshape(-1, W.shape[0]).T @ dout.reshape(-1, W.shape[1])   # d(xW)/dW = x     (C, O)
    db = dout.sum(axis=(0, 1, 2))                                     # d(b)/db = 1      (O,)
    dx = dout @ W.T if need_dx else None                              # d(xW)/dx = W     (N, H, W, C)
    return dx, dW, db


class PixelReadoutCache(NamedTuple):
    """Each example's row of the temporal basis, ``g(t_n)``."""
    g: object          # (N, J)


def pixel_readout_forward(y, t, G):
    """Temporal readout at every pixel (App. D.2.1, eqs. 62-63).

    The last axis of ``y`` holds ``J`` coefficients for each of ``M`` outputs per pixel:
    output ``m`` reads ``y[..., m J : (m + 1) J]``, and

        z[n, h, w, m] = sum_j y[n, h, w, m J + j] g_j(t_n)      (eq. 62).

    (Which output ``m`` is which, the mean's or the variance's, is the network's choice:
    :mod:`.network`.)

    Parameters
    ----------
    y : ndarray of shape (N, H, W, M J)
    t : int ndarray of shape (N,), values ``1..T``
    G : ndarray of shape (T + 1, J), the basis (``nn.readout.bump_basis``, eq. 63)

    Returns
    -------
    z : ndarray of shape (N, H, W, M)
    cache : PixelReadoutCache
    """
    J = G.shape[1]
    if y.ndim != 4 or y.shape[3] % J or t.shape != y.shape[:1]:
        raise ValueError(f"pixel readout: y {tuple(y.shape)}, t {tuple(t.shape)}, G {tuple(G.shape)} do not "
                         "fit; need y (N, H, W, M J), t (N,), G (T + 1, J)")
    N, H, Wd, MJ = y.shape
    M = MJ // J
    g = G[t]                                                          # g_j(t_n)        (N, J)
    z = y.reshape(N, H * Wd * M, J) @ g[:, :, None]                   # eq. (62), sum over j  (N, H W M, 1)
    return z.reshape(N, H, Wd, M), PixelReadoutCache(g)


def pixel_readout_backward(dz, cache):
    """Gradient of the readout: ``dy[..., m J + j] = dz[..., m] g_j(t_n)``; returns ``dy`` (N, H, W, M J)."""
    g = cache.g
    N, H, Wd, M = dz.shape
    dy = dz[..., None] * g[:, None, None, None, :]                    # dz/dy_mj = g_j(t)  (N, H, W, M, J)
    return dy.reshape(N, H, Wd, M * g.shape[1])
