"""An asymptotically exact sampler of ``p~(x_0) ∝ p(x_0) r(x_0)``: sequential Monte Carlo
over the reverse chain (the project's addition to §2.5).

Intermediate targets over partial paths, with the paper's ``r_t`` (:mod:`paper`),

    gamma_t(x_{T:t}) = pi(x_T) prod_{s > t} p(x_{s-1} | x_s) · r_t(x_t),      r_0 = r,

so the last target's ``x_0``-marginal is exactly ``p(x_0) r(x_0)`` whatever the ``r_t``.
Particles move by the paper's modified step (eq. 22), ``p~(x_{t-1} | x_t) =
p(x_{t-1} | x_t) r_{t-1}(x_{t-1}) / Z_{t-1}(x_t)``, so the importance weight of a move,
target over proposal,

    gamma_{t-1} / (gamma_t · p~(x_{t-1} | x_t)) = Z_{t-1}(x_t) / r_t(x_t),

depends on ``x_t`` only: particles are weighted and (when the effective sample size
``ESS = 1 / sum w^2`` falls below ``ess_threshold · N``) resampled, systematically,
before they move (a fully adapted particle filter).

Inpainting is handled exactly on the observed coordinates: a delta at ``x_0`` only.
Holding ``x_t`` at ``y`` for ``t >= 1`` as the paper does would put all proposals on a
set the target path ``p(x_{0:T})`` gives no mass, so the intermediate ``r_t`` must keep
a width there; the ``'diffused'`` choice does (:func:`paper.r_schedule`), and its
width at ``t = 1`` is about ``beta_1``, matched to the last step (eq. 44).  A small
observation noise instead would blur the target and leave weights as sharp as ``sigma_d``.

Which ``r_t`` matters.  For a kernel ``N(a x_t, v)`` and ``r_t = N(c_t y; x_t, 1/prec_t)`` the
log weight is quadratic in ``x_t`` with curvature ``prec_t - a^2 / (v + 1/prec_{t-1})``; where it
is positive the weights grow without bound and can have infinite variance.  Eq. (23)'s
constant ``r_t`` does this (on the Gaussian test its SMC is consistent but useless at any
practical ``N``, whatever the ESS says); ``'annealed'`` and ``'diffused'`` keep it near or
below zero.  ``'annealed'`` is the default for denoising.
"""
import math

from ..backend import array_module
from .paper import check_observation, gaussian_product, log_r, r_schedule, reverse_kernel
from ..validation import check_positive_int


def draw_one(w, rng):
    """One index per row, drawn with probability ``w``: one particle per observation is one
    sample of that observation's posterior.  (A systematic comb's first tooth is not such a
    draw: it falls in the first ``1/N`` of the mass and favours the first particles.)

    Parameters
    ----------
    w : float64 ndarray of shape (B, N), weights (each row's sum positive; normalized or not)
    rng : numpy.random.Generator, one uniform per row

    Returns
    -------
    idx : int ndarray of shape (B,)
    """
    xp = array_module(w)
    cum = xp.cumsum(w, axis=1)
    u = xp.asarray(rng.uniform(size=(w.shape[0], 1))) * cum[:, -1:]      # uniform on [0, row sum)
    return xp.minimum((cum <= u).sum(axis=1), w.shape[1] - 1)               # first k with cum_k > u


def systematic_resample(w, rng):
    """Systematic resampling within each row.

    Parameters
    ----------
    w : float64 ndarray of shape (B, N), normalized weights (rows sum to 1)
    rng : numpy.random.Generator, one uniform per row

    Returns
    -------
    idx : int ndarray of shape (B, N), indices into each row; ``N`` stays ``N``.
    """
    xp = array_module(w)
    B, N = w.shape
    u = (xp.asarray(rng.uniform(size=(B, 1))) + xp.arange(N)) / N         # one stratified comb per row
    cum = xp.cumsum(w, axis=1)
    cum[:, -1] = 1.0                                                      # no round-off past the end
    off = xp.arange(B)[:, None]
    idx = xp.searchsorted((cum + off).ravel(), (u + off).ravel(), side="right").reshape(B, N)
    return xp.clip(idx - off * N, 0, N - 1)


def _reweight(log_w, inc, log_Z):
    """Add a weight increment to normalized log weights (B, N); renormalize per row and
    accumulate ``log Z`` (B,) by the row's ``log sum exp``.  Returns ``(log_w, log_Z, w)``."""
    xp = array_module(log_w)
    unnormalized = log_w + inc
    top = unnormalized.max(axis=1, keepdims=True)
    log_sum = top + xp.log(xp.exp(unnormalized - top).sum(axis=1, keepdims=True))   # (B, 1)
    log_w = unnormalized - log_sum
    return log_w, log_Z + log_sum[:, 0], xp.exp(log_w)


