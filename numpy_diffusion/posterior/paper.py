"""Multiplying the model by a second distribution: ``p~(x_0) ∝ p(x_0) r(x_0)`` (§2.5, App. C).

The paper modifies every reverse step (eq. 22),

    p~(x_{t-1} | x_t) ∝ p(x_{t-1} | x_t) r_{t-1}(x_{t-1}),      t = T..1,

starting from ``p~(x_T) ∝ pi(x_T) r_T(x_T)``, with intermediate factors ``r_t``
chosen as ``r`` itself (eq. 23, ``'constant'``) or ``r^{(T-t)/T}`` (§2.5.4,
``'annealed'``).  Every ``r_t`` here is a Gaussian observation of ``x_t`` on the
observed coordinates, ``r_t(x_t) = N(c_t y; x_t, 1/prec_t)`` per coordinate:

- ``'constant'``   ``c_t = 1``, ``prec_t = 1/sigma_d^2``               (eq. 23);
- ``'annealed'``   ``c_t = 1``, ``prec_t = (T - t) / (T sigma_d^2)``   (§2.5.4; ``prec_T = 0``: ``r_T = 1``);
- ``'diffused'``   ``r_t(x_t) = N(y; sqrt(alpha_bar_t) x_t, 1 - alpha_bar_t + sigma_d^2)``, i.e.
  ``c_t = 1/sqrt(alpha_bar_t)``, ``prec_t = alpha_bar_t / (1 - alpha_bar_t + sigma_d^2)``: the
  likelihood of ``y`` given ``x_t`` were the rest of the chain the forward kernel reversed
  (exact for ``N(0, I)`` data); the project's addition.  ``prec_T ≈ 0`` and, for a delta,
  ``1/prec_1 ≈ beta_1``, the width of the last step (eq. 44).

All three end at ``r_0 = r``.  ``sigma_d = 0`` is a delta (inpainting, ``prec = inf``):
the observed coordinates are held at their values.  A reverse kernel is a diagonal
Gaussian, so each product is exact and coordinate-wise (eq. 22); the normalizer of
each product is kept for the sequential Monte Carlo sampler (:mod:`smc`).
A smooth ``r`` known by its log-gradient shifts the mean instead (Table App.1, App. C).

Even for Gaussians the modified chain is not ``p~``: its end point is biased
(:func:`forward_kernel_chain_moments` gives the closed form).  :mod:`smc` corrects it.
"""
import math
import numbers

import numpy

from ..backend import array_module, to_device, to_host
from ..validation import check_array, check_choice, check_positive_int

CHOICES = ("constant", "annealed", "diffused")
LOG_2PI = math.log(2 * math.pi)


def r_schedule(tables, sigma_d, choice):
    """The intermediate factors ``r_t`` as Gaussian observations of ``x_t``.

    Parameters
    ----------
    tables : dict from :func:`numpy_diffusion.gaussian.tables.tables_forward` (any backend)
    sigma_d : float, observation noise standard deviation (``0``: a delta)
    choice : ``'constant'`` (eq. 23), ``'annealed'`` (§2.5.4) or ``'diffused'``

    Returns
    -------
    c, prec : host float64 ndarrays of shape (T + 1,), index ``t``: ``r_t(x_t) ∝
    N(c_t y; x_t, 1/prec_t)``; ``prec_t = 0`` means ``r_t = 1``, ``prec_t = inf`` a delta.
    """
    check_choice("choice of intermediate r", choice, CHOICES)
    alpha_bar = numpy.asarray(to_host(tables["alpha_bar"]), dtype=numpy.float64)
    T, s2 = alpha_bar.shape[0] - 1, float(sigma_d) ** 2
    t = numpy.arange(T + 1)
    with numpy.errstate(divide="ignore"):
        if choice == "diffused":                                          # y ~ sqrt(alpha_bar_t) x_t: the marginal, reversed
            return 1.0 / numpy.sqrt(alpha_bar), alpha_bar / ((1 - alpha_bar) + s2)
        power = numpy.ones(T + 1) if choice == "constant" else (T - t) / T  # eq. (23) / r^{(T-t)/T}
        prec = numpy.where(power > 0, power / s2, 0.0) if s2 > 0 else numpy.where(power > 0, numpy.inf, 0.0)
    return numpy.ones(T + 1), prec


def normal_logpdf(x, mu, var):
    """Elementwise ``log N(x; mu, var)`` (nats)."""
    xp = array_module(x, mu, var)
    return -0.5 * (LOG_2PI + xp.log(var) + (x - mu) ** 2 / var)


