"""Diagonal Gaussians: KL divergence in log-variance form, entropies, log densities.

All quantities are in nats (natural logarithms); divide by ``log 2`` for bits.
Variances enter as log-variances, so no variance is ever exponentiated and then
logged again, and a tiny ``beta_1`` keeps its precision.
"""
import math

from .backend import array_module

LOG_2PI_E = math.log(2 * math.pi) + 1.0                               # log(2 pi e)


def _unbroadcast(g, shape):
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast."""
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def kl_forward(mu_q, logvar_q, mu_p, logvar_p):
    """Elementwise ``KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))`` in nats.

    ``KL = (logvar_p - logvar_q + exp(logvar_q - logvar_p) + (mu_q - mu_p)^2 exp(-logvar_p) - 1) / 2``,
    the SPEC's ``log(s_p/s_q) + (s_q^2 + (mu_q - mu_p)^2)/(2 s_p^2) - 1/2``.

    Parameters
    ----------
    mu_q, logvar_q, mu_p, logvar_p : ndarrays broadcastable to shape (N, D)
        ``logvar_q`` is typically (N, 1): the posterior variance is isotropic.

    Returns
    -------
    KL : ndarray of shape (N, D), nats per dimension.
    cache : tuple for :func:`kl_backward`.
    """
    xp = array_module(mu_q, mu_p)
    diff = mu_q - mu_p                                                  # (N, D)
    inv_var_p = xp.exp(-logvar_p)                                       # 1 / sigma_p^2
    ratio = xp.exp(logvar_q - logvar_p)                                 # sigma_q^2 / sigma_p^2
    KL = 0.5 * (logvar_p - logvar_q + ratio + diff * diff * inv_var_p - 1)
    return KL, (diff, inv_var_p, ratio, logvar_q.shape, logvar_p.shape, mu_q.shape, mu_p.shape)


def kl_backward(dKL, cache):
    """Gradients of the KL: returns ``(dmu_q, dlogvar_q, dmu_p, dlogvar_p)``, shaped like the inputs."""
    diff, inv_var_p, ratio, shape_lq, shape_lp, shape_mq, shape_mp = cache
    dmu_q = dKL * diff * inv_var_p                                      # dKL/dmu_q = (mu_q - mu_p) / s_p^2
    dlogvar_q = 0.5 * dKL * (ratio - 1)                                 # dKL/dlogvar_q = (r - 1) / 2
    dlogvar_p = 0.5 * (dKL * (1 - ratio) - diff * dmu_q)               # dKL/dlogvar_p = (1 - r - d^2/s_p^2)/2
    return (_unbroadcast(dmu_q, shape_mq), _unbroadcast(dlogvar_q, shape_lq),
            _unbroadcast(-dmu_q, shape_mp), _unbroadcast(dlogvar_p, shape_lp))


def gaussian_entropy(logvar):
    """Entropy of a 1-D Gaussian with log-variance ``logvar``, ``(log(2 pi e) + logvar) / 2`` nats."""
    return 0.5 * (LOG_2PI_E + logvar)


def standard_normal_logpdf(x):
    """``log N(x; 0, I)`` per row, nats: ``-(D log(2 pi) + |x|^2) / 2``.  ``x`` (N, D) -> (N,)."""
    return -0.5 * (x.shape[1] * math.log(2 * math.pi) + (x * x).sum(axis=1))
