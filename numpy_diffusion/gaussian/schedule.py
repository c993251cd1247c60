"""The diffusion rates ``beta_t``: fixed baselines and learned schedules (§2.4.1).

Every array here has length ``T + 1`` and is indexed by the paper's time:
``beta[t]`` is ``beta_t`` and ``beta[0] = 0``; host float64 throughout.

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

The tables derived from ``beta`` (Table App.1) are built in :mod:`tables`.
"""
from dataclasses import asdict, dataclass

import numpy

from ..backend import to_host
from ..nn.readout import bump_basis
from ..validation import check_choice, check_positive_int

BASELINES = ("reference", "geometric", "linear", "logsnr")
LEARNED_FORMS = ("bumps", "decrements")


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
