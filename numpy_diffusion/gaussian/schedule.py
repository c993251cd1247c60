"""The diffusion rates ``beta_t``: fixed baselines and learned schedules (§2.4.1).

Every array here has length ``T + 1`` and is indexed by the paper's time:
``beta[t]`` is ``beta_t`` and ``beta[0] = 0``; host float64 throughout.

``beta_1`` is a fixed small constant (§2.4.1).  ``beta_2..T`` either follow a
fixed baseline or are learned in one of two forms:

- ``'decrements'`` (the project's default): the log signal-to-noise ratio
  ``log_snr_t = log(alpha_bar_t / (1 - alpha_bar_t))`` falls from ``log_snr_1``
  (set by ``beta_1``) to ``log_snr_T`` (set by the baseline) in steps
  ``log_snr_t - log_snr_{t+1} = R softmax(c w)_t``: both ends stay fixed, the
  schedule stays monotone, and the optimizer only moves where the ``T - 1``
  steps are spent.  ``c`` (``rate_scale``) lets one Adam learning rate serve the
  network and the schedule.
- ``'bumps'``: a perturbation of the baseline through a bump basis in ``t``,
  ``beta_t = sigmoid(logit(baseline_t) + (G w)_t)``, so ``w = 0`` is the baseline
  and every ``beta_t`` stays in ``(0, 1)``.  This is the form of the reference
  code's ``generate_beta_arr`` (which never trains its coefficients), not one
  the paper gives.

**How the gradient reaches the schedule.**  §2.4.1 learns ``beta`` by gradient
ascent on ``K`` through the frozen noise: ``x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps`` depends on ``beta``, and so do the posterior, the
reverse kernel and the entropies of eq. (14).  Every one of those reads its
coefficients from the tables built from ``beta`` (:mod:`tables`), so the
gradient takes three steps back, each the backward of one forward::

    bound_backward, q_sample_backward  ->  dtables  (one (T + 1,) array per table read)
    tables_backward                    ->  dbeta    (T + 1,)
    schedule_backward                  ->  dw       (the learned coefficients)

The first line gathers what each example contributed at its own ``t``: the
posterior's coefficients (:func:`forward.q_posterior_backward`), the reverse
kernel's (:func:`reverse.p_mean_logvar_backward`), the entropies'
(:mod:`bound`), and ``x_t``'s (:func:`forward.q_sample_backward`, fed by the
bound's direct ``dx_t`` plus the network's input gradient).
:meth:`GaussianDiffusion.loss_and_grads <numpy_diffusion.gaussian.model.GaussianDiffusion.loss_and_grads>`
runs the four in that order.
"""
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy

from ..backend import to_host
from ..nn.readout import bump_basis
from ..validation import ScheduleError, check_choice, check_positive_int

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
        first = numpy.log1p(-cfg.beta_1) - numpy.log(cfg.beta_1)   # log SNR at t = 1
        body = beta_from_log_snr(first + (cfg.log_snr_T - first) * (t - 1) / (T - 1))[1:]
    beta = numpy.concatenate([[0.0], body])
    beta[1] = cfg.beta_1                                            # §2.4.1: beta_1 fixed
    return beta


def log_snr(beta):
    """``log_snr_t = log(alpha_bar_t / (1 - alpha_bar_t))`` for ``t = 1..T``: host array (T,)."""
    L = numpy.cumsum(numpy.log1p(-beta[1:]))                        # log alpha_bar_t
    return L - numpy.log(-numpy.expm1(L))


def beta_from_log_snr(snr):
    """Inverse of :func:`log_snr`: ``snr`` (T,), decreasing log SNRs -> ``beta`` (T + 1,), ``beta[0] = 0``.

    ``log alpha_bar = log sigmoid(snr) = -softplus(-snr)`` and
    ``beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} = -expm1(L_t - L_{t-1})``.
    """
    L = numpy.concatenate([[0.0], -numpy.logaddexp(0.0, -snr)])     # log alpha_bar_t, t = 0..T
    return numpy.concatenate([[0.0], -numpy.expm1(numpy.diff(L))])


def init_schedule_params(cfg):
    """Initial learned coefficients ``w`` (host float64) that reproduce the baseline."""
    if cfg.learned_form == "bumps":
        return numpy.zeros(cfg.n_bumps)
    steps = -numpy.diff(log_snr(baseline_beta(cfg)))                 # log_snr_t - log_snr_{t+1} > 0
    return numpy.log(steps / steps.sum()) / cfg.rate_scale          # softmax(c w) = steps / R