def gaussian_product(mu, var, y_t, prec, m):
    """``N(x; mu, var) · N(y_t; x, 1/prec)`` on observed coordinates, exactly (eq. 22).

    Parameters
    ----------
    mu, var : float64 ndarrays of shape (B, N, D), the reverse kernel ``p(x_{t-1} | x_t)``
    y_t : ndarray of shape (B, 1, D), the observation as seen at ``t - 1`` (``c_{t-1} y``)
    prec : float, precision of ``r_{t-1}`` (``0``: none; ``inf``: a delta)
    m : float64 ndarray of shape (B, 1, D), 1 on observed coordinates, else 0

    Returns
    -------
    mu_r, var_r : ndarrays of shape (B, N, D), the modified kernel ``p~(x_{t-1} | x_t)``
    log_Z : ndarray of shape (B, N), ``log ∫ p(x | x_t) r_{t-1}(x) dx`` (nats)
    """
    xp = array_module(mu)
    if prec == 0:
        return mu, var, xp.zeros(mu.shape[:2])
    if math.isinf(prec):                                                     # delta: held at y (§2.5.3)
        log_Z = (m * normal_logpdf(y_t, mu, var)).sum(axis=2)
        return xp.where(m > 0, y_t, mu), var * (1 - m), log_Z
    var_r = 1.0 / (1.0 / var + prec * m)                                     # precisions add
    mu_r = var_r * (mu / var + prec * m * y_t)
    log_Z = (m * normal_logpdf(y_t, mu, var + 1.0 / prec)).sum(axis=2)
    return mu_r, var_r, log_Z


def log_r(x, y_t, prec, m):
    """``log r_t(x_t)`` summed over observed coordinates, shape (B, N); 0 where ``prec = 0``."""
    xp = array_module(x)
    if prec == 0:
        return xp.zeros(x.shape[:2])
    return (m * normal_logpdf(y_t, x, xp.full_like(x, 1.0 / prec))).sum(axis=2)


def reverse_kernel(model, params, x, t):
    """Mean and variance of ``p(x_{t-1} | x_t)`` for ``x`` of shape (B, N, D).

    ``t = T + 1`` gives ``pi = N(0, I)`` (eq. 4, the start of the chain); ``t = 2..T``
    the learned kernel (Table App.1); ``t = 1`` the fixed last step (App. B.2, eq. 44).
    """
    xp, T = array_module(x), model.T
    tables = model.tables(params)
    if t == T + 1:
        return xp.zeros_like(x), xp.ones_like(x)
    if t == 1:
        return float(tables["sqrt_alpha"][1]) * x, xp.full_like(x, float(tables["beta"][1]))
    mu, logvar = model.p_mean_logvar(params, x.reshape(-1, x.shape[2]), t)
    return mu.reshape(x.shape), xp.exp(logvar).reshape(x.shape)


def check_observation(model, params, y, mask=None, sigma_d=None):
    """Validate ``y`` (D,) or (B, D), ``mask`` (D,) or like ``y`` (True: observed), ``sigma_d > 0``.

    Returns ``(y (B, 1, D), m (B, 1, D) float64, squeeze)`` on the params' backend.
    """
    D, xp = model.D, model.backend(params)[0]
    check_array("observation y", y)
    if y.ndim not in (1, 2) or y.shape[-1] != D:
        raise ValueError(f"observation y must have shape ({D},) or (B, {D}), got {tuple(y.shape)}")
    squeeze, y = y.ndim == 1, to_device(y, xp).astype(xp.float64).reshape(-1, 1, D)
    if sigma_d is not None and not (isinstance(sigma_d, numbers.Real) and 0 < sigma_d < math.inf):
        raise ValueError(f"sigma_d must be a finite noise standard deviation > 0, got {sigma_d!r}")
    m = xp.ones_like(y)
    if mask is not None:
        check_array("mask", mask)
        if mask.dtype.kind != "b" or mask.shape not in ((D,), (y.shape[0], D)):
            raise ValueError(f"mask must be a boolean array of shape ({D},) or {(y.shape[0], D)} "
                             f"(True: observed), got dtype {mask.dtype} shape {tuple(mask.shape)}")
        m = m * to_device(mask, xp).reshape(-1, 1, D)
    return y, m, squeeze


def _modified_chain(model, params, y, m, c, prec, n, rng, shift=None):
    """The paper's modified reverse chain: ``x_T ~ p~(x_T)``, then eq. (22) for ``t = T..1``.

    ``shift(mu, var, t) -> mu`` replaces the Gaussian product for a smooth ``r``.
    Returns ``x0`` of shape (B, n, D).
    """
    xp = array_module(y)
    T, (B, _, D) = model.T, y.shape
    x = xp.zeros((B, n, D))
    for t in range(T + 1, 0, -1):                                         # t = T + 1: the start, pi
        mu, var = reverse_kernel(model, params, x, t)
        if shift is not None:
            mu = shift(mu, var, t - 1)                                    # Table App.1
        else:
            mu, var, _ = gaussian_product(mu, var, c[t - 1] * y, prec[t - 1], m)   # eq. (22)
        x = mu + xp.sqrt(var) * xp.asarray(rng.standard_normal((B, n, D)))
    return x


