"""Self-attention over the pixels of an image, as forward/backward pairs (not in the paper).

:func:`attention_forward` is single-head dot-product attention (Vaswani et al. 2017)
over the ``H W`` positions of each image; :func:`attention_block_forward` is the
U-Net's residual attention block, ``x + attention(GN(x))`` (DDPM, Ho et al. 2020).
A convolution sees a ``k x k`` neighbourhood; attention lets every pixel read every
other, which the U-Net uses once, at its coarsest resolution, where it is cheap.
"""
import math
from typing import NamedTuple

from ..backend import array_module
from .blocks import group_norm_backward, group_norm_forward


class AttentionCache(NamedTuple):
    """What the backward multiplies by: the input, the maps, and every intermediate product."""
    x: object          # (N, P, C) the pixels as rows, for dWqkv
    Wqkv: object       # (C, 3 d), for dx
    q: object          # (N, P, d)
    k: object          # (N, P, d)
    v: object          # (N, P, d)
    A: object          # (N, P, P) the attention weights
    o: object          # (N, P, d), for dWo
    Wo: object         # (d, C), for do
    shape: tuple       # (N, H, W, C)


def _softmax(S):
    """Softmax over the last axis; the row maximum is subtracted first (the softmax does
    not change when a row is shifted), so no ``exp`` overflows."""
    e = array_module(S).exp(S - S.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention_forward(x, Wqkv, bqkv, Wo, bo):
    """Single-head self-attention over the ``P = H W`` pixels of each image.

    Per image, the pixels as the rows of ``x`` (P, C):

        [q, k, v] = x Wqkv + bqkv            three per-pixel linear maps     (P, d) each
        S = q k^T / sqrt(d)                  S_ij: how well pixel i's query matches j's key  (P, P)
        A_ij = exp(S_ij) / sum_l exp(S_il)   softmax over j: each row sums to one
        o = A v                              each pixel's A-weighted average of the values  (P, d)
        out = o Wo + bo                                                      (P, C)

    Backward, step by step from ``dout``:

        dWo = o^T dout,  dbo = sum_i dout_i,  do = dout Wo^T       the affine map
        dA = do v^T,  dv = A^T do                                  o = A v, a product
        dS = A * (dA - sum_j dA_ij A_ij)                           the softmax, row by row
        dq = dS k / sqrt(d),  dk = dS^T q / sqrt(d)                S = q k^T / sqrt(d)
        dWqkv = x^T [dq, dk, dv],  dbqkv = sum_i [dq, dk, dv]_i,  dx = [dq, dk, dv] Wqkv^T.

    The softmax's Jacobian, for one row ``a = softmax(s)``: ``d a_i / d s_j = a_i (delta_ij - a_j)``,
    so ``ds_j = sum_i da_i a_i (delta_ij - a_j) = a_j (da_j - sum_i da_i a_i)``: the upstream
    gradient less its ``a``-weighted mean, times ``a``.

    Two biases do nothing: the key's adds ``q_i . b_k`` to the whole row ``S_i.``, which the
    softmax removes (its gradient is zero); the value's adds ``b_v`` to every ``o_i`` (the rows
    of ``A`` sum to one), the same as changing ``bo``.  They stay, for one plain per-pixel map.

    Parameters
    ----------
    x : ndarray of shape (N, H, W, C)
    Wqkv : ndarray of shape (C, 3 d), the query, key and value maps side by side
    bqkv : ndarray of shape (3 d,)
    Wo : ndarray of shape (d, C)
    bo : ndarray of shape (C,)

    Returns
    -------
    out : ndarray of shape (N, H, W, C)
    cache : AttentionCache
    """
    d = Wo.shape[0] if Wo.ndim == 2 else 0
    if x.ndim != 4 or Wqkv.shape != (x.shape[3], 3 * d) or bqkv.shape != (3 * d,) or Wo.shape != (d, x.shape[3]) \
            or bo.shape != x.shape[3:]:
        raise ValueError(f"attention: x {tuple(x.shape)}, Wqkv {tuple(Wqkv.shape)}, bqkv {tuple(bqkv.shape)}, "
                         f"Wo {tuple(Wo.shape)}, bo {tuple(bo.shape)} do not fit; need x (N, H, W, C), "
                         "Wqkv (C, 3 d), bqkv (3 d,), Wo (d, C), bo (C,)")
    N, H, Wd, C = x.shape
    xs = x.reshape(N, H * Wd, C)                                      # pixels as rows  (N, P, C)
    qkv = xs @ Wqkv + bqkv                                            # (N, P, 3 d)
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]       # (N, P, d) each
    A = _softmax(q @ k.transpose(0, 2, 1) / math.sqrt(d))             # softmax_j(q_i . k_j / sqrt(d))  (N, P, P)
    o = A @ v                                                         # (N, P, d)
    out = o @ Wo + bo                                                 # (N, P, C)
    return out.reshape(x.shape), AttentionCache(xs, Wqkv, q, k, v, A, o, Wo, x.shape)


