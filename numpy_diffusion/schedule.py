"""The diffusion rates ``beta_t`` and the tables derived from them (§2.4.1, Table App.1).

Every array here has length ``T + 1`` and is indexed by the paper's time:
``beta[t]`` is ``beta_t``, ``beta[0] = 0`` and ``alpha_bar[0] = 1``.  Tables are
always float64 and built with ``log1p``/``expm1``: with ``beta_1 = 1e-5`` the
quantity ``1 - alpha_bar_1`` would lose four digits as ``1 - prod(1 - beta)``.

``beta_1`` is a fixed small constant.  ``beta_2..T`` either follow a fixed
baseline or are learned (§2.4.1) in one of two forms:

- ``'bumps'``: a perturbation of the baseline through a bump basis in ``t``,
  ``beta_t = sigmoid(logit(baseline_t) + (B w)_t)``, so ``w = 0`` is the
  baseline and every ``beta_t`` stays in ``(0, 1)``;
- ``'decrements'``: the log signal-to-noise ratio
  ``lambda_t = log(alpha_bar_t / (1 - alpha_bar_t))`` falls from ``lambda_1``
  (set by ``beta_1``) to ``lambda_T`` (set by the baseline) in steps
  ``lambda_t - lambda_{t+1} = R softmax(c w)_t``: both ends stay fixed, the
  schedule stays monotone, and the optimizer only moves where the
  ``T - 1`` steps are spent.  ``c`` (``rate_scale``) lets one Adam learning
  rate serve the network and the schedule.
Tables are built on the host (they are ``O(T)``) and moved to the backend once.
"""
from dataclasses import asdict, dataclass

import numpy

from .backend import array_module, to_host
from .readout import bump_basis
from .validation import check_choice, check_positive_int

BASELINES = ("reference", "geometric", "linear", "logsnr")
LEARNED_FORMS = ("bumps", "decrements")
DIFFERENTIABLE = ("sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "log_one_minus_alpha_bar", "sqrt_alpha",
                  "sqrt_beta", "log_beta", "logit_beta", "log_beta_tilde", "post_coef_x0", "post_coef_xt")


