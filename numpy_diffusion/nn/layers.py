"""Differentiable layers as pure forward/backward pairs (the network kit).

Every layer is two functions, as in CS231n's ``layers.py``::

    out, cache = thing_forward(inputs...)
    grads = thing_backward(dout, cache)

The cache is a named tuple holding exactly what the backward pass needs;
``grads`` are the gradients of the forward's differentiable inputs, in their
order (one array for a one-input layer).  Shapes are given at the end of the
line; ``N`` is the batch size.  A layer keeps the dtype it is given.

The layers: the affine map, five activations, the random Fourier features
that feed the swiss-roll network, and the paper's normalized radial-basis-function
layer (App. D.1.1).
"""
from typing import NamedTuple

from ..backend import array_module
from ..validation import check_choice


class LinearCache(NamedTuple):
    x: object                                 # (N, I) input, for dW = x^T dout
    W: object                                 # (I, O) weights, for dx = dout W^T


def linear_forward(x, W, b):
    """Affine map ``out = x W + b``.

    Parameters
    ----------
    x : ndarray of shape (N, I)
    W : ndarray of shape (I, O)
    b : ndarray of shape (O,)

    Returns
    -------
    out : ndarray of shape (N, O)
    cache : LinearCache
    """
    if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0] or b.shape != W.shape[1:]:
        raise ValueError(f"linear layer: x {tuple(x.shape)}, W {tuple(W.shape)}, b {tuple(b.shape)} "
                         "do not fit; need x (N, I), W (I, O), b (O,)")
    out = x @ W + b                                   # (N, O)
    return out, LinearCache(x, W)