def _out(x, squeeze):
    return x[0] if squeeze else x


def denoise_sample(model, params, y, sigma_d, n, rng, choice="constant", mask=None):
    """Samples of the paper's modified chain for ``r(x) = N(y; x, sigma_d^2 I)`` (§2.5.3, eq. 22).

    Parameters
    ----------
    model : GaussianDiffusion;  params : its parameters
    y : ndarray of shape (D,) or (B, D), observations (one posterior per row)
    sigma_d : float > 0, observation noise standard deviation (data units)
    n : int, samples per observation;  rng : numpy.random.Generator
    choice : ``'constant'`` (eq. 23), ``'annealed'`` (``r^{(T-t)/T}``) or ``'diffused'``
    mask : bool ndarray of shape (D,) or (B, D), the observed coordinates (default: all)

    Returns
    -------
    x0 : float64 ndarray of shape (n, D) for a 1-D ``y``, else (B, n, D)
    """
    y, m, squeeze = check_observation(model, params, y, mask, sigma_d)
    c, prec = r_schedule(model.tables(params), sigma_d, choice)
    return _out(_modified_chain(model, params, y, m, c, prec, check_positive_int("n", n), rng), squeeze)


def inpaint_sample(model, params, y, mask, n, rng, choice="constant"):
    """Samples of the paper's inpainting: observed coordinates held at ``y`` (a delta ``r``, Fig. 5).

    ``mask`` (D,) or like ``y``: True where observed; ``y`` elsewhere is ignored.  With
    ``'constant'`` ``x_T`` is held too; with ``'annealed'`` from ``t = T - 1`` on.
    Shapes as :func:`denoise_sample`; observed coordinates of ``x0`` equal ``y`` exactly.
    """
    if mask is None:
        raise ValueError("inpainting needs a boolean mask of the observed coordinates, got None")
    y, m, squeeze = check_observation(model, params, y, mask)
    c, prec = r_schedule(model.tables(params), 0.0, choice)
    return _out(_modified_chain(model, params, y, m, c, prec, check_positive_int("n", n), rng), squeeze)


def smooth_sample(model, params, grad_log_r, n, rng, choice="constant"):
    """Samples for a smooth ``r`` given by ``grad_log_r(x (M, D)) -> (M, D)`` (Table App.1, App. C).

    Each step's mean moves by ``f_Sigma ∇log r_{t-1}`` evaluated at ``f_mu`` (eq. 61); with
    ``'annealed'``, ``∇log r_t = ((T - t)/T) ∇log r``.  Returns ``x0`` of shape (n, D).
    """
    check_choice("choice of intermediate r", choice, CHOICES[:2])
    n, T, D = check_positive_int("n", n), model.T, model.D
    xp = model.backend(params)[0]
    power = (lambda s: 1.0) if choice == "constant" else (lambda s: (T - s) / T)

    def shift(mu, var, s):                                                # eq. (61)
        return mu + var * power(s) * grad_log_r(mu.reshape(-1, D)).reshape(mu.shape)
    y = xp.zeros((1, 1, D))
    return _modified_chain(model, params, y, y, None, None, n, rng, shift)[0]


def forward_kernel_chain_moments(tables, y, sigma_d, choice, *, smooth=False):
    """Closed-form end point of the modified chain when every kernel is the forward one.

    For ``p(x_{t-1} | x_t) = N(sqrt(alpha_t) x_t, beta_t)`` (a zero network in the
    ``'reference'`` parameterization; ``p(x_0) = N(0, 1)`` exactly) and a scalar
    ``r(x) = N(y; x, sigma_d^2)``, each modified step is ``x' = k x + shift + sqrt(var) eps``:
    the exact product (eq. 22) or, with ``smooth``, the mean shift of Table App.1.
    Returns ``(mean, variance)`` of ``x_0`` as floats; compare ``N(y/(1+s2), s2/(1+s2))``.
    """
    c, prec = r_schedule(tables, sigma_d, choice)
    beta = numpy.asarray(to_host(tables["beta"]), dtype=numpy.float64)
    mean, variance = 0.0, 0.0                                             # of x_t, as t falls
    for t in range(beta.shape[0], 0, -1):                                 # t = T + 1: pi
        scale, kernel_var = (0.0, 1.0) if t == beta.shape[0] else (math.sqrt(1 - beta[t]), beta[t])
        gain = kernel_var * prec[t - 1]                                   # the kernel's variance over r's
        if smooth:                                                        # Table App.1: mean shift
            k, shift, var = scale * (1 - gain), gain * c[t - 1] * y, kernel_var
        else:                                                             # eq. (22): exact product
            k, shift, var = scale / (1 + gain), gain * c[t - 1] * y / (1 + gain), kernel_var / (1 + gain)
        mean, variance = k * mean + shift, k * k * variance + var
    return float(mean), float(variance)
