"""The reverse process ``p`` (§2.2, eqs. 4-5, Table App.1; App. B.2, eq. 44): the kernel as a forward/backward pair, and sampling.

``p(x_{t-1} | x_t) = N(mu_p, diag exp(logvar_p))`` for ``t = 2..T``, from the
network outputs ``z = [z_mu, z_Sigma]`` (each (N, D)).  Three parameterizations, each
written as a perturbation of the forward step; only ``'reference'`` reproduces it
exactly at ``z = 0``:

- ``'paper'``: the mean and variance the paper gives for its image network
  (App. D.2.1, eqs. 64-65): ``Sigma = sigmoid(z_Sigma + logit(beta_t))``,
  ``mu = (x_t - z_mu)(1 - Sigma) + z_mu``; at ``z = 0`` the mean is ``(1 - beta_t) x_t``;
- ``'reference'`` (the authors' code): ``Sigma = sigmoid(z_Sigma / sqrt(T) + logit(beta_t))``,
  ``mu = sqrt(alpha_t) x_t + sqrt(beta_t) z_mu``; ``z = 0`` is the forward kernel;
- ``'bounded'`` (the project's): ``log Sigma = v log beta_t + (1 - v) log beta_tilde_t``,
  ``v = sigmoid(z_Sigma)``, the mean as ``'reference'``; ``z = 0`` gives the geometric mean
  of the two, ``z_Sigma -> +inf`` the forward kernel.  §2.6 (eq. 24, App. A) bounds the
  reverse process's entropy between these two variances; that motivates the range but
  does not justify it at each ``x_t``: the lower limit ``beta_tilde_t`` holds at every
  ``x_t`` (a posterior averaged over ``x_0`` is no narrower than ``q(x_{t-1} | x_t, x_0)``),
  the upper limit ``beta_t`` does not.  What the range buys is a kernel that is never
  more confident than ``beta_tilde_t``.  This log-space interpolation is the learned
  variance of Nichol & Dhariwal (2021, eq. 15), who found it independently;
- ``'eps'`` (DDPM, Ho et al. 2020, eq. 11): the network predicts the noise ``eps`` that
  made ``x_t`` from ``x_0``, ``z_mu = eps_theta(x_t, t)``, and the mean is the posterior mean
  with ``x_0`` replaced by the estimate ``(x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t)``::

      mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) z_mu) / sqrt(alpha_t);

  the variance is ``'bounded'``'s.  (Substituting that ``x_0`` into ``mu_q`` of
  :mod:`forward` and using ``alpha_bar_t = alpha_t alpha_bar_{t-1}`` and
  ``alpha_t (1 - alpha_bar_{t-1}) + beta_t = 1 - alpha_bar_t`` gives this line.)
  ``z = 0`` is the mean ``x_t / sqrt(alpha_t)``, the forward step's mean undone.
  With this mean, ``mu_q - mu_p = beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)) (z_mu - eps)``:
  each KL term of the bound weighs the squared error of the predicted noise by
  ``beta_t^2 / (2 Sigma alpha_t (1 - alpha_bar_t))`` (DDPM's eq. 12), which is what
  the simplified loss (:meth:`~.model.GaussianDiffusion.draw`) drops.

The last step ``p(x_0 | x_1) = N(sqrt(alpha_1) x_1, beta_1 I)`` is fixed (eq. 44).
Everything is float64; network outputs are cast up.
"""
import math
from typing import NamedTuple

from ..backend import array_module
from ..nn.layers import sigmoid, softplus
from ..validation import check_choice
from .tables import scatter_by_t

PARAMS = ("paper", "reference", "bounded", "eps")


def _split(z, xt):
    D = xt.shape[1]
    if z.ndim != 2 or z.shape != (xt.shape[0], 2 * D):
        raise ValueError(f"network outputs z must have shape ({xt.shape[0]}, {2 * D}), got {tuple(z.shape)}")
    z = z.astype(array_module(z).float64, copy=False)
    return z[:, :D], z[:, D:]


class ReverseCache(NamedTuple):
    param: str                                # which parameterization
    z_mu: object                              # (N, D) network output for the mean
    xt: object                                # (N, D)
    t: object                                 # (N,)
    local: tuple                              # the parameterization's own intermediates
    T: int


def p_mean_logvar_forward(z, xt, t, tables, *, param):
    """Mean and log-variance of ``p(x_{t-1} | x_t) = N(mu_p, diag exp(logvar_p))`` (Table App.1).

    Parameters
    ----------
    z : ndarray of shape (N, 2 D), network outputs ``[z_mu, z_Sigma]`` (any float dtype)
    xt : float64 ndarray of shape (N, D)
    t : int ndarray of shape (N,), values in ``2..T``
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward`
    param : ``'paper'``, ``'reference'``, ``'bounded'`` or ``'eps'``

    Returns
    -------
    (mu_p, logvar_p) : float64 ndarrays of shape (N, D)
    cache : ReverseCache
    """
    check_choice("parameterization", param, PARAMS)
    z_mu, z_Sigma = _split(z, xt)
    mu_p, logvar_p, local = _FORWARD[param](z_mu, z_Sigma, xt, t, tables)
    return (mu_p, logvar_p), ReverseCache(param, z_mu, xt, t, local, tables["beta"].shape[0] - 1)


