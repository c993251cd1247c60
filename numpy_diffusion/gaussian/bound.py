"""The lower bound on the log likelihood, eq. (14) (App. B, eq. 51), per example, in nats:

    K = - sum_{t=2..T} E_q[ KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) ]
        + H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T).

Training estimates it with one frozen ``(t, eps)`` per example and a weight
(``T - 1`` for ``t`` uniform on ``2..T``); its gradient flows to the network
outputs ``z``, to ``x_t`` and to the schedule.  Evaluation sums every ``t``
exactly, Monte Carlo only over ``eps``.  The bound is always float64; network
outputs are cast up and their gradient cast back to the network's dtype.
"""
import math

from ..backend import array_module
from .forward import q_posterior, q_posterior_backward, q_sample, q_sample_backward
from .reverse import p_mean_logvar, p_mean_logvar_backward
from .tables import add_grads, scatter_by_t


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


def entropy_terms(tables, D):
    """The three entropies of eq. (14) per data point (summed over ``D``), nats, as floats.

    ``H_q(X_T|X_0) = D/2 log(2 pi e (1 - alpha_bar_T))``, ``H_q(X_1|X_0) = D/2 log(2 pi e beta_1)``,
    ``H_p(X_T) = D/2 log(2 pi e)``.
    """
    return {"H_q_T": D * float(gaussian_entropy(tables["log_one_minus_alpha_bar"][-1])),
            "H_q_1": D * float(gaussian_entropy(tables["log_beta"][1])),
            "H_p_T": D * float(gaussian_entropy(0.0))}


def _entropy_sum(H):
    return H["H_q_T"] - H["H_q_1"] - H["H_p_T"]                           # eq. (14), last three terms


def bound_forward(z, x0, xt, t, eps, weights, tables, param):
    """Training loss ``-mean(K_hat)``, nats per data point, from frozen ``t`` and ``eps``.

    ``K_hat_n = -w_n KL_n(t_n) + H_q(X_T|X_0) - H_q(X_1|X_0) - H_p(X_T)`` is unbiased for
    ``K`` when ``t_n`` is drawn with probability ``1 / w_n`` (uniform on ``2..T``: ``w = T - 1``).

    Parameters
    ----------
    z : ndarray of shape (N, 2 D), network outputs at ``(xt, t)`` (any float dtype)
    x0, xt, eps : float64 ndarrays of shape (N, D), ``xt = q_sample(x0, t, eps, tables)``
    t : int ndarray of shape (N,), values in ``2..T``
    weights : float64 ndarray of shape (N,)
    tables : dict from :func:`numpy_diffusion.tables.make_tables`
    param : ``'paper'``, ``'reference'`` or ``'bounded'``

    Returns
    -------
    loss : float64 0-d array, ``-mean(K_hat)`` in nats.
    cache : tuple for :func:`bound_backward` and :func:`bound_xt_backward`.
    """
    mu_q, logvar_q = q_posterior(x0, xt, t, tables)                        # (N, D), (N, 1)
    mu_p, logvar_p, p_cache = p_mean_logvar(z, xt, t, tables, param)      # (N, D), (N, D)
    KL, kl_cache = kl_forward(mu_q, logvar_q, mu_p, logvar_p)             # (N, D) nats
    K_hat = _entropy_sum(entropy_terms(tables, x0.shape[1])) - weights * KL.sum(axis=1)  # eq. (14)
    return -K_hat.mean(), (z.dtype, x0, xt, t, eps, weights, tables, p_cache, kl_cache)


def bound_backward(dloss, cache):
    """Gradients of the loss, except through the network's input (the caller adds that).

    Returns
    -------
    dz : ndarray of shape (N, 2 D) in the dtype of ``z``.
    dxt : float64 ndarray of shape (N, D), the direct part (posterior mean and reverse kernel).
    dtables : dict of name -> float64 ndarray of shape (T + 1,), gradients with respect to
        the tables through the posterior, the reverse kernel and the entropies (not ``x_t``).
    """
    z_dtype, x0, xt, t, eps, weights, tables, p_cache, kl_cache = cache
    N, D = x0.shape
    T = tables["beta"].shape[0] - 1
    dKL = (dloss / N) * weights[:, None]                                  # dloss/dKL_nd = w_n / N
    dmu_q, dlogvar_q, dmu_p, dlogvar_p = kl_backward(dKL, kl_cache)
    dxt_q, dcoef_q = q_posterior_backward(dmu_q, dlogvar_q, x0, xt, t, tables)
    dz, dxt_p, dcoef_p = p_mean_logvar_backward(dmu_p, dlogvar_p, p_cache)
    dtables = add_grads(scatter_by_t(t, dcoef_q, T), scatter_by_t(t, dcoef_p, T))
    dtables = add_grads(dtables, _entropy_backward(dloss, D, T, array_module(xt)))
    return dz.astype(z_dtype, copy=False), dxt_q + dxt_p, dtables


