"""The lower bound on the log likelihood, eq. (14) (App. B, eq. 51), per data point, in nats::

    K = - sum_{t=2..T} E_q[ KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) ]
        + H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T).

**Why the sum starts at t = 2.**  The last reverse step is not learned: ``p(x_0 | x_1)``
is the forward kernel reversed under ``pi`` (App. B.2, eq. 44), so its term
``log p(x_0|x_1) - log q(x_1|x_0)`` is ``log pi(x_0) - log pi(x_1)`` (eqs. 45-46) and
contributes no KL.

**What eq. (14) replaces.**  The exact bound keeps ``E_q log pi(x_T) + log pi(x_0) -
E_q log pi(x_1)``; eq. (14) writes the entropy ``-H_p(X_T)`` in their place.  That
holds on average over data with ``E|x_0|^2 = D`` (unit-variance data), not per
example: with ``pi = N(0, I)`` the two differ by ``-(|x_0|^2 - D)(beta_1 + alpha_bar_T) / 2``
per example (``E|x_T|^2 = alpha_bar_T |x_0|^2 + (1 - alpha_bar_T) D`` and
``E|x_1|^2 = alpha_1 |x_0|^2 + beta_1 D``).  Training uses eq. (14), as the paper
does; :func:`bound_all_t` also returns the exact per-example bound ``K_exact``.

Training estimates ``K`` with one frozen ``(t, eps)`` per example and a weight
(``T - 1`` for ``t`` uniform on ``2..T``); the gradient flows to the network
outputs ``z``, to ``x_t`` and to the schedule's tables.  Evaluation sums every
``t`` exactly, Monte Carlo only over ``eps``.  The bound is always float64;
network outputs are cast up and their gradient cast back to the network's dtype.
"""
import math
from typing import NamedTuple

from ..backend import array_module
from .forward import q_posterior_backward, q_posterior_forward, q_sample_forward
from .reverse import p_mean_logvar_backward, p_mean_logvar_forward
from .tables import add_grads

LOG_2PI_E = math.log(2 * math.pi) + 1.0                               # log(2 pi e)