def linear_backward(dout, cache, *, need_dx=True):
    """Gradients ``(dx, dW, db)`` of the affine map.  With ``need_dx=False`` (a first
    layer whose input needs no gradient) ``dx`` is ``None`` and its product is skipped."""
    x, W = cache
    dx = dout @ W.T if need_dx else None              # d(xW)/dx = W        (N, I)
    dW = x.T @ dout                                   # d(xW)/dW = x        (I, O)
    db = dout.sum(axis=0)                             # d(b)/db = 1         (O,)
    return dx, dW, db


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for large ``|x|``
    and to full relative precision in both tails."""
    xp = array_module(x)
    e = xp.exp(-xp.abs(x))                           # in (0, 1]: never overflows
    return xp.where(x >= 0, 1, e) / (1 + e)          # 1/(1+e^-x) or e^x/(1+e^x)


def softplus(x):
    """``log(1 + exp(x))`` (the paper's "soft relu", App. D.2.1) computed stably for any ``x``."""
    xp = array_module(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


class OutputCache(NamedTuple):
    out: object                               # the output, shaped like the input: the derivative is a function of it


class SiLUCache(NamedTuple):
    x: object                                 # (N, H) the activation's input
    sig: object                               # (N, H) sigma(x), the gate


class SlopeCache(NamedTuple):
    slope: object                             # (N, H) the local slope, 1 or the leak


def tanh_forward(x):
    """``tanh(x)``; caches the output, since ``tanh' = 1 - tanh^2``."""
    out = array_module(x).tanh(x)
    return out, OutputCache(out)


def tanh_backward(dout, cache):
    """``dx = dout (1 - tanh(x)^2)``."""
    out = cache.out
    return dout * (1 - out * out)                     # tanh' = 1 - tanh^2


def sigmoid_forward(x):
    """``sigma(x)``; caches the output, since ``sigma' = sigma (1 - sigma)``."""
    out = sigmoid(x)
    return out, OutputCache(out)


def sigmoid_backward(dout, cache):
    """``dx = dout sigma(x) (1 - sigma(x))``."""
    out = cache.out
    return dout * out * (1 - out)                     # sigma' = sigma (1 - sigma)


def softplus_forward(x):
    """``s = softplus(x)``; caches the output, since ``softplus'(x) = sigma(x) = 1 - exp(-s)``
    (``exp(-s) = 1 / (1 + e^x)``)."""
    out = softplus(x)
    return out, OutputCache(out)


def softplus_backward(dout, cache):
    """``dx = dout (1 - exp(-s))``, computed as ``-expm1(-s)``: full precision where ``s`` is tiny."""
    return dout * -array_module(dout).expm1(-cache.out)   # softplus' = sigma = 1 - e^-s


def silu_forward(x):
    """SiLU (the "swish", Elfwing et al. 2018) ``x sigma(x)``; caches ``x`` and ``sigma(x)``,
    since ``d/dx [x sigma(x)] = sigma + x sigma (1 - sigma)``."""
    sig = sigmoid(x)
    return x * sig, SiLUCache(x, sig)


def silu_backward(dout, cache):
    """``dx = dout sigma(x) (1 + x (1 - sigma(x)))``."""
    x, sig = cache
    return dout * sig * (1 + x * (1 - sig))           # silu' = sigma + x sigma (1 - sigma)


def leaky_relu_forward(x, *, slope=0.01):
    """``x`` where positive, ``slope x`` elsewhere; caches the local slope."""
    xp = array_module(x)
    local_slope = xp.where(x > 0, 1, slope).astype(x.dtype)
    return x * local_slope, SlopeCache(local_slope)


def leaky_relu_backward(dout, cache):
    """``dx = dout (1 if x > 0 else slope)``."""
    return dout * cache.slope                         # piecewise-constant derivative


ACTIVATIONS = {
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "silu": (silu_forward, silu_backward),
}


def activation(name):
    """The ``(forward, backward)`` pair of a named activation, or a clear error."""
    check_choice("activation", name, sorted(ACTIVATIONS))
    return ACTIVATIONS[name]


class FourierCache(NamedTuple):
    x: object                                 # (N, D) input, for dB = x^T dz
    B: object                                 # (D, F) frequencies, for dx = dz B^T
    sin: object                               # (N, F) sin(x B), the derivative of cos
    cos: object                               # (N, F) cos(x B), the derivative of sin


def fourier_forward(x, B):
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
    cache : FourierCache
    """
    if x.ndim != 2 or B.ndim != 2 or x.shape[1] != B.shape[0]:
        raise ValueError(f"fourier layer: x {tuple(x.shape)} and B {tuple(B.shape)} do not fit; "
                         "need x (N, D), B (D, F)")
    xp = array_module(x)
    z = x @ B                                                         # (N, F)
    s, c = xp.sin(z), xp.cos(z)                                       # (N, F), (N, F)
    return xp.concatenate([x, s, c], axis=1), FourierCache(x, B, s, c)   # (N, D + 2F)


def fourier_backward(dout, cache, *, need_dB=True):
    """Gradients ``(dx, dB)`` of the Fourier features.  With ``need_dB=False`` (fixed
    frequencies) ``dB`` is ``None`` and its product is skipped."""
    x, B, s, c = cache
    D, F = B.shape
    dz = dout[:, D:D + F] * c - dout[:, D + F:] * s                  # sin' = cos, cos' = -sin   (N, F)
    dx = dout[:, :D] + dz @ B.T                                       # identity part + d(xB)/dx = B
    dB = x.T @ dz if need_dB else None                                # d(xB)/dB = x             (D, F)
    return dx, dB


class RBFCache(NamedTuple):
    x: object                                 # (N, D) inputs
    centres: object                           # (H, D) bump centres c_j
    inv_var: object                           # (H,) 1 / s_j^2
    logits: object                            # (N, H) -|x - c_j|^2 / (2 s_j^2)
    out: object                               # (N, H) the normalized bumps (softmax of the logits)


def rbf_forward(x, centres, log_width):
    """The paper's normalized radial-basis-function layer (App. D.1.1).

    Unit ``j`` is a Gaussian bump around a learned centre ``c_j`` with a learned
    width ``s_j = exp(log_width_j)``; the bumps are normalized to sum to one over
    the units, so the layer is a softmax of ``l_nj = -|x_n - c_j|^2 / (2 s_j^2)``.

    Parameters
    ----------
    x : ndarray of shape (N, D)
    centres : ndarray of shape (H, D)
    log_width : ndarray of shape (H,), ``log s_j`` (so widths stay positive)

    Returns
    -------
    out : ndarray of shape (N, H), rows summing to one.
    cache : RBFCache
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
    e = xp.exp(logits - logits.max(axis=1, keepdims=True))
    out = e / e.sum(axis=1, keepdims=True)                            # softmax over j (N, H)
    return out, RBFCache(x, centres, inv_var, logits, out)


def rbf_backward(dout, cache):
    """Gradients ``(dx, dcentres, dlog_width)`` of the normalized bumps."""
    x, centres, inv_var, logits, out = cache
    dlogits = out * (dout - (dout * out).sum(1, keepdims=True))       # softmax Jacobian     (N, H)
    dl_scaled = dlogits * inv_var                                     # dlogits / s_j^2       (N, H)
    dx = dl_scaled @ centres - x * dl_scaled.sum(1, keepdims=True)    # dl/dx = -(x - c)/s^2  (N, D)
    dcentres = dl_scaled.T @ x - centres * dl_scaled.sum(0)[:, None]  # dl/dc = (x - c)/s^2   (H, D)
    dlog_width = (dlogits * (-2 * logits)).sum(0)                     # dl/dlog s = -2 l     (H,)
    return dx, dcentres, dlog_width
