"""Differentiable layers as pure forward/backward pairs.

Every layer is two functions: ``*_forward(...) -> (out, cache)`` and
``*_backward(dout, cache) -> gradients``.  The cache holds exactly what the
backward pass needs; nothing is stored anywhere else.  Shapes are given at the
end of the line; ``N`` is the batch size.  A layer keeps the dtype it is given.

``ws`` (optional, last) is a :class:`~numpy_diffusion.workspace.Workspace`: the
layer's large outputs are written into its arrays instead of fresh ones, so that
a training loop allocates nothing big after its first step.
"""
from ..backend import array_module
from ..validation import check_choice
from ..workspace import empty


def linear_forward(x, W, b, ws=None):
    """Affine map ``out = x W + b``.

    Parameters
    ----------
    x : ndarray of shape (N, I)
    W : ndarray of shape (I, O)
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, O)
    cache : tuple ``(x, W)``, the two factors the backward pass multiplies.
    """
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0] or b.shape != W.shape[1:]:
        raise ValueError(f"linear layer: x {tuple(x.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)} "
                         "do not fit; need x (N, I), W (I, O), b (O,)")
    xp = array_module(x)
    out = empty(ws, xp, (x.shape[0], W.shape[1]), xp.result_type(x, W))
    xp.matmul(x, W, out=out)                          # (N, O)
    out += b
    return out, (x, W)


def linear_backward(dout, cache, need_dx=True, ws=None):
    """Gradients of the affine map: returns ``(dx, dW, db)``; ``dx`` is ``None``
    when ``need_dx`` is false (a first layer whose input needs no gradient)."""
    x, W = cache
    xp, dx = array_module(dout), None
    if need_dx:
        dx = empty(ws, xp, x.shape, xp.result_type(dout, W))
        xp.matmul(dout, W.T, out=dx)                  # d(xW)/dx = W      (N, I)
    dW = x.T @ dout                                   # d(xW)/dW = x      (I, O)
    db = dout.sum(axis=0)                             # d(b)/db = 1       (O,)
    return dx, dW, db


def tanh_forward(x, ws=None):
    """``tanh(x)``; caches the output, since ``tanh' = 1 - tanh^2``."""
    xp = array_module(x)
    out = xp.tanh(x, out=empty(ws, xp, x.shape, x.dtype))
    return out, out


def tanh_backward(dout, cache, ws=None):
    """``dx = dout * (1 - tanh(x)^2)``."""
    out = cache
    xp = array_module(out)
    dx = xp.multiply(out, out, out=empty(ws, xp, out.shape, out.dtype))
    xp.subtract(1, dx, out=dx)                        # tanh' = 1 - tanh^2, in place
    dx *= dout
    return dx


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for large ``|x|``
    and to full relative precision in both tails."""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))                           # in (0, 1]: never overflows
    return xp.where(x >= 0, 1, e) / (1 + e)          # 1/(1+e^-x) or e^x/(1+e^x)


def sigmoid_forward(x, ws=None):
    """``sigma(x)``; caches the output, since ``sigma' = sigma (1 - sigma)``.
    (``ws`` is accepted for a uniform interface; this layer allocates.)"""
    out = sigmoid(x)
    return out, out


def sigmoid_backward(dout, cache, ws=None):
    """``dx = dout * sigma(x) (1 - sigma(x))``."""
    out = cache
    return dout * out * (1 - out)                     # sigma' = sigma (1 - sigma)


def softplus(x):
    """``log(1 + exp(x))`` computed stably for any ``x``."""
    xp = array_module(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def softplus_forward(x, ws=None):
    """``softplus(x)``; caches ``x``, since ``softplus' = sigma``.  (Allocates; ``ws`` unused.)"""
    return softplus(x), x


def softplus_backward(dout, cache, ws=None):
    """``dx = dout * sigma(x)``."""
    return dout * sigmoid(cache)                      # softplus' = sigma


def leaky_relu_forward(x, ws=None, slope=0.01):
    """``x`` where positive, ``slope * x`` elsewhere; caches the local slope.  (Allocates; ``ws`` unused.)"""
    xp = array_module(x)
    local = xp.where(x > 0, 1, slope).astype(x.dtype)
    return x * local, local


def leaky_relu_backward(dout, cache, ws=None):
    """``dx = dout * (1 if x > 0 else slope)``."""
    return dout * cache                               # piecewise-constant derivative