@dataclass
class ScheduleConfig:
    """The forward-process schedule.

    Attributes
    ----------
    T : int           trajectory length, ``>= 2``.
    beta_1 : float    the fixed first rate, in ``(0, 1)``; sets the entropy ``H_q(X_1|X_0)``.
    baseline : str    ``'reference'`` (the authors' code: ``beta_t = 1 / linspace(T, 2, T)[t-1]``,
                      ending at 1/2), ``'geometric'`` (log-linear from ``beta_1`` to ``beta_T``)
                      ``'linear'`` (from ``beta_1`` to ``beta_T``) or ``'logsnr'`` (log
                      signal-to-noise ratio linear in ``t`` from ``beta_1``'s to ``log_snr_T``).
    beta_T : float    the last rate of the geometric and linear baselines, in ``(0, 1)``.
    log_snr_T : float the final ``log(alpha_bar_T / (1 - alpha_bar_T))`` of the logsnr baseline.
    learn : bool      learn ``w`` (``beta_2..T``) by gradient ascent on ``K`` (§2.4.1).
    learned_form : str  ``'bumps'`` or ``'decrements'`` (see the module docstring).
    n_bumps : int     number of bumps in the basis of the ``'bumps'`` form.
    rate_scale : float  ``c`` of the ``'decrements'`` form.
    """
    T: int = 40
    beta_1: float = 1e-5
    baseline: str = "reference"
    beta_T: float = 0.5
    log_snr_T: float = -4.0
    learn: bool = False
    learned_form: str = "bumps"
    n_bumps: int = 10
    rate_scale: float = 10.0

    def __post_init__(self):
        check_positive_int("T", self.T, 2)
        check_choice("baseline", self.baseline, BASELINES)
        check_choice("learned_form", self.learned_form, LEARNED_FORMS)
        if not self.rate_scale > 0:
            raise ValueError(f"rate_scale must be > 0, got {self.rate_scale}")
        check_positive_int("n_bumps", self.n_bumps)
        for name in ("beta_1", "beta_T"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
        if self.baseline == "logsnr" and not self.log_snr_T < numpy.log1p(-self.beta_1) - numpy.log(self.beta_1):
            raise ValueError(f"log_snr_T = {self.log_snr_T} must lie below log SNR at t = 1 "
                             f"(log((1 - beta_1) / beta_1) = {numpy.log((1 - self.beta_1) / self.beta_1):.3f})")

    def to_dict(self):
        return asdict(self)


def baseline_beta(cfg):
    """The baseline schedule, a host float64 array of shape ``(T + 1,)`` (``beta[0] = 0``)."""
    T, t = cfg.T, numpy.arange(1, cfg.T + 1, dtype=numpy.float64)
    if cfg.baseline == "reference":
        body = 1.0 / numpy.linspace(T, 2.0, T)                     # the reference code's baseline
    elif cfg.baseline == "geometric":
        body = cfg.beta_1 * (cfg.beta_T / cfg.beta_1) ** ((t - 1) / (T - 1))
    elif cfg.baseline == "linear":
        body = cfg.beta_1 + (cfg.beta_T - cfg.beta_1) * (t - 1) / (T - 1)
    else:
        lam_1 = numpy.log1p(-cfg.beta_1) - numpy.log(cfg.beta_1)   # log SNR at t = 1
        body = beta_from_log_snr(lam_1 + (cfg.log_snr_T - lam_1) * (t - 1) / (T - 1))[1:]
    beta = numpy.concatenate([[0.0], body])
    beta[1] = cfg.beta_1                                            # §2.4.1: beta_1 fixed
    return beta


def log_snr(beta):
    """``lambda_t = log(alpha_bar_t / (1 - alpha_bar_t))`` for ``t = 1..T``: host array (T,)."""
    L = numpy.cumsum(numpy.log1p(-beta[1:]))                        # log alpha_bar_t
    return L - numpy.log(-numpy.expm1(L))


def beta_from_log_snr(lam):
    """Inverse of :func:`log_snr`: ``lam`` (T,) decreasing -> ``beta`` (T + 1,), ``beta[0] = 0``.

    ``log alpha_bar = log sigmoid(lam) = -softplus(-lam)`` and
    ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} = -expm1(L_t - L_{t-1})``.
    """
    L = numpy.concatenate([[0.0], -numpy.logaddexp(0.0, -lam)])     # log alpha_bar_t, t = 0..T
    return numpy.concatenate([[0.0], -numpy.expm1(numpy.diff(L))])


def init_schedule_params(cfg):
    """Initial learned coefficients ``w`` (host float64) that reproduce the baseline."""
    if cfg.learned_form == "bumps":
        return numpy.zeros(cfg.n_bumps)
    steps = -numpy.diff(log_snr(baseline_beta(cfg)))                 # lambda_t - lambda_{t+1} > 0
    return numpy.log(steps / steps.sum()) / cfg.rate_scale          # softmax(c w) = steps / R


def _decrements_forward(cfg, w):
    """``'decrements'`` form: ``w`` (T - 1,) -> ``beta`` and the cache of its backward."""
    lam0 = log_snr(baseline_beta(cfg))
    R = lam0[0] - lam0[-1]                                          # fixed total fall of lambda
    a = cfg.rate_scale * w
    p = numpy.exp(a - a.max())
    p /= p.sum()                                                    # softmax(c w)
    lam = lam0[0] - numpy.concatenate([[0.0], numpy.cumsum(R * p)])  # lambda_1 .. lambda_T
    beta = beta_from_log_snr(lam)
    beta[1] = cfg.beta_1                                            # §2.4.1: beta_1 fixed (exactly)
    return beta, (beta, (lam, p, R, cfg.rate_scale))


def _decrements_backward(dbeta, cache):
    """Gradient of the ``'decrements'`` form with respect to ``w``."""
    beta, (lam, p, R, c) = cache
    alpha = 1 - beta
    dL = numpy.zeros(lam.size + 1)                                  # d/d log alpha_bar_t, t = 0..T
    dL[2:] -= alpha[2:] * dbeta[2:]                                 # d beta_t/dL_t = -alpha_t
    dL[1:-1] += alpha[2:] * dbeta[2:]                               # d beta_t/dL_{t-1} = alpha_t
    dlam = dL[1:] * numpy.exp(-numpy.logaddexp(0.0, lam))           # dL/dlambda = sigmoid(-lambda)
    dsteps = -numpy.cumsum(dlam[::-1])[::-1][1:]                    # lambda_t = lambda_1 - sum_{s<t} step_s
    dp = R * dsteps                                                 # step = R p
    return c * p * (dp - p @ dp)                                    # softmax Jacobian, a = c w


def schedule_basis(cfg):
    """Bump basis ``B`` of the learned perturbation, host array of shape ``(T + 1, J)``."""
    return bump_basis(cfg.T, cfg.n_bumps)


def schedule_forward(cfg, w=None):
    """``beta`` from the configuration and, when learned, the coefficients ``w``.

    Parameters
    ----------
    cfg : ScheduleConfig
    w : ndarray of shape (J,) or (T - 1,), or None
        Learned coefficients (any backend and dtype): ``n_bumps`` of them for
        the ``'bumps'`` form, ``T - 1`` for ``'decrements'``; required when ``cfg.learn``.

    Returns
    -------
    beta : host float64 ndarray of shape (T + 1,)
    cache : tuple ``(beta, form cache)`` for :func:`schedule_backward`.
    """
    beta = baseline_beta(cfg)
    if not cfg.learn:
        return beta, (beta, None)
    n = cfg.n_bumps if cfg.learned_form == "bumps" else cfg.T - 1
    if w is None:
        raise ValueError(f"a learned schedule needs its coefficients w of shape ({n},), got None")
    w = numpy.asarray(to_host(w), dtype=numpy.float64)
    if w.shape != (n,) or not numpy.isfinite(w).all():
        raise ValueError(f"schedule coefficients w must be finite with shape ({n},), got shape {w.shape}")
    if cfg.learned_form == "decrements":
        return _decrements_forward(cfg, w)
    B = schedule_basis(cfg)                                         # (T+1, J)
    a = numpy.log(beta[2:]) - numpy.log1p(-beta[2:]) + B[2:] @ w    # logit(baseline) + B w
    beta[2:] = numpy.exp(-numpy.logaddexp(0.0, -a))                 # sigmoid(a), full precision for a << 0
    return beta, (beta, B)


def schedule_backward(dbeta, cache):
    """Gradient with respect to ``w``: returns a host float64 ndarray of shape (J,)."""
    dbeta = numpy.asarray(to_host(dbeta), dtype=numpy.float64)
    if isinstance(cache[1], tuple):                                 # the 'decrements' form
        return _decrements_backward(dbeta, cache)
    beta, B = cache
    da = dbeta[2:] * beta[2:] * (1 - beta[2:])                      # sigmoid' = beta (1 - beta)
    return B[2:].T @ da                                             # d(B w)/dw = B


def check_beta(beta):
    """Check a schedule array: shape (T + 1,) with T >= 2, finite, beta[0] = 0, beta[1:] in (0, 1)."""
    beta = numpy.asarray(to_host(beta), dtype=numpy.float64)
    if beta.ndim != 1 or beta.shape[0] < 3:
        raise ValueError(f"beta must have shape (T + 1,) with T >= 2, got shape {beta.shape}")
    if not numpy.isfinite(beta).all():
        raise ValueError("beta contains NaN or infinite values; every beta_t must lie in (0, 1)")
    bad = numpy.flatnonzero((beta[1:] <= 0) | (beta[1:] >= 1)) + 1
    if bad.size:
        raise ValueError(f"beta_t must lie strictly between 0 and 1 for t = 1..T; "
                         f"t = {bad[0]} has beta_t = {float(beta[bad[0]])!r}")
    if beta[0] != 0:
        raise ValueError(f"beta[0] is unused and must be 0 (paper indexing), got {float(beta[0])!r}")
    return beta


def make_tables(beta, xp=numpy):
    """Every schedule table of Table App.1, float64, as ``xp`` arrays of shape (T + 1,).

    Entries at ``t = 0`` (and ``beta_tilde`` at ``t = 1``, where the posterior is a
    point mass) are the limits ``0`` or ``-inf``; they are never read by the bound.
    ``post_coef_x0`` and ``post_coef_xt`` are the posterior mean's coefficients.
    """
    beta = check_beta(beta)
    b = beta[1:]
    log_alpha = numpy.log1p(-b)                                     # log alpha_t
    L = numpy.cumsum(log_alpha)                                     # log alpha_bar_t
    M = numpy.log(-numpy.expm1(L))                                  # log(1 - alpha_bar_t)
    L0, M0 = numpy.concatenate([[0.0], L]), numpy.concatenate([[-numpy.inf], M])
    log_beta_tilde = M0[:-1] + numpy.log(b) - M                     # posterior variance, SPEC §2
    tab = {"beta": beta, "alpha": 1 - beta, "log_alpha": numpy.concatenate([[0.0], log_alpha]),
           "log_alpha_bar": L0, "alpha_bar": numpy.exp(L0), "one_minus_alpha_bar": -numpy.expm1(L0),
           "log_one_minus_alpha_bar": M0, "sqrt_alpha_bar": numpy.exp(0.5 * L0),
           "sqrt_one_minus_alpha_bar": numpy.sqrt(-numpy.expm1(L0)), "sqrt_alpha": numpy.sqrt(1 - beta),
           "sqrt_beta": numpy.sqrt(beta), "log_beta": numpy.concatenate([[-numpy.inf], numpy.log(b)]),
           "logit_beta": numpy.concatenate([[-numpy.inf], numpy.log(b) - log_alpha]),
           "log_beta_tilde": numpy.concatenate([[-numpy.inf], log_beta_tilde]),
           "post_coef_x0": numpy.concatenate([[0.0], numpy.exp(0.5 * L0[:-1] - M) * b]),
           "post_coef_xt": numpy.concatenate([[0.0], numpy.exp(0.5 * log_alpha + M0[:-1] - M)])}
    tab["beta_tilde"] = numpy.exp(tab["log_beta_tilde"])
    stacked = xp.asarray(numpy.stack(list(tab.values())))           # one transfer to the backend
    return {name: stacked[i] for i, name in enumerate(tab)}


def tables_backward(dtables, beta):
    """Chain gradients with respect to table entries back to ``beta``.

    Parameters
    ----------
    dtables : dict of name -> ndarray of shape (T + 1,)
        Gradients with respect to any of ``sqrt_alpha_bar``, ``sqrt_one_minus_alpha_bar``,
        ``log_one_minus_alpha_bar``, ``sqrt_alpha``, ``sqrt_beta``, ``log_beta``,
        ``logit_beta``, ``log_beta_tilde``, ``post_coef_x0``, ``post_coef_xt``
        (any backend; moved to the host in one transfer).
    beta : ndarray of shape (T + 1,)
        The schedule the tables were built from.

    Returns
    -------
    dbeta : host float64 ndarray of shape (T + 1,); ``dbeta[0] = 0``.  Every table
    is a function of ``beta_t`` and of ``L = log alpha_bar``, ``M = log(1 - alpha_bar)``
    at ``t`` and ``t - 1``; gradients collect in ``gb``, ``gL``, ``gM`` over ``t = 1..T``.
    """
    unknown = set(dtables) - set(DIFFERENTIABLE)
    if unknown:
        raise KeyError(f"no gradient rule for tables {sorted(unknown)}; known: {list(DIFFERENTIABLE)}")
    tab = {k: v[1:] for k, v in make_tables(beta).items()}          # host, t = 1..T
    names = list(dtables)
    stacked = to_host(array_module(*dtables.values()).stack([dtables[k] for k in names])) if names else ()
    d = {k: numpy.zeros_like(tab["beta"]) for k in DIFFERENTIABLE}
    d.update({k: numpy.asarray(g, dtype=numpy.float64)[1:] for k, g in zip(names, stacked)})
    b, a, c0, ct = tab["beta"], tab["alpha"], tab["post_coef_x0"], tab["post_coef_xt"]
    gL, gM = numpy.zeros(b.size + 1), numpy.zeros(b.size + 1)      # index t = 0..T
    gb = d["sqrt_beta"] / (2 * tab["sqrt_beta"])                    # d sqrt(b)/db = 1 / (2 sqrt(b))
    gb -= d["sqrt_alpha"] / (2 * tab["sqrt_alpha"])                 # d sqrt(1-b)/db = -1 / (2 sqrt(1-b))
    gb += d["log_beta"] / b                                         # d log(b)/db = 1/b
    gb += d["logit_beta"] / (b * a)                                 # d logit(b)/db = 1 / (b (1-b))
    gb += (d["log_beta_tilde"] + d["post_coef_x0"] * c0) / b        # d log beta_tilde/db = 1/b; dc0/db = c0/b
    gb -= d["post_coef_xt"] * ct / (2 * a)                          # dct/db = -ct / (2 (1-b))
    gL[1:] += d["sqrt_alpha_bar"] * tab["sqrt_alpha_bar"] / 2       # d exp(L/2)/dL = exp(L/2)/2
    gL[:-1] += d["post_coef_x0"] * c0 / 2                           # dc0/dL_{t-1} = c0/2
    gM[1:] += d["sqrt_one_minus_alpha_bar"] * tab["sqrt_one_minus_alpha_bar"] / 2  # d exp(M/2)/dM
    gM[1:] += d["log_one_minus_alpha_bar"]                          # dM/dM = 1
    gM[1:] -= d["log_beta_tilde"] + d["post_coef_x0"] * c0 + d["post_coef_xt"] * ct  # d/dM_t = -1, -c0, -ct
    gM[:-1] += d["log_beta_tilde"] + d["post_coef_xt"] * ct         # d/dM_{t-1} = 1, ct
    gL[1:] -= gM[1:] * tab["alpha_bar"] / tab["one_minus_alpha_bar"]  # dM/dL = -alpha_bar / (1 - alpha_bar)
    gb -= numpy.cumsum(gL[1:][::-1])[::-1] / a                      # L_t = sum_{s<=t} log(1 - b_s)
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
