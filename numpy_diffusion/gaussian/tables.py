"""The schedule's tables: every coefficient derived from the diffusion rates ``beta``, and their gradient.

Every array has length ``T + 1`` and is indexed by the paper's time: ``beta[t]``
is ``beta_t``, ``beta[0] = 0`` and ``alpha_bar[0] = 1``.  Tables are always
float64 and built with ``log1p``/``expm1``: with ``beta_1 = 1e-7`` the quantity
``1 - alpha_bar_1`` would lose most of its digits as ``1 - prod(1 - beta)``.
They are built on the host (they are ``O(T)``) and moved to the backend once.
:func:`tables_backward` carries gradients with respect to table entries back
to ``beta`` (§2.4.1: the rates are learned through the frozen noise).
"""
from typing import NamedTuple

import numpy

from ..backend import array_module, to_host
from ..validation import ScheduleError

DIFFERENTIABLE = ("sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "log_one_minus_alpha_bar", "sqrt_alpha",
                  "sqrt_beta", "log_beta", "logit_beta", "log_beta_tilde", "post_coef_x0", "post_coef_xt")


def check_beta(beta):
    """Check a schedule array: shape (T + 1,) with T >= 2, finite, beta[0] = 0, beta[1:] in (0, 1)."""
    beta = numpy.asarray(to_host(beta), dtype=numpy.float64)
    if beta.ndim != 1 or beta.shape[0] < 3:
        raise ScheduleError(f"beta must have shape (T + 1,) with T >= 2, got shape {beta.shape}")
    if not numpy.isfinite(beta).all():
        raise ScheduleError("beta contains NaN or infinite values; every beta_t must lie in (0, 1)")
    bad = numpy.flatnonzero((beta[1:] <= 0) | (beta[1:] >= 1)) + 1
    if bad.size:
        raise ScheduleError(f"beta_t must lie strictly between 0 and 1 for t = 1..T; "
                         f"t = {bad[0]} has beta_t = {float(beta[bad[0]])!r}")
    if beta[0] != 0:
        raise ScheduleError(f"beta[0] is unused and must be 0 (paper indexing), got {float(beta[0])!r}")
    return beta


class TablesCache(NamedTuple):
    host: dict                                # every table as a host float64 array (T + 1,)


def tables_forward(beta, *, xp=numpy):
    """Every coefficient the Gaussian diffusion reads, as float64 ``xp`` arrays of shape (T + 1,).

    The one-step kernel's (Table App.1): ``sqrt(alpha_t)``, ``sqrt(beta_t)``; the reverse
    kernel's ``logit(beta_t)`` (``sigma^-1(beta_t)`` of eq. 64); the marginal's and the posterior's, derived in :mod:`forward`
    (DDPM's notation: ``alpha_bar``, ``beta_tilde``).  Entries at ``t = 0`` (and
    ``beta_tilde`` at ``t = 1``, where the posterior is a point mass) are the limits
    ``0`` or ``-inf``; the bound never reads them.

    Returns
    -------
    tables : dict of name -> ``xp`` float64 ndarray of shape (T + 1,)
    cache : TablesCache, the same tables on the host, for :func:`tables_backward`.
    """
    beta = check_beta(beta)
    b = beta[1:]                                                    # beta_t, t = 1..T
    log_alpha = numpy.log1p(-b)                                     # log alpha_t = log(1 - beta_t)
    L = numpy.cumsum(log_alpha)                                     # log alpha_bar_t = sum_{s<=t} log alpha_s
    M = numpy.log(-numpy.expm1(L))                                  # log(1 - alpha_bar_t), no cancellation
    L_prev = numpy.concatenate([[0.0], L[:-1]])                     # log alpha_bar_{t-1}
    M_prev = numpy.concatenate([[-numpy.inf], M[:-1]])              # log(1 - alpha_bar_{t-1})

    def row0(first, values):                                        # prepend the entry at t = 0
        return numpy.concatenate([[first], values])

    tab = {"beta": beta, "alpha": 1 - beta, "log_alpha": row0(0.0, log_alpha),
           "log_alpha_bar": row0(0.0, L), "log_one_minus_alpha_bar": row0(-numpy.inf, M)}
    tab["alpha_bar"] = numpy.exp(tab["log_alpha_bar"])
    tab["one_minus_alpha_bar"] = -numpy.expm1(tab["log_alpha_bar"])
    tab["sqrt_alpha_bar"] = numpy.exp(0.5 * tab["log_alpha_bar"])          # marginal: scale of x_0
    tab["sqrt_one_minus_alpha_bar"] = numpy.sqrt(tab["one_minus_alpha_bar"])  # marginal: scale of eps
    tab["sqrt_alpha"] = numpy.sqrt(1 - beta)                                # Table App.1: kernel mean
    tab["sqrt_beta"] = numpy.sqrt(beta)                                     # Table App.1: kernel std
    tab["log_beta"] = row0(-numpy.inf, numpy.log(b))
    tab["logit_beta"] = row0(-numpy.inf, numpy.log(b) - log_alpha)          # log(beta_t / (1 - beta_t))
    # beta_tilde_t = (1 - alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t), the posterior variance
    tab["log_beta_tilde"] = row0(-numpy.inf, M_prev + numpy.log(b) - M)
    tab["beta_tilde"] = numpy.exp(tab["log_beta_tilde"])
    # mu_q = post_coef_x0 x_0 + post_coef_xt x_t:
    # sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) and sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
    tab["post_coef_x0"] = row0(0.0, numpy.exp(0.5 * L_prev - M) * b)
    tab["post_coef_xt"] = row0(0.0, numpy.exp(0.5 * log_alpha + M_prev - M))
    stacked = xp.asarray(numpy.stack(list(tab.values())))           # one transfer to the backend
    return {name: stacked[i] for i, name in enumerate(tab)}, TablesCache(tab)