def _smc(model, params, y, m, c, prec, N, rng, ess_threshold):
    """The particle system; returns ``(x0 (B, N, D), w (B, N), ess (T + 1, B), log_Z (B,), n_resampled)``."""
    xp = array_module(y)
    T, (B, _, D) = model.T, y.shape
    x = xp.zeros((B, N, D))
    log_w, log_Z = xp.full((B, N), -math.log(N)), xp.zeros(B)
    ess, n_resampled = xp.zeros((T + 1, B)), 0
    for t in range(T + 1, 0, -1):                                         # t = T + 1: the start, pi
        mu, var = reverse_kernel(model, params, x, t)
        mu, var, log_Z_step = gaussian_product(mu, var, c[t - 1] * y, prec[t - 1], m)   # eq. (22)
        inc = log_Z_step - (log_r(x, c[t] * y, prec[t], m) if t <= T else 0.0)   # Z_{t-1}(x_t) / r_t(x_t)
        log_w, log_Z, w = _reweight(log_w, inc, log_Z)
        ess[t - 1] = 1.0 / (w ** 2).sum(axis=1)                          # ESS of target t - 1
        low = ess[t - 1] < ess_threshold * N
        if bool(low.any()):
            idx = xp.where(low[:, None], systematic_resample(w, rng), xp.arange(N))
            take = lambda a: xp.take_along_axis(a, idx[:, :, None], axis=1)   # noqa: E731
            mu, var = take(mu), take(var)
            log_w = xp.where(low[:, None], -math.log(N), log_w)
            n_resampled += int(low.sum())
        x = mu + xp.sqrt(var) * xp.asarray(rng.standard_normal((B, N, D)))
    return x, xp.exp(log_w), ess, log_Z, n_resampled


def _check_smc(n_particles, ess_threshold):
    if isinstance(n_particles, int) and not isinstance(n_particles, bool) and n_particles < 1:
        raise ValueError(f"n_particles must be an integer >= 1, got {n_particles}: "
                         "sequential Monte Carlo needs at least one particle")
    N = check_positive_int("n_particles", n_particles)
    if not 0 <= ess_threshold <= 1:
        raise ValueError(f"ess_threshold is a fraction of the particle count in [0, 1], got {ess_threshold}")
    return N


def _result(x, w, ess, log_Z, n_resampled, squeeze):
    out = {"x0": x, "w": w, "ess": ess.T, "log_Z": log_Z, "n_resampled": n_resampled}
    return {k: v[0] if squeeze and k != "n_resampled" else v for k, v in out.items()}


def smc_denoise(model, params, y, sigma_d, n_particles, rng, choice="annealed", mask=None,
                ess_threshold=0.5):
    """Weighted particles of ``p~(x_0) ∝ p(x_0) N(y; x_0, sigma_d^2 I)``, exact as ``N`` grows.

    Parameters
    ----------
    model, params : the trained :class:`GaussianDiffusion` and its parameters
    y : ndarray of shape (D,) or (B, D), observations (one independent particle system per row)
    sigma_d : float > 0, observation noise standard deviation (data units)
    n_particles : int >= 1;  rng : numpy.random.Generator
    choice : intermediate ``r_t``: ``'constant'`` (eq. 23), ``'annealed'`` or ``'diffused'``
    mask : bool ndarray of shape (D,) or (B, D), observed coordinates (default: all)
    ess_threshold : float in [0, 1], resample a row when ``ESS < ess_threshold · N``

    Returns
    -------
    dict with (for a 1-D ``y``, without the leading ``B``):
    ``x0`` (B, N, D) particles; ``w`` (B, N) normalized weights; ``ess`` (B, T + 1),
    ``ess[:, t]`` the effective sample size of the target at ``x_t`` (before resampling);
    ``log_Z`` (B,) the estimate of ``log ∫ p(x_0) r(x_0) dx_0`` (nats; ``log p(y)``);
    ``n_resampled`` (int) the number of row-steps that resampled.
    """
    N = _check_smc(n_particles, ess_threshold)
    y, m, squeeze = check_observation(model, params, y, mask, sigma_d)
    c, prec = r_schedule(model.tables(params), sigma_d, choice)
    return _result(*_smc(model, params, y, m, c, prec, N, rng, ess_threshold), squeeze)


def smc_inpaint(model, params, y, mask, n_particles, rng, ess_threshold=0.5):
    """Weighted particles of ``p(x_0 | x_0[mask] = y[mask])``, exact as ``N`` grows.

    The delta acts at ``x_0`` only; intermediate ``r_t`` are ``'diffused'`` (module docstring).
    Shapes as :func:`smc_denoise`; ``log_Z`` estimates the log density of ``y[mask]`` under ``p``.
    """
    if mask is None:
        raise ValueError("inpainting needs a boolean mask of the observed coordinates, got None")
    N = _check_smc(n_particles, ess_threshold)
    y, m, squeeze = check_observation(model, params, y, mask)
    c, prec = r_schedule(model.tables(params), 0.0, "diffused")
    return _result(*_smc(model, params, y, m, c, prec, N, rng, ess_threshold), squeeze)
