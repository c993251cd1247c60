"""How loose is the bound?  An importance-weighted estimate of ``log p(x_0)`` (Burda et al. 2016).

§2.3 writes the model's probability as an average over forward trajectories::

    p(x_0) = E_{q(x_{1:T} | x_0)} [ w ],     w = p(x_{0:T}) / q(x_{1:T} | x_0)
           = pi(x_T) prod_{t=1..T} p(x_{t-1} | x_t) / q(x_t | x_{t-1}),

with ``x_{1:T}`` drawn one step at a time from the forward kernel
``q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)`` (eq. 2), ``pi = N(0, I)``
(eq. 4), the learned reverse kernel for ``t = 2..T`` (eq. 5) and the fixed last step
``p(x_0 | x_1) = N(sqrt(alpha_1) x_1, beta_1 I)`` (App. B.2, eq. 44).

The bound is ``E_q log w``: by Jensen's inequality at most ``log p(x_0)``, and per
example it is the exact bound ``K_exact`` of :func:`bound.bound_all_t` (whose mean
over unit-variance data is eq. (14)'s ``K``).  Averaging ``k`` weights inside the log,

    L_k(x_0) = log (1/k) sum_{i=1..k} w_i,       x_{1:T}^(i) ~ q(. | x_0) independently,

gives an estimate whose expectation is again a lower bound on ``log p(x_0)``, rises
with ``k`` and tends to ``log p(x_0)`` as ``k`` grows (Burda, Grosse & Salakhutdinov
2016, Theorem 1).  ``L_1`` is an unbiased estimate of ``K_exact``; the rise from
``L_1`` to ``L_k`` is what the variational bound leaves on the table.

Everything is in nats and float64; network outputs are cast up.
"""
import math

from ..backend import array_module, to_device, to_host
from ..validation import check_array, check_positive_int
from .bound import standard_normal_logpdf
from .reverse import p_mean_logvar_forward


def gaussian_logpdf(x, mu, logvar):
    """``log N(x; mu, diag exp(logvar))`` per row, nats: (N, D) -> (N,); ``logvar`` broadcasts."""
    d = x - mu
    return -0.5 * (d * d * array_module(x).exp(-logvar) + logvar + math.log(2 * math.pi)).sum(axis=1)


def log_weights(predict, x0, tables, param, rng):
    """``log w = log p(x_{0:T}) - log q(x_{1:T} | x_0)`` of one forward trajectory per row of ``x0``.

    Parameters
    ----------
    predict : callable ``(xt (N, D) float64, t (N,) int) -> z (N, 2 D)``, the network.
    x0 : float64 ndarray of shape (N, D)
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward`
    param : one of :data:`reverse.PARAMS` (``'paper'``, ``'reference'``, ``'bounded'``, ``'eps'``)
    rng : numpy.random.Generator; one ``standard_normal((N, D))`` per step ``t = 1..T``,
        in that order, moved to the backend of ``x0``.

    Returns
    -------
    log_w : float64 ndarray of shape (N,), nats.
    """
    xp = array_module(x0)
    N, D = x0.shape
    T = tables["beta"].shape[0] - 1
    log_w, x_prev = xp.zeros(N), x0
    for t in range(1, T + 1):
        eps = xp.asarray(rng.standard_normal((N, D)))
        x = tables["sqrt_alpha"][t] * x_prev + tables["sqrt_beta"][t] * eps           # x_t ~ q(. | x_{t-1}), eq. (2)
        log_w -= gaussian_logpdf(eps, 0.0, 0.0) - 0.5 * D * tables["log_beta"][t]     # log q(x_t | x_{t-1})
        if t == 1:                                                                     # App. B.2, eq. (44)
            mu_p, logvar_p = tables["sqrt_alpha"][1] * x, tables["log_beta"][1]
        else:                                                                          # eq. (5)
            tt = xp.full(N, t, dtype=xp.int64)
            (mu_p, logvar_p), _ = p_mean_logvar_forward(predict(x, tt), x, tt, tables, param=param)
        log_w += gaussian_logpdf(x_prev, mu_p, logvar_p)                               # log p(x_{t-1} | x_t)
        x_prev = x
    return log_w + standard_normal_logpdf(x_prev)                                      # log pi(x_T), eq. (4)


def log_mean_exp(a, axis=0):
    """``log mean exp(a)`` along ``axis``, without overflow."""
    xp = array_module(a)
    top = a.max(axis=axis, keepdims=True)
    return (top + xp.log(xp.exp(a - top).mean(axis=axis, keepdims=True))).squeeze(axis)


def trajectory_log_weights(model, params, x0, rng, k, chunk=8192):
    """``log w`` of ``k`` independent forward trajectories from each point: host float64 (k, N), nats.

    Parameters
    ----------
    model : a Gaussian diffusion with ``D``, ``predict(params)``, ``tables(params)`` and ``cfg.param``
        (:class:`~numpy_diffusion.gaussian.model.GaussianDiffusion`).
    params : mapping name -> ndarray
    x0 : ndarray of shape (N, D)
    rng : numpy.random.Generator; see :func:`log_weights` (one call per chunk of trajectories).
    k : int, trajectories per point.
    chunk : int, trajectories per network call; bounds the memory.
    """
    k, chunk = check_positive_int("k", k), check_positive_int("chunk", chunk)
    xp = model.backend(params)[0]
    check_array("x0", x0, shape=(None, model.D))
    x0 = to_device(x0, xp).astype(xp.float64, copy=False)
    predict, tables = model.predict(params), model.tables(params)
    rows = xp.tile(x0, (k, 1))                                                         # (k N, D), trajectory-major
    log_w = xp.concatenate([log_weights(predict, rows[s:s + chunk], tables, model.cfg.param, rng)
                            for s in range(0, rows.shape[0], chunk)])
    return to_host(log_w.reshape(k, x0.shape[0]))


def importance_weighted_log_likelihood(model, params, x0, rng, k, chunk=8192):
    """``L_k(x_0) = log mean_k w``, an estimate of each point's ``log p(x_0)`` from ``k`` forward
    trajectories (arguments as :func:`trajectory_log_weights`); ``k = 1`` is an unbiased
    estimate of the exact bound ``K_exact``.  Returns a host float64 ndarray (N,), nats."""
    return log_mean_exp(trajectory_log_weights(model, params, x0, rng, k, chunk))


def grouped_estimate(log_w, k):
    """``L_k`` from more trajectories than ``k``: the mean over disjoint groups of ``k`` of
    ``log mean_k w``, per point.  Same expectation as one group, less spread.

    ``log_w`` : (K, N), K a multiple of ``k``, from :func:`trajectory_log_weights`.  Returns (N,).
    """
    K, N = log_w.shape
    if check_positive_int("k", k) > K or K % k:
        raise ValueError(f"k = {k} must divide the {K} trajectories per point")
    return log_mean_exp(log_w.reshape(K // k, k, N), axis=1).mean(axis=0)