class DecrementsCache(NamedTuple):
    beta: object                              # (T + 1,)
    snr: object                               # (T,) log_snr_1..T
    p: object                                 # (T - 1,) softmax(c w): the share of each step
    R: float                                  # log_snr_1 - log_snr_T, the fixed total fall
    c: float                                  # rate_scale


def _decrements_forward(cfg, w):
    """``'decrements'`` form: ``w`` (T - 1,) -> ``beta`` (T + 1,) and its cache."""
    snr0 = log_snr(baseline_beta(cfg))                              # the baseline's ends stay
    R = snr0[0] - snr0[-1]                                          # fixed total fall of log SNR
    logits = cfg.rate_scale * w
    e = numpy.exp(logits - logits.max())
    p = e / e.sum()                                                 # softmax(c w)
    snr = snr0[0] - numpy.concatenate([[0.0], numpy.cumsum(R * p)])  # log_snr_1 .. log_snr_T
    beta = beta_from_log_snr(snr)
    beta[1] = cfg.beta_1                                            # §2.4.1: beta_1 fixed (exactly)
    return beta, DecrementsCache(beta, snr, p, R, cfg.rate_scale)


def _decrements_backward(dbeta, cache):
    """Gradient of the ``'decrements'`` form with respect to ``w`` (T - 1,)."""
    beta, snr, p, R, c = cache
    alpha = 1 - beta
    dL = numpy.zeros(snr.size + 1)                                  # d/d log alpha_bar_t, t = 0..T
    dL[2:] -= alpha[2:] * dbeta[2:]                                 # d beta_t/dL_t = -alpha_t
    dL[1:-1] += alpha[2:] * dbeta[2:]                               # d beta_t/dL_{t-1} = alpha_t
    dsnr = dL[1:] * numpy.exp(-numpy.logaddexp(0.0, snr))           # dL/d snr = sigmoid(-snr)
    dsteps = -numpy.cumsum(dsnr[::-1])[::-1][1:]                    # snr_t = snr_1 - sum_{s<t} step_s
    dp = R * dsteps                                                 # step = R p
    return c * p * (dp - p @ dp)                                    # softmax Jacobian, logits = c w


class BumpsCache(NamedTuple):
    beta: object                              # (T + 1,)
    G: object                                 # (T + 1, J) the bump basis


def _bumps_forward(cfg, w):
    """``'bumps'`` form: ``w`` (J,) -> ``beta`` (T + 1,) and its cache."""
    beta = baseline_beta(cfg)
    G = bump_basis(cfg.T, cfg.n_bumps)                              # (T + 1, J)
    logit = numpy.log(beta[2:]) - numpy.log1p(-beta[2:]) + G[2:] @ w   # logit(baseline) + G w
    beta[2:] = numpy.exp(-numpy.logaddexp(0.0, -logit))             # sigmoid, full precision for logit << 0
    return beta, BumpsCache(beta, G)


def _bumps_backward(dbeta, cache):
    """Gradient of the ``'bumps'`` form with respect to ``w`` (J,)."""
    beta, G = cache
    dlogit = dbeta[2:] * beta[2:] * (1 - beta[2:])                  # sigmoid' = beta (1 - beta)
    return G[2:].T @ dlogit                                         # d(G w)/dw = G


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
    cache : DecrementsCache, BumpsCache, or None for a fixed schedule.

    Raises
    ------
    ScheduleError
        If ``w`` holds NaN or infinite values (a diverged run).
    """
    if not cfg.learn:
        return baseline_beta(cfg), None
    n = cfg.n_bumps if cfg.learned_form == "bumps" else cfg.T - 1
    if w is None or tuple(w.shape) != (n,):
        raise ValueError(f"a learned schedule needs its coefficients w of shape ({n},), "
                         f"got {None if w is None else tuple(w.shape)}")
    w = numpy.asarray(to_host(w), dtype=numpy.float64)
    if not numpy.isfinite(w).all():
        raise ScheduleError("the schedule's coefficients w hold NaN or infinite values")
    return _decrements_forward(cfg, w) if cfg.learned_form == "decrements" else _bumps_forward(cfg, w)


def schedule_backward(dbeta, cache):
    """Gradient with respect to ``w``: a host float64 ndarray of shape (J,) or (T - 1,)."""
    dbeta = numpy.asarray(to_host(dbeta), dtype=numpy.float64)
    if isinstance(cache, DecrementsCache):
        return _decrements_backward(dbeta, cache)
    return _bumps_backward(dbeta, cache)
