"""The layers of the image network (App. D.2.1, Fig. D.1), as forward/backward pairs.

- :func:`multiscale_forward`: the multi-scale convolution layer: mean-pool the
  image to scales 1, 1/2, 1/4, ...; convolve at each scale; upsample each to
  full resolution and sum; soft ReLU ``log(1 + e^a)``;
- :func:`pointwise_forward`: a 1 x 1 convolution, the same dense map at every pixel;
- :func:`dense_pathway_forward`: dense layers on the whole image vector (Fig. D.1);
- :func:`tanh_forward`, :func:`softrelu_forward`: the two nonlinearities;
- :func:`pixel_readout_forward`: the temporal readout of eqs. (62)-(63) at every pixel.

Images are ``(N, H, W, C)``, channels last (see :mod:`.conv`).
"""
from typing import NamedTuple

from ..backend import array_module
from ..nn.layers import linear_backward, linear_forward, softplus
from .conv import conv_backward, conv_forward, mean_pool_backward, mean_pool_forward
from .conv import upsample_backward, upsample_forward


class ActCache(NamedTuple):
    """What the derivative of a pointwise nonlinearity reads: its input or its output."""
    value: object      # same shape as the layer's input


def softrelu_forward(x):
    """Soft ReLU ``s = log(1 + exp(x))`` (App. D.2.1, multi-scale step 4); caches the output,
    since ``s' = sigmoid(x) = e^x / (1 + e^x) = 1 - exp(-s)``.  (``nn.layers.softplus_forward``
    is the same function caching its input; this one caches its output, as :func:`tanh_forward`
    does, so both nonlinearities of the image network read their derivative from their output.)"""
    out = softplus(x)
    return out, ActCache(out)


def softrelu_backward(dout, cache):
    """``dx = dout * (1 - exp(-s))``, as ``-expm1(-s)``: full precision where ``s`` is tiny.
    Shaped like ``dout``."""
    return dout * -array_module(dout).expm1(-cache.value)             # softplus' = sigmoid = 1 - e^-s


def tanh_forward(x):
    """``tanh(x)`` (the 1 x 1 layers, App. D.2.1 "Dense Layers"); caches the output."""
    out = array_module(x).tanh(x)
    return out, ActCache(out)


def tanh_backward(dout, cache):
    """``dx = dout * (1 - tanh(x)^2)``, shaped like ``dout``."""
    return dout * (1 - cache.value * cache.value)                     # tanh' = 1 - tanh^2


class MultiScaleCache(NamedTuple):
    """One cache per pooling (scale s to s + 1), per convolution (scale s), per
    upsampling (scale s + 1 to s), and the soft ReLU's."""
    pools: tuple
    convs: tuple
    ups: tuple
    act: ActCache


def multiscale_forward(x, W, b):
    """Multi-scale convolution followed by the soft ReLU (App. D.2.1).

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
    out, act = softrelu_forward(a)                                    # (N, H, W, O)
    return out, MultiScaleCache(tuple(pools), convs, tuple(ups), act)


def multiscale_backward(dout, cache, *, need_dx=True):
    """Gradients of :func:`multiscale_forward`: returns ``(dx, dW, db)``, shaped like
    ``x`` (N, H, W, C), ``W`` (S, k, k, C, O) and ``b`` (O,).

    Fine to coarse through the sum (``da/dy_s = U^s``, transposed: block sums), then
    coarse to fine through the pyramid (``dx_s = dconv_s + P^T dx_{s+1}``).
    ``dx`` is ``None`` without ``need_dx``.
    """
    S = len(cache.convs)
    dys = [softrelu_backward(dout, cache.act)]                        # d out/d a = sigmoid(a)
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


def dense_pathway_forward(xt, params, n_layers):
    """The dense pathway: ``n_layers + 1`` layers of ``tanh(g W + b)`` on the whole image
    vector (App. D.2.1, "Dense Layers"), ``global0`` first.

    Returns ``g`` (N, H W c_g), the channels it adds at each pixel, row-major over
    ``(H, W, c_g)``, and the layers' caches, ``(LinearCache, ActCache)`` each.
    """
    g, caches = xt, []                                                # the whole image vector  (N, D)
    for l in range(n_layers + 1):
        a, c_lin = linear_forward(g, params[f"global{l}.W"], params[f"global{l}.b"])
        g, c_act = tanh_forward(a)                                    # (N, n_hidden_global), last (N, H W c_g)
        caches.append((c_lin, c_act))
    return g, tuple(caches)


def dense_pathway_backward(dg, caches, *, need_dx=True):
    """Gradients of :func:`dense_pathway_forward`: returns ``(dx, grads)``, ``dx`` (N, D) or
    ``None`` without ``need_dx``, ``grads`` keyed ``global{l}.W`` and ``global{l}.b``."""
    grads = {}
    for l in reversed(range(len(caches))):
        c_lin, c_act = caches[l]
        da = tanh_backward(dg, c_act)                                 # (N, width of layer l)
        dg, grads[f"global{l}.W"], grads[f"global{l}.b"] = linear_backward(da, c_lin, need_dx=need_dx or l > 0)
    return dg, grads


class ReadoutCache(NamedTuple):
    """Each example's row of the temporal basis, ``g(t_n)``."""
    g: object          # (N, J)


def pixel_readout_forward(y, t, G):
    """Temporal readout at every pixel (App. D.2.1, eqs. 62-63).

    The last axis of ``y`` holds ``J`` coefficients for each of ``M = 2 C`` outputs per
    pixel, the mean's ``C`` colours first, then the variance's (the paper's ``y^mu`` and
    ``y^Sigma``): output ``m = i C + c`` (``i = 0`` for ``z^mu``, 1 for ``z^Sigma``) reads
    ``y[..., m J : (m + 1) J]``, and

        z[n, h, w, m] = sum_j y[n, h, w, m J + j] g_j(t_n)      (eq. 62).

    Parameters
    ----------
    y : ndarray of shape (N, H, W, M J)
    t : int ndarray of shape (N,), values ``1..T``
    G : ndarray of shape (T + 1, J), the basis (``nn.readout.bump_basis``, eq. 63)

    Returns
    -------
    z : ndarray of shape (N, H, W, M)
    cache : ReadoutCache
    """
    J = G.shape[1]
    if y.ndim != 4 or y.shape[3] % J or t.shape != y.shape[:1]:
        raise ValueError(f"pixel readout: y {tuple(y.shape)}, t {tuple(t.shape)}, G {tuple(G.shape)} do not "
                         "fit; need y (N, H, W, M J), t (N,), G (T + 1, J)")
    N, H, Wd, MJ = y.shape
    M = MJ // J
    g = G[t]                                                          # g_j(t_n)        (N, J)
    z = y.reshape(N, H * Wd * M, J) @ g[:, :, None]                   # eq. (62), sum over j  (N, H W M, 1)
    return z.reshape(N, H, Wd, M), ReadoutCache(g)


def pixel_readout_backward(dz, cache):
    """Gradient of the readout: ``dy[..., m J + j] = dz[..., m] g_j(t_n)``; returns ``dy`` (N, H, W, M J)."""
    g = cache.g
    N, H, Wd, M = dz.shape
    dy = dz[..., None] * g[:, None, None, None, :]                    # dz/dy_mj = g_j(t)  (N, H, W, M, J)
    return dy.reshape(N, H, Wd, M * g.shape[1])