def bound_xt_backward(dxt, cache):
    """Gradients with respect to the tables through ``x_t = q_sample(x0, t, eps)``.

    ``dxt`` (N, D) is the total gradient at ``x_t``: the direct part from
    :func:`bound_backward` plus the network's input gradient.  Returns a dict of
    (T + 1,) arrays to merge with ``bound_backward``'s ``dtables``.
    """
    _, x0, _, t, eps, _, tables, _, _ = cache
    return scatter_by_t(t, q_sample_backward(dxt, x0, eps), tables["beta"].shape[0] - 1)


def _entropy_backward(dloss, D, T, xp):
    """Gradients of the loss with respect to the tables through the entropy terms."""
    dlog_omab, dlog_beta = xp.zeros(T + 1), xp.zeros(T + 1)
    dlog_omab[T] = -dloss * D / 2                                         # dloss/dlog(1 - alpha_bar_T) = -D/2
    dlog_beta[1] = dloss * D / 2                                          # dloss/dlog beta_1 = +D/2
    return {"log_one_minus_alpha_bar": dlog_omab, "log_beta": dlog_beta}


def bound_exact(predict, x0, tables, param, rng, n_eps=1, chunk=8192):
    """Evaluate eq. (14) on held-out data: every ``t = 2..T`` summed, Monte Carlo over ``eps``.

    Parameters
    ----------
    predict : callable ``(xt (M, D) float64, t (M,) int) -> z (M, 2 D)``
    x0 : float64 ndarray of shape (N, D)
    tables : dict from :func:`numpy_diffusion.tables.make_tables`
    param : str
    rng : numpy.random.Generator; one ``standard_normal`` draw per chunk and ``eps`` round.
    n_eps : int, number of noise draws per example and time step.
    chunk : int, rows per network call (examples x time steps); bounds the memory.

    Returns
    -------
    dict with ``K`` (N,) per-example bound in nats (mean over the ``eps`` draws),
    ``kl_by_t`` (T + 1,) mean KL of each ``t`` in nats (zero at ``t = 0, 1``),
    and the entropies ``H_q_T``, ``H_q_1``, ``H_p_T`` in nats per data point.
    """
    xp = array_module(x0)
    N, D = x0.shape
    T = tables["beta"].shape[0] - 1
    n_ex = max(1, chunk // (T - 1))                                       # examples per chunk
    K = xp.zeros(N)
    kl_by_t = xp.zeros(T + 1)
    for _ in range(n_eps):
        for start in range(0, N, n_ex):
            KL = _kl_all_t(predict, x0[start:start + n_ex], tables, param, rng)  # (T - 1, m)
            K[start:start + n_ex] -= KL.sum(axis=0)                       # eq. (14), sum over t
            kl_by_t[2:] += KL.sum(axis=1)
    H = entropy_terms(tables, D)
    out = {"K": K / n_eps + _entropy_sum(H), "kl_by_t": kl_by_t / (n_eps * N)}
    out.update(H)
    return out


def _kl_all_t(predict, x0, tables, param, rng):
    """KL term of every ``t = 2..T`` for each row of ``x0`` (m, D), one fresh ``eps`` each: (T - 1, m)."""
    xp = array_module(x0)
    m, D = x0.shape
    T = tables["beta"].shape[0] - 1
    t = xp.repeat(xp.arange(2, T + 1), m)                                 # time-major rows
    x0 = xp.tile(x0, (T - 1, 1))                                          # ((T - 1) m, D)
    eps = xp.asarray(rng.standard_normal(x0.shape))
    xt = q_sample(x0, t, eps, tables)
    mu_q, logvar_q = q_posterior(x0, xt, t, tables)
    mu_p, logvar_p, _ = p_mean_logvar(predict(xt, t), xt, t, tables, param)
    return kl_forward(mu_q, logvar_q, mu_p, logvar_p)[0].sum(axis=1).reshape(T - 1, m)
