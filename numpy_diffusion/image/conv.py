"""Convolution, mean-pooling and upsampling on images, as forward/backward pairs.

Images are ``(N, H, W, C)`` arrays (channels last), so that a 1 x 1 convolution
is one matrix product over the last axis.  A convolution here is a
cross-correlation with "same" zero padding and an odd ``k x k`` kernel
``W`` of shape ``(k, k, C, O)``, ``p = (k - 1) / 2``:

    out[n, h, w, o] = b[o] + sum_{i, j, c} x[n, h + i - p, w + j - p, c] W[i, j, c, o]

with ``x`` read as zero outside the image.  Two forms compute it:

- :func:`conv_forward_naive` loops over the ``k^2`` kernel offsets, one
  matrix product each: the formula as written, to read and to test against;
- :func:`conv_forward` gathers every ``k x k`` patch into one row of a matrix
  (im2col, through a strided view) and multiplies once: one GEMM.

Their backward passes are tested equal to each other and to finite differences.
Mean-pooling by 2 and nearest-neighbour upsampling by 2 build the image
pyramid of the multi-scale layer (App. D.2.1); each is the other's adjoint up
to a factor 4.
"""
from typing import NamedTuple

from ..backend import array_module


def _check_conv(x, W, b):
    k = W.shape[0] if W.ndim == 4 else 0
    if x.ndim != 4 or W.ndim != 4 or W.shape[1] != k or k % 2 == 0 or W.shape[2] != x.shape[3] \
            or b.shape != W.shape[3:]:
        raise ValueError(f"convolution: x {tuple(x.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)} "
                         "do not fit; need x (N, H, W, C), W (k, k, C, O) with k odd, b (O,)")


def _pad(x, p):
    """``x`` with ``p`` zero rows and columns on every side.  (N, H + 2p, W + 2p, C)"""
    xp, (N, H, Wd, C) = array_module(x), x.shape
    out = xp.zeros((N, H + 2 * p, Wd + 2 * p, C), dtype=x.dtype)
    out[:, p:p + H, p:p + Wd] = x
    return out


class ConvNaiveCache(NamedTuple):
    """The two factors of every product: the input and the kernel."""
    x: object          # (N, H, W, C)
    W: object          # (k, k, C, O)