def attention_backward(dout, cache):
    """Gradients of :func:`attention_forward` (derived in its docstring): ``(dx, dWqkv, dbqkv,
    dWo, dbo)``, shaped like ``x`` (N, H, W, C), ``Wqkv`` (C, 3 d), ``bqkv``, ``Wo`` (d, C), ``bo``."""
    xs, Wqkv, q, k, v, A, o, Wo, shape = cache
    xp, (N, P, C), d = array_module(dout), xs.shape, Wo.shape[0]
    dout = dout.reshape(N, P, C)                                      # (N, P, C)
    dWo = o.reshape(-1, d).T @ dout.reshape(-1, C)                    # d out/d Wo = o        (d, C)
    dbo = dout.sum(axis=(0, 1))                                       # d out/d bo = 1        (C,)
    do = dout @ Wo.T                                                  # d out/d o = Wo        (N, P, d)
    dA = do @ v.transpose(0, 2, 1)                                    # d o/d A = v           (N, P, P)
    dv = A.transpose(0, 2, 1) @ do                                    # d o/d v = A           (N, P, d)
    dS = A * (dA - (dA * A).sum(axis=2, keepdims=True))               # d A_ij/d S_il = A_ij (delta_jl - A_il)
    dq = dS @ k / math.sqrt(d)                                        # d S/d q = k / sqrt(d) (N, P, d)
    dk = dS.transpose(0, 2, 1) @ q / math.sqrt(d)                     # d S/d k = q / sqrt(d) (N, P, d)
    dqkv = xp.concatenate([dq, dk, dv], axis=2)                       # (N, P, 3 d)
    dWqkv = xs.reshape(-1, C).T @ dqkv.reshape(-1, 3 * d)             # d qkv/d Wqkv = x      (C, 3 d)
    dbqkv = dqkv.sum(axis=(0, 1))                                     # d qkv/d bqkv = 1      (3 d,)
    dx = (dqkv @ Wqkv.T).reshape(shape)                               # d qkv/d x = Wqkv      (N, H, W, C)
    return dx, dWqkv, dbqkv, dWo, dbo


class AttentionBlockCache(NamedTuple):
    norm: object       # GroupNormCache
    attn: AttentionCache
    prefix: str


def attention_block_forward(x, params, prefix, *, groups):
    """The residual attention block: ``out = x + attention(GN(x))``.

    Its parameters are ``{prefix}`` + ``norm.g``, ``norm.b`` (C,), ``qkv.W`` (C, 3 C), ``qkv.b``,
    ``out.W`` (C, C), ``out.b`` (:func:`attention_forward` with ``d = C``).  With ``out.W`` and
    ``out.b`` at zero (their initialization) the block is the identity.

    Returns ``out`` (N, H, W, C) and an :class:`AttentionBlockCache`.
    """
    h, norm = group_norm_forward(x, params[f"{prefix}norm.g"], params[f"{prefix}norm.b"], groups=groups)
    a, attn = attention_forward(h, params[f"{prefix}qkv.W"], params[f"{prefix}qkv.b"],
                                params[f"{prefix}out.W"], params[f"{prefix}out.b"])   # (N, H, W, C)
    return x + a, AttentionBlockCache(norm, attn, prefix)


def attention_block_backward(dout, cache):
    """Gradients of :func:`attention_block_forward`: ``(dx, grads)``, ``dx`` (N, H, W, C) and
    ``grads`` keyed like the block's parameters."""
    p, grads = cache.prefix, {}
    dh, grads[f"{p}qkv.W"], grads[f"{p}qkv.b"], grads[f"{p}out.W"], grads[f"{p}out.b"] = attention_backward(
        dout, cache.attn)                                             # d out/d a = 1
    dx, grads[f"{p}norm.g"], grads[f"{p}norm.b"] = group_norm_backward(dh, cache.norm)
    return dout + dx, grads                                           # d out/d x = 1 + d a/d x
