"""The paper's normalized radial-basis-function layer (App. D.1.1).

Each unit ``j`` is a Gaussian bump around a learned centre ``c_j`` with a
learned width ``s_j = exp(log_width_j)``; the bumps are normalized to sum to
one over the units, so the layer is a softmax of the logits
``l_nj = -||x_n - c_j||^2 / (2 s_j^2)``.
"""
from .backend import array_module


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