def conv_forward_naive(x, W, b):
    """Same-padded convolution, one matrix product per kernel offset (the reference form).

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    W : ndarray of shape (k, k, C, O), ``k`` odd
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, H, W, O)
    cache : ConvNaiveCache
    """
    _check_conv(x, W, b)
    xp, k, (N, H, Wd, _) = array_module(x), W.shape[0], x.shape
    xpad = _pad(x, k // 2)                                            # (N, H+2p, W+2p, C)
    out = xp.zeros((N, H, Wd, W.shape[3]), dtype=xp.result_type(x, W)) + b
    for i in range(k):
        for j in range(k):
            out += xpad[:, i:i + H, j:j + Wd] @ W[i, j]              # x[h+i-p, w+j-p] W[i, j]  (N, H, W, O)
    return out, ConvNaiveCache(x, W)


def conv_backward_naive(dout, cache):
    """Gradients of :func:`conv_forward_naive`: returns ``(dx, dW, db)``, shaped like
    ``x`` (N, H, W, C), ``W`` (k, k, C, O) and ``b`` (O,)."""
    x, W = cache
    xp, k, (_, H, Wd, _) = array_module(x), W.shape[0], x.shape
    p = k // 2
    xpad = _pad(x, p)                                                 # (N, H+2p, W+2p, C)
    dxpad, dW = xp.zeros_like(xpad), xp.empty_like(W)
    for i in range(k):
        for j in range(k):
            window = xpad[:, i:i + H, j:j + Wd]                       # (N, H, W, C)
            dW[i, j] = window.reshape(-1, x.shape[3]).T @ dout.reshape(-1, W.shape[3])  # d out/dW[i,j] = window
            dxpad[:, i:i + H, j:j + Wd] += dout @ W[i, j].T           # d out/d window = W[i, j]
    db = dout.sum(axis=(0, 1, 2))                                     # d out/db = 1       (O,)
    return dxpad[:, p:p + H, p:p + Wd], dW, db


def im2col(x, k):
    """Every ``k x k`` patch of the zero-padded ``x`` as one row.

    ``cols[(n, h, w), (i, j, c)] = x[n, h + i - p, w + j - p, c]``: a strided view
    of the padded image (no copy) reshaped into a matrix (one copy).

    Returns
    -------
    cols : ndarray of shape (N H W, k k C)
    """
    xp, (N, H, Wd, C) = array_module(x), x.shape
    xpad = xp.ascontiguousarray(_pad(x, k // 2))                      # (N, H+2p, W+2p, C)
    sN, sH, sW, sC = xpad.strides
    patches = xp.lib.stride_tricks.as_strided(
        xpad, shape=(N, H, Wd, k, k, C), strides=(sN, sH, sW, sH, sW, sC))   # view  (N, H, W, k, k, C)
    return patches.reshape(N * H * Wd, k * k * C)


def _correlate(x, W):
    """``(sum_{i,j,c} x[h+i-p, w+j-p, c] W[i,j,c,o], cols)`` by im2col and one GEMM."""
    k, (N, H, Wd, _) = W.shape[0], x.shape
    cols = im2col(x, k)                                               # (N*H*W, k*k*C)
    out = cols @ W.reshape(-1, W.shape[3])                            # (N*H*W, O)
    return out.reshape(N, H, Wd, W.shape[3]), cols


class ConvCache(NamedTuple):
    """The patch matrix (the weight gradient is one GEMM with it) and the kernel."""
    cols: object       # (N H W, k k C)
    W: object          # (k, k, C, O)


def conv_forward(x, W, b):
    """Same-padded convolution as im2col and one GEMM; equal to :func:`conv_forward_naive`.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    W : ndarray of shape (k, k, C, O), ``k`` odd
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, H, W, O)
    cache : ConvCache
    """
    _check_conv(x, W, b)
    out, cols = _correlate(x, W)                                      # (N, H, W, O)
    return out + b, ConvCache(cols, W)


def conv_backward(dout, cache, *, need_dx=True):
    """Gradients of :func:`conv_forward`: returns ``(dx, dW, db)``; ``dx`` is ``None``
    without ``need_dx`` (a first layer whose input needs no gradient).

    The input gradient is itself a same-padded convolution.  Pixel ``x[h, w]`` meets
    ``W[i, j]`` in output ``out[h - i + p, w - j + p]``, so

        dx[h, w, c] = sum_{i,j,o} dout[h - i + p, w - j + p, o] W[i, j, c, o];

    substituting ``i -> k - 1 - i`` (and ``k - 1 = 2 p``) turns ``h - i + p`` into
    ``h + i - p``: a convolution of ``dout`` with the kernel flipped in space and its
    channel axes swapped, ``W[k-1-i, k-1-j, o, c]``.

    Returns ``dx`` (N, H, W, C) or ``None``, ``dW`` (k, k, C, O), ``db`` (O,).
    """
    cols, W = cache
    O = W.shape[3]
    d2 = dout.reshape(-1, O)                                          # (N*H*W, O)
    dW = (cols.T @ d2).reshape(W.shape)                               # d out/dW = patches  (k, k, C, O)
    db = d2.sum(axis=0)                                               # d out/db = 1        (O,)
    dx = _correlate(dout, W[::-1, ::-1].transpose(0, 1, 3, 2))[0] if need_dx else None  # adjoint  (N, H, W, C)
    return dx, dW, db


class ShapeCache(NamedTuple):
    """Pooling and upsampling are linear with fixed coefficients: their backward passes need
    nothing from the forward (the shape is kept only so every pair has the same form)."""
    shape: tuple


def _check_even(x, what):
    if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"{what}: x must have shape (N, H, W, C) with H and W even, got {tuple(x.shape)}")


def mean_pool_forward(x):
    """Mean over each 2 x 2 block: ``out[n, h, w] = mean_{a, b in 0, 1} x[n, 2h + a, 2w + b]``.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C), ``H`` and ``W`` even

    Returns
    -------
    out : ndarray of shape (N, H/2, W/2, C)
    cache : ShapeCache
    """
    _check_even(x, "mean pool")
    out = (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 4   # a, b = 0, 1
    return out, ShapeCache(x.shape)


def mean_pool_backward(dout, cache):
    """Gradient of the 2 x 2 mean: each of a block's four pixels gets a quarter.  (N, 2H', 2W', C)
    from ``dout`` (N, H', W', C)."""
    return upsample_forward(dout)[0] / 4                              # d mean/d x = 1/4   (N, H, W, C)


def upsample_forward(x):
    """Nearest-neighbour upsampling by 2: ``out[n, h, w] = x[n, h // 2, w // 2]``.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)

    Returns
    -------
    out : ndarray of shape (N, 2H, 2W, C)
    cache : ShapeCache
    """
    N, H, Wd, C = x.shape
    xp = array_module(x)
    out = xp.broadcast_to(x[:, :, None, :, None], (N, H, 2, Wd, 2, C))   # (N, H, 2, W, 2, C)
    return out.reshape(N, 2 * H, 2 * Wd, C), ShapeCache(x.shape)


def upsample_backward(dout, cache):
    """Gradient of the upsampling: each input pixel collects its 2 x 2 block.  (N, H, W, C)
    from ``dout`` (N, 2H, 2W, C)."""
    return dout[:, 0::2, 0::2] + dout[:, 0::2, 1::2] + dout[:, 1::2, 0::2] + dout[:, 1::2, 1::2]   # (N, H, W, C)