def p_mean_logvar_backward(dmu_p, dlogvar_p, cache):
    """Gradients ``(dz, dxt, dtables)``: ``dz`` (N, 2 D) float64, ``dxt`` (N, D), and
    ``dtables`` a dict of (T + 1,) arrays for the tables the kernel read."""
    xp = array_module(cache.xt)
    dz_mu, dz_Sigma, dxt, per_example = _BACKWARD[cache.param](dmu_p, dlogvar_p, cache.z_mu, cache.xt,
                                                           cache.local)
    return xp.concatenate([dz_mu, dz_Sigma], axis=1), dxt, scatter_by_t(cache.t, per_example, cache.T)


def _col(tables, name, t):
    return tables[name][t][:, None]                                       # (N, 1)


class PaperLocal(NamedTuple):
    Sigma: object                             # (N, D) sigma(logit_Sigma)
    one_minus: object                         # (N, D) 1 - Sigma, computed as sigma(-logit_Sigma)


def _paper_forward(z_mu, z_Sigma, xt, t, tables):
    logit_Sigma = z_Sigma + _col(tables, "logit_beta", t)                     # eq. (64), inside sigma
    Sigma, one_minus = sigmoid(logit_Sigma), sigmoid(-logit_Sigma)        # Sigma, 1 - Sigma
    mu_p = xt * one_minus + z_mu * Sigma                                  # eq. (65)
    return mu_p, -softplus(-logit_Sigma), PaperLocal(Sigma, one_minus)    # log sigma(logit_Sigma)


def _paper_backward(dmu, dlogvar, z_mu, xt, local):
    Sigma, one_minus = local
    # d logvar / d logit_Sigma = 1 - Sigma;  d mu / d logit_Sigma = (z_mu - xt) Sigma (1 - Sigma)
    dlogit = one_minus * (dlogvar + dmu * (z_mu - xt) * Sigma)
    per_example = {"logit_beta": dlogit.sum(axis=1)}                      # d logit_Sigma / d logit(beta_t) = 1
    dz_mu = dmu * Sigma                                                   # d mu / d z_mu = Sigma
    return dz_mu, dlogit, dmu * one_minus, per_example                    # d logit_Sigma/d z_Sigma = 1; d mu/d xt = 1 - Sigma


class MeanLocal(NamedTuple):
    sqrt_alpha: object                        # (N, 1) sqrt(alpha_t)
    sqrt_beta: object                         # (N, 1) sqrt(beta_t)


def _mean_forward(z_mu, xt, t, tables):
    """The reference code's mean, a perturbation of the forward step: ``sqrt(alpha_t) x_t + sqrt(beta_t) z_mu``."""
    local = MeanLocal(_col(tables, "sqrt_alpha", t), _col(tables, "sqrt_beta", t))
    return xt * local.sqrt_alpha + z_mu * local.sqrt_beta, local


def _mean_backward(dmu, z_mu, xt, local):
    per_example = {"sqrt_alpha": (dmu * xt).sum(axis=1),                  # d mu / d sqrt(alpha_t) = xt
                   "sqrt_beta": (dmu * z_mu).sum(axis=1)}                 # d mu / d sqrt(beta_t) = z_mu
    dz_mu = dmu * local.sqrt_beta                                         # d mu / d z_mu = sqrt(beta_t)
    return dz_mu, dmu * local.sqrt_alpha, per_example                     # d mu / d xt = sqrt(alpha_t)


class ReferenceLocal(NamedTuple):
    one_minus: object                         # (N, D) 1 - Sigma
    scale: float                              # 1 / sqrt(T)
    mean: MeanLocal


def _reference_forward(z_mu, z_Sigma, xt, t, tables):
    scale = 1.0 / math.sqrt(tables["beta"].shape[0] - 1)                  # 1 / sqrt(T)
    logit_Sigma = z_Sigma * scale + _col(tables, "logit_beta", t)
    mu_p, mean = _mean_forward(z_mu, xt, t, tables)
    local = ReferenceLocal(sigmoid(-logit_Sigma), scale, mean)
    return mu_p, -softplus(-logit_Sigma), local                           # log sigma(logit_Sigma)


def _reference_backward(dmu, dlogvar, z_mu, xt, local):
    dlogit = dlogvar * local.one_minus                                    # d log sigma(l) / d l = 1 - sigma(l)
    dz_mu, dxt, per_example = _mean_backward(dmu, z_mu, xt, local.mean)
    per_example["logit_beta"] = dlogit.sum(axis=1)                        # d l / d logit(beta_t) = 1
    return dz_mu, dlogit * local.scale, dxt, per_example                  # d l / d z_Sigma = 1 / sqrt(T)


class VarianceLocal(NamedTuple):
    v: object                                 # (N, D) interpolation weight sigma(z_Sigma)
    gap: object                               # (N, 1) log beta_t - log beta_tilde_t


