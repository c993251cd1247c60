"""The reverse process ``p`` (§2.2, eq. 5; App. D.2.1, eqs. 64-65; App. B.2, eq. 44).

``p(x_{t-1} | x_t) = N(mu_p, diag exp(logvar_p))`` for ``t = 2..T``, from the
network outputs ``z = [z_mu, z_S]`` (each (N, D)).  Three parameterizations around
the forward kernel; only ``'reference'`` reproduces it exactly at ``z = 0``:

- ``'paper'`` (eqs. 64-65): ``Sigma = sigmoid(z_S + logit(beta_t))``,
  ``mu = (x_t - z_mu)(1 - Sigma) + z_mu``; at ``z = 0`` the mean is ``(1 - beta_t) x_t``;
- ``'reference'`` (the authors' code): ``Sigma = sigmoid(z_S / sqrt(T) + logit(beta_t))``,
  ``mu = sqrt(alpha_t) x_t + sqrt(beta_t) z_mu``; ``z = 0`` is the forward kernel;
- ``'bounded'`` (§2.6, eq. 24; App. A): ``log Sigma = v log beta_t + (1 - v) log beta_tilde_t``,
  ``v = sigmoid(z_S)``, the mean as ``'reference'``; ``Sigma`` lies between the
  posterior variance and ``beta_t`` and is never over-confident below ``beta_tilde_t``;
  ``z = 0`` gives their geometric mean, ``z_S -> +inf`` the forward kernel.

The last step ``p(x_0 | x_1) = N(sqrt(alpha_1) x_1, beta_1 I)`` is fixed (eq. 44).
Everything is float64; network outputs are cast up.
"""
import math

from ..backend import array_module
from ..nn.layers import sigmoid, softplus
from ..validation import check_choice

PARAMS = ("paper", "reference", "bounded")


def _split(z, xt):
    D = xt.shape[1]
    if z.ndim != 2 or z.shape != (xt.shape[0], 2 * D):
        raise ValueError(f"network outputs z must have shape ({xt.shape[0]}, {2 * D}), got {tuple(z.shape)}")
    z = z.astype(array_module(z).float64, copy=False)
    return z[:, :D], z[:, D:]


def p_mean_logvar(z, xt, t, tables, param):
    """Mean and log-variance of ``p(x_{t-1} | x_t)``.

    Parameters
    ----------
    z : ndarray of shape (N, 2 D), network outputs ``[z_mu, z_S]`` (any float dtype)
    xt : float64 ndarray of shape (N, D)
    t : int ndarray of shape (N,), values in ``2..T``
    tables : dict from :func:`numpy_diffusion.tables.make_tables`
    param : ``'paper'``, ``'reference'`` or ``'bounded'``

    Returns
    -------
    mu_p, logvar_p : float64 ndarrays of shape (N, D)
    cache : tuple for :func:`p_mean_logvar_backward`.
    """
    check_choice("parameterization", param, PARAMS)
    z_mu, z_S = _split(z, xt)
    mu_p, logvar_p, local = _FORWARD[param](z_mu, z_S, xt, t, tables)
    return mu_p, logvar_p, (param, z_mu, xt, local)


def p_mean_logvar_backward(dmu_p, dlogvar_p, cache):
    """Gradients: returns ``(dz (N, 2 D) float64, dxt (N, D), dcoef)``; ``dcoef`` holds
    per-example (N,) gradients keyed by the names of the tables the kernel read."""
    param, z_mu, xt, local = cache
    xp = array_module(xt)
    dz_mu, dz_S, dxt, dcoef = _BACKWARD[param](dmu_p, dlogvar_p, z_mu, xt, local)
    return xp.concatenate([dz_mu, dz_S], axis=1), dxt, dcoef


def _col(tables, name, t):
    return tables[name][t][:, None]                                       # (N, 1)


def _paper_forward(z_mu, z_S, xt, t, tables):
    a = z_S + _col(tables, "logit_beta", t)                               # eq. (64), inside sigma
    Sigma, one_minus = sigmoid(a), sigmoid(-a)                            # Sigma, 1 - Sigma
    mu_p = xt * one_minus + z_mu * Sigma                                  # eq. (65)
    return mu_p, -softplus(-a), (Sigma, one_minus)                        # log sigmoid(a)


def _paper_backward(dmu, dlogvar, z_mu, xt, local):
    Sigma, one_minus = local
    # dlogvar/da = 1 - S and dmu/da = (z_mu - xt) S (1 - S), with S = sigmoid(a)
    da = one_minus * (dlogvar + dmu * (z_mu - xt) * Sigma)
    dcoef = {"logit_beta": da.sum(axis=1)}                                # da/dlogit(beta_t) = 1
    dz_mu = dmu * Sigma                                                   # dmu/dz_mu = S
    return dz_mu, da, dmu * one_minus, dcoef                              # da/dz_S = 1; dmu/dxt = 1 - S


def _mean_forward(z_mu, xt, t, tables):
    s_alpha, s_beta = _col(tables, "sqrt_alpha", t), _col(tables, "sqrt_beta", t)
    mu_p = xt * s_alpha + z_mu * s_beta                                   # sqrt(alpha_t) xt + sqrt(beta_t) z_mu
    return mu_p, (s_alpha, s_beta)