def _unbroadcast(g, shape):
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast."""
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


class KLCache(NamedTuple):
    diff: object                              # (N, D) mu_q - mu_p
    inv_var_p: object                         # (N, D) 1 / sigma_p^2
    ratio: object                             # (N, D) sigma_q^2 / sigma_p^2
    shapes: tuple                             # shapes of mu_q, logvar_q, mu_p, logvar_p (to undo broadcasting)


def kl_forward(mu_q, logvar_q, mu_p, logvar_p):
    """Elementwise ``KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p)))`` in nats, in
    log-variance form: ``(logvar_p - logvar_q + exp(logvar_q - logvar_p) + (mu_q - mu_p)^2 exp(-logvar_p) - 1) / 2``.

    Parameters
    ----------
    mu_q, logvar_q, mu_p, logvar_p : ndarrays broadcastable to shape (N, D)
        ``logvar_q`` is typically (N, 1): the posterior variance is isotropic.

    Returns
    -------
    KL : ndarray of shape (N, D), nats per dimension.
    cache : KLCache
    """
    xp = array_module(mu_q, mu_p)
    diff = mu_q - mu_p                                                  # (N, D)
    inv_var_p = xp.exp(-logvar_p)                                       # 1 / sigma_p^2
    ratio = xp.exp(logvar_q - logvar_p)                                 # sigma_q^2 / sigma_p^2
    KL = 0.5 * (logvar_p - logvar_q + ratio + diff * diff * inv_var_p - 1)
    shapes = (mu_q.shape, logvar_q.shape, mu_p.shape, logvar_p.shape)
    return KL, KLCache(diff, inv_var_p, ratio, shapes)


def kl_backward(dKL, cache):
    """Gradients ``(dmu_q, dlogvar_q, dmu_p, dlogvar_p)``, shaped like the inputs."""
    diff, inv_var_p, ratio, shapes = cache
    dmu_q = dKL * diff * inv_var_p                                      # dKL/dmu_q = (mu_q - mu_p) / sigma_p^2
    dlogvar_q = 0.5 * dKL * (ratio - 1)                                 # dKL/dlogvar_q = (ratio - 1) / 2
    dlogvar_p = 0.5 * (dKL * (1 - ratio) - diff * dmu_q)               # dKL/dlogvar_p = (1 - ratio - diff^2 / sigma_p^2) / 2
    grads = (dmu_q, dlogvar_q, -dmu_q, dlogvar_p)                       # dKL/dmu_p = -dKL/dmu_q
    return tuple(_unbroadcast(g, shape) for g, shape in zip(grads, shapes))


def gaussian_entropy(logvar):
    """Entropy of a 1-D Gaussian with log-variance ``logvar``, ``(log(2 pi e) + logvar) / 2`` nats."""
    return 0.5 * (LOG_2PI_E + logvar)


def standard_normal_logpdf(x):
    """``log pi(x) = log N(x; 0, I)`` per row (``pi`` of Table App.1), nats: ``-(D log(2 pi) + |x|^2) / 2``.  (N, D) -> (N,)."""
    return -0.5 * (x.shape[1] * math.log(2 * math.pi) + (x * x).sum(axis=1))


def entropy_terms(tables, D):
    """The three entropies of eq. (14), nats per data point (summed over ``D``), as floats:
    ``H_q_T = H_q(X_T|X_0) = D/2 log(2 pi e (1 - alpha_bar_T))``,
    ``H_q_1 = H_q(X_1|X_0) = D/2 log(2 pi e beta_1)``, ``H_p_T = H_p(X_T) = D/2 log(2 pi e)``."""
    return {"H_q_T": D * float(gaussian_entropy(tables["log_one_minus_alpha_bar"][-1])),
            "H_q_1": D * float(gaussian_entropy(tables["log_beta"][1])),
            "H_p_T": D * float(gaussian_entropy(0.0))}


def entropy_sum(H):
    """``H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T)``: the last line of eq. (14)."""
    return H["H_q_T"] - H["H_q_1"] - H["H_p_T"]


def _entropy_backward(dloss, D, T, xp):
    """Gradients of the loss ``-K`` with respect to the tables through the entropy terms."""
    dlog_one_minus_alpha_bar, dlog_beta = xp.zeros(T + 1), xp.zeros(T + 1)
    dlog_one_minus_alpha_bar[T] = -dloss * D / 2                         # d(-H_q_T)/d log(1 - alpha_bar_T) = -D/2
    dlog_beta[1] = dloss * D / 2                                         # d(+H_q_1)/d log beta_1 = +D/2
    return {"log_one_minus_alpha_bar": dlog_one_minus_alpha_bar, "log_beta": dlog_beta}


class BoundCache(NamedTuple):
    z_dtype: object                           # the network's dtype, for dz
    N: int
    D: int
    T: int
    weights: object                           # (N,) 1 / P(t_n)
    q_cache: object                           # QPosteriorCache
    p_cache: object                           # ReverseCache
    kl_cache: KLCache


def bound_forward(z, x0, xt, t, weights, tables, *, param):
    """Training loss ``-mean(K_hat)``, nats per data point, from frozen ``t`` and ``x_t``.

    ``K_hat_n = -w_n KL_n(t_n) + H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T)`` is unbiased for
    eq. (14) when ``t_n`` is drawn with probability ``1 / w_n`` (uniform on ``2..T``: ``w = T - 1``).

    Parameters
    ----------
    z : ndarray of shape (N, 2 D), network outputs at ``(xt, t)`` (any float dtype)
    x0, xt : float64 ndarrays of shape (N, D), ``xt`` from :func:`q_sample_forward`
    t : int ndarray of shape (N,), values in ``2..T``
    weights : float64 ndarray of shape (N,)
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward`
    param : one of :data:`reverse.PARAMS` (``'paper'``, ``'reference'``, ``'bounded'``, ``'eps'``)

    Returns
    -------
    loss : float64 0-d array, ``-mean(K_hat)`` in nats.
    cache : BoundCache
    """
    N, D = x0.shape
    (mu_q, logvar_q), q_cache = q_posterior_forward(x0, xt, t, tables)             # (N, D), (N, 1)
    (mu_p, logvar_p), p_cache = p_mean_logvar_forward(z, xt, t, tables, param=param)   # (N, D), (N, D)
    KL, kl_cache = kl_forward(mu_q, logvar_q, mu_p, logvar_p)                       # (N, D) nats
    K_hat = entropy_sum(entropy_terms(tables, D)) - weights * KL.sum(axis=1)        # eq. (14)   (N,)
    T = tables["beta"].shape[0] - 1
    return -K_hat.mean(), BoundCache(z.dtype, N, D, T, weights, q_cache, p_cache, kl_cache)


def bound_backward(dloss, cache):
    """Gradients ``(dz, dxt, dtables)`` of the loss.

    Returns
    -------
    dz : ndarray of shape (N, 2 D) in the dtype of ``z``.
    dxt : float64 ndarray of shape (N, D): the direct part, through the posterior mean
        and the reverse kernel (the network's input gradient is added by the caller).
    dtables : dict of name -> float64 ndarray of shape (T + 1,), through the posterior,
        the reverse kernel and the entropies.
    """
    dKL = (dloss / cache.N) * cache.weights[:, None]                      # d loss / d KL_nd = weight_n / N
    dmu_q, dlogvar_q, dmu_p, dlogvar_p = kl_backward(dKL, cache.kl_cache)
    dxt_q, dtables_q = q_posterior_backward(dmu_q, dlogvar_q, cache.q_cache)
    dz, dxt_p, dtables_p = p_mean_logvar_backward(dmu_p, dlogvar_p, cache.p_cache)
    xp = array_module(dz)
    dtables = add_grads(add_grads(dtables_q, dtables_p), _entropy_backward(dloss, cache.D, cache.T, xp))
    return dz.astype(cache.z_dtype, copy=False), dxt_q + dxt_p, dtables


def bound_all_t(predict, x0, tables, rng, *, param, n_eps=1, chunk=8192):
    """Evaluate eq. (14) on held-out data: every ``t = 2..T`` summed, Monte Carlo over ``eps``.

    Parameters
    ----------
    predict : callable ``(xt (M, D) float64, t (M,) int) -> z (M, 2 D)``
    x0 : float64 ndarray of shape (N, D)
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward`
    rng : numpy.random.Generator; one ``standard_normal`` draw per chunk and ``eps`` round.
    param : one of :data:`reverse.PARAMS` (``'paper'``, ``'reference'``, ``'bounded'``, ``'eps'``)
    n_eps : int, number of noise draws per example and time step.
    chunk : int, rows per network call (examples x time steps); bounds the memory.

    Returns
    -------
    dict with ``K`` (N,), the per-example eq. (14) in nats (mean over the ``eps`` draws);
    ``K_exact`` (N,), the exact per-example bound (module docstring); ``kl_by_t`` (T + 1,),
    the mean KL of each ``t`` in nats (zero at ``t = 0, 1``); and the entropies ``H_q_T``,
    ``H_q_1``, ``H_p_T`` in nats per data point.
    """
    xp = array_module(x0)
    N, D = x0.shape
    T = tables["beta"].shape[0] - 1
    n_ex = max(1, chunk // (T - 1))                                       # examples per chunk
    K, kl_by_t = xp.zeros(N), xp.zeros(T + 1)
    for _ in range(n_eps):
        for start in range(0, N, n_ex):
            KL = _kl_all_t(predict, x0[start:start + n_ex], tables, param, rng)  # (T - 1, m)
            K[start:start + n_ex] -= KL.sum(axis=0)                       # eq. (14), sum over t
            kl_by_t[2:] += KL.sum(axis=1)
    H = entropy_terms(tables, D)
    K = K / n_eps + entropy_sum(H)
    edge = -0.5 * ((x0 * x0).sum(axis=1) - D) * (tables["beta"][1] + tables["alpha_bar"][T])
    return {"K": K, "K_exact": K + edge, "kl_by_t": kl_by_t / (n_eps * N), **H}


def _kl_all_t(predict, x0, tables, param, rng):
    """KL term of every ``t = 2..T`` for each row of ``x0`` (m, D), one fresh ``eps`` each: (T - 1, m)."""
    xp = array_module(x0)
    m, D = x0.shape
    T = tables["beta"].shape[0] - 1
    t = xp.repeat(xp.arange(2, T + 1), m)                                 # time-major rows
    x0 = xp.tile(x0, (T - 1, 1))                                          # ((T - 1) m, D)
    xt, _ = q_sample_forward(x0, t, xp.asarray(rng.standard_normal(x0.shape)), tables)
    (mu_q, logvar_q), _ = q_posterior_forward(x0, xt, t, tables)
    (mu_p, logvar_p), _ = p_mean_logvar_forward(predict(xt, t), xt, t, tables, param=param)
    return kl_forward(mu_q, logvar_q, mu_p, logvar_p)[0].sum(axis=1).reshape(T - 1, m)