def _variance_forward(z_Sigma, t, tables):
    """``'bounded'``'s log-variance, ``log beta_tilde_t + sigma(z_Sigma) (log beta_t - log beta_tilde_t)``."""
    log_beta, log_beta_tilde = _col(tables, "log_beta", t), _col(tables, "log_beta_tilde", t)
    v = sigmoid(z_Sigma)                                                      # interpolation weight in (0, 1)
    logvar_p = log_beta_tilde + v * (log_beta - log_beta_tilde)           # between beta_tilde_t and beta_t
    return logvar_p, VarianceLocal(v, log_beta - log_beta_tilde)


def _variance_backward(dlogvar, local, per_example):
    """``dz_Sigma``; the tables' per-example gradients are added to ``per_example``."""
    v, gap = local
    per_example["log_beta"] = (dlogvar * v).sum(axis=1)                   # d logvar / d log beta_t = v
    per_example["log_beta_tilde"] = (dlogvar * (1 - v)).sum(axis=1)       # d logvar / d log beta_tilde = 1 - v
    return dlogvar * gap * v * (1 - v)                                    # d logvar / d v = gap; dv / d z_Sigma = v (1 - v)


class BoundedLocal(NamedTuple):
    variance: VarianceLocal
    mean: MeanLocal


def _bounded_forward(z_mu, z_Sigma, xt, t, tables):
    logvar_p, variance = _variance_forward(z_Sigma, t, tables)
    mu_p, mean = _mean_forward(z_mu, xt, t, tables)
    return mu_p, logvar_p, BoundedLocal(variance, mean)


def _bounded_backward(dmu, dlogvar, z_mu, xt, local):
    dz_mu, dxt, per_example = _mean_backward(dmu, z_mu, xt, local.mean)
    return dz_mu, _variance_backward(dlogvar, local.variance, per_example), dxt, per_example


class EpsLocal(NamedTuple):
    sqrt_alpha: object                        # (N, 1) a = sqrt(alpha_t)
    sqrt_beta: object                         # (N, 1) s = sqrt(beta_t)
    sqrt_one_minus: object                    # (N, 1) m = sqrt(1 - alpha_bar_t)
    mu_p: object                              # (N, D) the mean, for d mu / d a = -mu / a
    variance: VarianceLocal


def _eps_forward(z_mu, z_Sigma, xt, t, tables):
    a, s, m = (_col(tables, name, t) for name in ("sqrt_alpha", "sqrt_beta", "sqrt_one_minus_alpha_bar"))
    mu_p = (xt - z_mu * (s * s / m)) / a                                  # DDPM eq. (11), s^2 = beta_t
    logvar_p, variance = _variance_forward(z_Sigma, t, tables)
    return mu_p, logvar_p, EpsLocal(a, s, m, mu_p, variance)


def _eps_backward(dmu, dlogvar, z_mu, xt, local):
    a, s, m, mu_p, variance = local
    per_example = {"sqrt_alpha": -(dmu * mu_p).sum(axis=1) / a[:, 0],     # d mu / d a = -mu / a
                   "sqrt_beta": -(dmu * z_mu).sum(axis=1) * (2 * s / (m * a))[:, 0],   # d mu / d s = -2 s z_mu / (m a)
                   "sqrt_one_minus_alpha_bar": (dmu * z_mu).sum(axis=1) * (s * s / (m * m * a))[:, 0]}   # d mu / d m
    dz_mu = -dmu * (s * s / (m * a))                                      # d mu / d z_mu = -beta_t / (m a)
    dz_Sigma = _variance_backward(dlogvar, variance, per_example)
    return dz_mu, dz_Sigma, dmu / a, per_example                          # d mu / d xt = 1 / a


_FORWARD = {"paper": _paper_forward, "reference": _reference_forward, "bounded": _bounded_forward,
            "eps": _eps_forward}
_BACKWARD = {"paper": _paper_backward, "reference": _reference_backward, "bounded": _bounded_backward,
             "eps": _eps_backward}


def p_sample_loop(predict, n, D, tables, rng, *, param, trajectory=False, xp=None):
    """Ancestral samples of ``p(x_0)``: ``x_T ~ pi = N(0, I)`` (eq. 4), the learned kernel
    for ``t = T..2``, then the fixed last step of App. B.2, eq. (44).

    Parameters
    ----------
    predict : callable ``(xt (n, D) float64, t (n,) int) -> z (n, 2 D)``
        The network.
    n, D : int
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward`
    param : ``'paper'``, ``'reference'``, ``'bounded'`` or ``'eps'``
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
        (mu_p, logvar_p), _ = p_mean_logvar_forward(predict(x, tt), x, tt, tables, param=param)
        x = mu_p + xp.exp(0.5 * logvar_p) * noise()                       # x_{t-1} ~ p(. | x_t), eq. (5)
        if trajectory:
            kept.append(x)
    x = tables["sqrt_alpha"][1] * x + tables["sqrt_beta"][1] * noise()    # App. B.2, eq. (44)
    return (x, xp.stack((kept + [x])[::-1])) if trajectory else x