def _mean_backward(dmu, z_mu, xt, s_alpha, s_beta):
    dcoef = {"sqrt_alpha": (dmu * xt).sum(axis=1),                        # dmu/dsqrt(alpha_t) = xt
             "sqrt_beta": (dmu * z_mu).sum(axis=1)}                       # dmu/dsqrt(beta_t) = z_mu
    dz_mu = dmu * s_beta                                                  # dmu/dz_mu = sqrt(beta_t)
    return dz_mu, dmu * s_alpha, dcoef                                    # dmu/dxt = sqrt(alpha_t)


def _reference_forward(z_mu, z_S, xt, t, tables):
    scale = 1.0 / math.sqrt(tables["beta"].shape[0] - 1)                  # 1 / sqrt(T)
    a = z_S * scale + _col(tables, "logit_beta", t)
    mu_p, mean_local = _mean_forward(z_mu, xt, t, tables)
    return mu_p, -softplus(-a), (sigmoid(-a), scale, mean_local)          # log sigmoid(a)


def _reference_backward(dmu, dlogvar, z_mu, xt, local):
    one_minus, scale, (s_alpha, s_beta) = local
    da = dlogvar * one_minus                                              # d log sigma(a)/da = 1 - sigma(a)
    dz_mu, dxt, dcoef = _mean_backward(dmu, z_mu, xt, s_alpha, s_beta)
    dcoef["logit_beta"] = da.sum(axis=1)                                  # da/dlogit(beta_t) = 1
    return dz_mu, da * scale, dxt, dcoef                                  # da/dz_S = 1/sqrt(T)


def _bounded_forward(z_mu, z_S, xt, t, tables):
    log_beta, log_beta_tilde = _col(tables, "log_beta", t), _col(tables, "log_beta_tilde", t)
    v = sigmoid(z_S)                                                      # interpolation weight in (0, 1)
    logvar_p = log_beta_tilde + v * (log_beta - log_beta_tilde)           # §2.6, eq. (24) bounds
    mu_p, mean_local = _mean_forward(z_mu, xt, t, tables)
    return mu_p, logvar_p, (v, log_beta - log_beta_tilde, mean_local)


def _bounded_backward(dmu, dlogvar, z_mu, xt, local):
    v, gap, (s_alpha, s_beta) = local
    dz_mu, dxt, dcoef = _mean_backward(dmu, z_mu, xt, s_alpha, s_beta)
    dcoef["log_beta"] = (dlogvar * v).sum(axis=1)                         # dlogvar/dlog beta_t = v
    dcoef["log_beta_tilde"] = (dlogvar * (1 - v)).sum(axis=1)             # dlogvar/dlog beta_tilde = 1 - v
    dz_S = dlogvar * gap * v * (1 - v)                                    # dlogvar/dv = gap; dv/dz_S = v (1 - v)
    return dz_mu, dz_S, dxt, dcoef


_FORWARD = {"paper": _paper_forward, "reference": _reference_forward, "bounded": _bounded_forward}
_BACKWARD = {"paper": _paper_backward, "reference": _reference_backward, "bounded": _bounded_backward}


def p_sample_loop(predict, n, D, tables, param, rng, trajectory=False, xp=None):
    """Ancestral samples of ``p(x_0)``: ``x_T ~ pi = N(0, I)`` (eq. 4), the learned kernel
    for ``t = T..2``, then the fixed last step of App. B.2, eq. (44).

    Parameters
    ----------
    predict : callable ``(xt (n, D) float64, t (n,) int) -> z (n, 2 D)``
        The network.
    n, D : int
    tables : dict from :func:`numpy_diffusion.tables.make_tables`
    param : ``'paper'``, ``'reference'`` or ``'bounded'``
    rng : numpy.random.Generator
        Noise is drawn on the host, ``standard_normal((n, D))`` once for ``x_T``,
        once per step ``t = T..2`` and once for the last step, in that order, and
        moved to the backend ``xp`` (default: that of ``tables``).
    trajectory : bool
        Also return every ``x_t``.

    Returns
    -------
    x0 : float64 ndarray of shape (n, D)
    traj : float64 ndarray of shape (T + 1, n, D), ``traj[t] = x_t`` (only if ``trajectory``).
    """
    xp = xp or array_module(tables["beta"])
    T = tables["beta"].shape[0] - 1
    noise = lambda: xp.asarray(rng.standard_normal((n, D)))               # noqa: E731
    x = noise()                                                           # x_T ~ pi, eq. (4)
    kept = [x] if trajectory else None                                    # x_T, x_{T-1}, ..., x_0
    for t in range(T, 1, -1):
        tt = xp.full(n, t, dtype=xp.int64)
        mu_p, logvar_p, _ = p_mean_logvar(predict(x, tt), x, tt, tables, param)
        x = mu_p + xp.exp(0.5 * logvar_p) * noise()                       # x_{t-1} ~ p(. | x_t), eq. (5)
        if trajectory:
            kept.append(x)
    x = tables["sqrt_alpha"][1] * x + tables["sqrt_beta"][1] * noise()    # App. B.2, eq. (44)
    return (x, xp.stack((kept + [x])[::-1])) if trajectory else x