def tables_backward(dtables, cache):
    """Chain gradients with respect to table entries back to ``beta``.

    Parameters
    ----------
    dtables : dict of name -> ndarray of shape (T + 1,)
        Gradients with respect to any of ``sqrt_alpha_bar``, ``sqrt_one_minus_alpha_bar``,
        ``log_one_minus_alpha_bar``, ``sqrt_alpha``, ``sqrt_beta``, ``log_beta``,
        ``logit_beta``, ``log_beta_tilde``, ``post_coef_x0``, ``post_coef_xt``
        (any backend; moved to the host in one transfer).
    cache : TablesCache from :func:`tables_forward`

    Returns
    -------
    dbeta : host float64 ndarray of shape (T + 1,); ``dbeta[0] = 0``.

    **Derivation.**  Write ``b_t = beta_t`` and, as :func:`tables_forward` computes them,
    ``L_t = log alpha_bar_t = sum_{s<=t} log(1 - b_s)`` and ``M_t = log(1 - alpha_bar_t)
    = log(1 - exp(L_t))``.  Every table at ``t`` is a function of ``b_t`` and of ``L``
    and ``M`` at ``t`` and ``t - 1``::

        sqrt_alpha_bar_t           = exp(L_t / 2)
        sqrt_one_minus_alpha_bar_t = exp(M_t / 2)
        log_one_minus_alpha_bar_t  = M_t
        sqrt_alpha_t               = sqrt(1 - b_t)
        sqrt_beta_t                = sqrt(b_t)
        log_beta_t                 = log b_t
        logit_beta_t               = log b_t - log(1 - b_t)
        log_beta_tilde_t           = M_{t-1} + log b_t - M_t
        post_coef_x0_t   (c0_t)    = exp(L_{t-1} / 2 - M_t) b_t
        post_coef_xt_t   (ct_t)    = exp(log(1 - b_t) / 2 + M_{t-1} - M_t)

    With ``g_X(t)`` the gradient with respect to table ``X`` at ``t`` (``dtables``), the
    chain rule runs in three stages, the three groups of lines below.

    1. Each table's partial derivatives, ``L`` and ``M`` held fixed: ``gb_t =
       sum_X g_X(t) dX_t/db_t``; ``gL_t`` and ``gM_t`` collect from the tables at ``t``
       that read ``L_t`` or ``M_t`` and from those at ``t + 1`` that read them as
       ``L_{(t+1)-1}``, ``M_{(t+1)-1}``.  For example ``gM_t = g_log_beta_tilde(t + 1)
       - g_log_beta_tilde(t) + ...``.  (``L_0 = 0`` and ``M_0 = -inf`` are constants:
       what falls on index 0 is dropped.)
    2. ``M`` through ``L``: ``dM_t/dL_t = -exp(L_t) / (1 - exp(L_t)) = -alpha_bar_t /
       (1 - alpha_bar_t)``, so ``gL_t += gM_t dM_t/dL_t``.
    3. ``L`` through ``b``: ``b_s`` enters every ``L_t`` with ``t >= s``, each time with
       ``dL_t/db_s = -1 / (1 - b_s)``, so::

           dbeta_s = gb_s - (sum_{t=s..T} gL_t) / (1 - b_s).

       A cumulative sum's transpose is the cumulative sum taken from the other end:
       hence the reversed cumsum of the last line.
    """
    unknown = set(dtables) - set(DIFFERENTIABLE)
    if unknown:
        raise KeyError(f"no gradient rule for tables {sorted(unknown)}; known: {list(DIFFERENTIABLE)}")
    tab = {k: v[1:] for k, v in cache.host.items()}                 # host, t = 1..T
    names = list(dtables)
    stacked = to_host(array_module(*dtables.values()).stack([dtables[k] for k in names])) if names else ()
    d = {k: numpy.zeros_like(tab["beta"]) for k in DIFFERENTIABLE}
    d.update({k: numpy.asarray(g, dtype=numpy.float64)[1:] for k, g in zip(names, stacked)})
    beta, alpha, c0, ct = tab["beta"], tab["alpha"], tab["post_coef_x0"], tab["post_coef_xt"]
    gL, gM = numpy.zeros(beta.size + 1), numpy.zeros(beta.size + 1)   # index t = 0..T
    # 1. partial derivatives, L and M held fixed
    gb = d["sqrt_beta"] / (2 * tab["sqrt_beta"])                    # d sqrt(b)/db = 1 / (2 sqrt(b))
    gb -= d["sqrt_alpha"] / (2 * tab["sqrt_alpha"])                 # d sqrt(1-b)/db = -1 / (2 sqrt(1-b))
    gb += d["log_beta"] / beta                                      # d log(b)/db = 1/b
    gb += d["logit_beta"] / (beta * alpha)                          # d logit(b)/db = 1 / (b (1-b))
    gb += (d["log_beta_tilde"] + d["post_coef_x0"] * c0) / beta     # d log beta_tilde/db = 1/b; dc0/db = c0/b
    gb -= d["post_coef_xt"] * ct / (2 * alpha)                      # dct/db = -ct / (2 (1-b))
    gL[1:] += d["sqrt_alpha_bar"] * tab["sqrt_alpha_bar"] / 2       # d exp(L/2)/dL = exp(L/2)/2
    gL[:-1] += d["post_coef_x0"] * c0 / 2                           # dc0/dL_{t-1} = c0/2
    gM[1:] += d["sqrt_one_minus_alpha_bar"] * tab["sqrt_one_minus_alpha_bar"] / 2  # d exp(M/2)/dM
    gM[1:] += d["log_one_minus_alpha_bar"]                          # dM/dM = 1
    gM[1:] -= d["log_beta_tilde"] + d["post_coef_x0"] * c0 + d["post_coef_xt"] * ct  # d/dM_t = -1, -c0, -ct
    gM[:-1] += d["log_beta_tilde"] + d["post_coef_xt"] * ct         # d/dM_{t-1} = 1, ct
    # 2. M through L
    gL[1:] -= gM[1:] * tab["alpha_bar"] / tab["one_minus_alpha_bar"]  # dM/dL = -alpha_bar / (1 - alpha_bar)
    # 3. L through b: sum_{t >= s} gL_t, a reversed cumulative sum
    gb -= numpy.cumsum(gL[1:][::-1])[::-1] / alpha                  # L_t = sum_{s<=t} log(1 - b_s)
    return numpy.concatenate([[0.0], gb])


def scatter_by_t(t, per_example, T):
    """Sum per-example gradients into per-time tables, ``out[name][s] = sum_{n: t_n = s} g_n``.

    ``bincount`` with weights does the scatter-add without ``np.add.at``.
    Returns a dict of float64 ndarrays of shape (T + 1,) on the backend of ``t``.
    """
    xp = array_module(t)
    return {k: xp.bincount(t, weights=g, minlength=T + 1) for k, g in per_example.items()}


def add_grads(a, b):
    """Sum two dicts of per-time gradients key by key (a key in one only is kept)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] + v if k in out else v
    return out
