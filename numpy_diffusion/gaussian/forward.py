"""The forward process ``q`` (§2.1, eqs. 2-3): the marginal ``q(x_t | x_0)`` and the posterior
``q(x_{t-1} | x_t, x_0)``, each a forward/backward pair.

The paper gives only the one-step kernel (eq. 2, with the Gaussian kernel of Table App.1)::

    q(x_t | x_{t-1}) = N(x_t; sqrt(1 - beta_t) x_{t-1}, beta_t I).

The two distributions below follow from it by Gaussian conjugacy; the paper
never prints them, so their notation is DDPM's (Ho et al. 2020, eqs. 4, 6-7):
``alpha_t = 1 - beta_t``, ``alpha_bar_t``, ``beta_tilde_t`` and ``mu_tilde_t``
(here ``mu_q``) are DDPM's symbols, not the paper's.

**The marginal.**  Composing ``t`` steps, each scaling the mean by
``sqrt(alpha_s)`` and adding independent noise of variance ``beta_s``, gives a
Gaussian with mean ``sqrt(alpha_bar_t) x_0``, ``alpha_bar_t = prod_{s<=t} alpha_s``,
and variance ``v_t = alpha_t v_{t-1} + beta_t``, whose solution from ``v_0 = 0`` is
``v_t = 1 - alpha_bar_t``.  So, with ``eps ~ N(0, I)``::

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

The caller passes ``eps`` itself: the frozen noise of §2.4.1 that makes ``x_t``
a differentiable function of the schedule.

**The posterior.**  By Bayes' rule ``q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1})
q(x_{t-1} | x_0)``, a product of two Gaussians in ``x_{t-1}``: precisions add and
precision-weighted means add::

    1 / beta_tilde_t = alpha_t / beta_t + 1 / (1 - alpha_bar_{t-1})
      => beta_tilde_t = (1 - alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
    mu_q / beta_tilde_t = sqrt(alpha_t) x_t / beta_t + sqrt(alpha_bar_{t-1}) x_0 / (1 - alpha_bar_{t-1})
      => mu_q = (sqrt(alpha_bar_{t-1}) beta_t x_0 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) x_t) / (1 - alpha_bar_t)

(using ``alpha_t (1 - alpha_bar_{t-1}) + beta_t = 1 - alpha_bar_t``).  The two
coefficients of ``mu_q`` are the tables ``post_coef_x0`` and ``post_coef_xt``.

Every coefficient is read from the schedule's tables (:mod:`tables`) at each
example's own ``t``.  So the backward passes return gradients with respect to
those tables: dicts of ``(T + 1,)`` arrays, one entry per table read, the
per-example contributions summed into their time step.
"""
from typing import NamedTuple

from .tables import scatter_by_t


def _at(tables, name, t):
    """Column of table ``name`` at each example's step: (N, 1), to broadcast over ``D``."""
    return tables[name][t][:, None]


class QSampleCache(NamedTuple):
    x0: object                                # (N, D) data, for d x_t / d sqrt(alpha_bar_t)
    t: object                                 # (N,) steps
    eps: object                               # (N, D) frozen noise, for d x_t / d sqrt(1 - alpha_bar_t)
    T: int


def q_sample_forward(x0, t, eps, tables):
    """A sample of ``q(x_t | x_0)`` from given noise: ``x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps``.

    Parameters
    ----------
    x0 : ndarray of shape (N, D)
    t : int ndarray of shape (N,), values in ``1..T``
    eps : ndarray of shape (N, D), standard normal noise
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward`

    Returns
    -------
    xt : ndarray of shape (N, D)
    cache : QSampleCache
    """
    xt = _at(tables, "sqrt_alpha_bar", t) * x0 + _at(tables, "sqrt_one_minus_alpha_bar", t) * eps
    return xt, QSampleCache(x0, t, eps, tables["beta"].shape[0] - 1)   # (N, D)


def q_sample_backward(dxt, cache):
    """Gradient with respect to the tables (the only differentiable input): a dict of (T + 1,) arrays."""
    x0, t, eps, T = cache
    per_example = {"sqrt_alpha_bar": (dxt * x0).sum(axis=1),                  # d x_t / d sqrt(alpha_bar) = x0
                   "sqrt_one_minus_alpha_bar": (dxt * eps).sum(axis=1)}       # d x_t / d sqrt(1 - alpha_bar) = eps
    return scatter_by_t(t, per_example, T)


class QPosteriorCache(NamedTuple):
    x0: object                                # (N, D), for d mu_q / d post_coef_x0
    xt: object                                # (N, D), for d mu_q / d post_coef_xt
    t: object                                 # (N,)
    coef_xt: object                           # (N, 1) post_coef_xt at t, for d mu_q / d x_t
    T: int


def q_posterior_forward(x0, xt, t, tables):
    """Mean and log-variance of ``q(x_{t-1} | x_t, x_0) = N(mu_q, beta_tilde_t I)`` (derived above).

    Parameters
    ----------
    x0, xt : ndarrays of shape (N, D)
    t : int ndarray of shape (N,), values in ``2..T`` (at ``t = 1`` the posterior is a point mass)
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward`

    Returns
    -------
    (mu_q, logvar_q) : ndarrays of shape (N, D) and (N, 1): one variance per example.
    cache : QPosteriorCache
    """
    coef_xt = _at(tables, "post_coef_xt", t)
    mu_q = _at(tables, "post_coef_x0", t) * x0 + coef_xt * xt                 # (N, D)
    logvar_q = _at(tables, "log_beta_tilde", t)                               # (N, 1)
    return (mu_q, logvar_q), QPosteriorCache(x0, xt, t, coef_xt, tables["beta"].shape[0] - 1)


def q_posterior_backward(dmu_q, dlogvar_q, cache):
    """Gradients ``(dxt, dtables)``: ``dxt`` (N, D), and ``dtables`` a dict of (T + 1,) arrays
    for ``post_coef_x0``, ``post_coef_xt`` and ``log_beta_tilde``.  (``x0`` is data: no gradient.)"""
    x0, xt, t, coef_xt, T = cache
    dxt = coef_xt * dmu_q                                                     # d mu_q / d x_t = post_coef_xt
    per_example = {"post_coef_x0": (dmu_q * x0).sum(axis=1),                  # d mu_q / d post_coef_x0 = x0
                   "post_coef_xt": (dmu_q * xt).sum(axis=1),                  # d mu_q / d post_coef_xt = x_t
                   "log_beta_tilde": dlogvar_q.sum(axis=1)}                   # d logvar_q / d log beta_tilde = 1
    return dxt, scatter_by_t(t, per_example, T)