def fourier_forward(x, B, ws=None):
    """Fourier features ``[x, sin(x B), cos(x B)]`` (Tancik et al. 2020; not in the paper).

    A fixed random ``B`` with large entries gives the network sinusoids of
    short wavelength, which it needs to locate the thin swiss roll to within
    a few thousandths of its scale at small ``t`` (see the README's study).

    Parameters
    ----------
    x : ndarray of shape (N, D)
    B : ndarray of shape (D, F)
        Frequencies (radians per unit of ``x``).

    Returns
    -------
    out : ndarray of shape (N, D + 2 F)
    cache : tuple ``(x, B, sin, cos)``.
    """
    if x.ndim != 2 or B.ndim != 2 or x.shape[1] != B.shape[0]:
        raise ValueError(f"fourier layer: x {tuple(x.shape)} and B {tuple(B.shape)} do not fit; "
                         "need x (N, D), B (D, F)")
    xp = array_module(x)
    D, F = B.shape
    dtype = xp.result_type(x, B)
    z = xp.matmul(x, B, out=empty(ws, xp, (x.shape[0], F), dtype))           # (N, F)
    out = empty(ws, xp, (x.shape[0], D + 2 * F), dtype)
    out[:, :D] = x
    s, c = xp.sin(z, out=out[:, D:D + F]), xp.cos(z, out=out[:, D + F:])   # written in place
    return out, (x, B, s, c)


def fourier_backward(dout, cache, ws=None, need_dB=True):
    """Gradients of the Fourier features: returns ``(dx, dB)``; ``dB`` is ``None`` when
    ``need_dB`` is false (fixed frequencies)."""
    x, B, s, c = cache
    D, F = B.shape
    xp = array_module(dout)
    dz = xp.multiply(dout[:, D:D + F], c, out=empty(ws, xp, c.shape, c.dtype))    # sin' = cos
    dz -= xp.multiply(dout[:, D + F:], s, out=empty(ws, xp, s.shape, s.dtype))   # cos' = -sin  (N, F)
    dx = dout[:, :D] + dz @ B.T                        # identity part + d(xB)/dx = B
    dB = x.T @ dz if need_dB else None                 # d(xB)/dB = x              (D, F)
    return dx, dB


def rbf_forward(x, centres, log_width):
    """Normalized Gaussian bumps.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    centres : ndarray of shape (H, D)
        Bump centres ``c_j``.
    log_width : ndarray of shape (H,)
        ``log s_j``, so the widths stay positive.

    Returns
    -------
    out : ndarray of shape (N, H), rows summing to one.
    cache : tuple ``(x, centres, inv_var, logits, out)``.
    """
    if x.ndim != 2 or centres.ndim != 2 or x.shape[1] != centres.shape[1] \
            or log_width.shape != centres.shape[:1]:
        raise ValueError(f"rbf layer: x {tuple(x.shape)}, centres {tuple(centres.shape)}, "
                         f"log_width {tuple(log_width.shape)} do not fit; "
                         "need x (N, D), centres (H, D), log_width (H,)")
    xp = array_module(x)
    inv_var = xp.exp(-2 * log_width)                                  # 1 / s_j^2      (H,)
    diff = x[:, None, :] - centres[None, :, :]                        # x_n - c_j      (N, H, D)
    logits = -0.5 * (diff * diff).sum(2) * inv_var                    # (N, H)
    out = xp.exp(logits - logits.max(axis=1, keepdims=True))
    out /= out.sum(axis=1, keepdims=True)                             # softmax over j
    return out, (x, centres, inv_var, logits, out)


def rbf_backward(dout, cache):
    """Gradients of the normalized bumps: returns ``(dx, dcentres, dlog_width)``."""
    x, centres, inv_var, logits, out = cache
    dlogits = out * (dout - (dout * out).sum(1, keepdims=True))       # softmax Jacobian     (N, H)
    a = dlogits * inv_var                                             # dl/dx = -(x - c)/s^2 (N, H)
    dx = a @ centres - x * a.sum(1, keepdims=True)                    # (N, D)
    dcentres = a.T @ x - centres * a.sum(0)[:, None]                  # dl/dc = (x - c)/s^2  (H, D)
    dlog_width = (dlogits * (-2 * logits)).sum(0)                     # dl/dlog s = -2 l     (H,)
    return dx, dcentres, dlog_width


ACTIVATIONS = {
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
}


def activation(name):
    """The ``(forward, backward)`` pair of a named activation, or a clear error."""
    check_choice("activation", name, sorted(ACTIVATIONS))
    return ACTIVATIONS[name]
