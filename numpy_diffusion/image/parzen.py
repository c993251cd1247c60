"""Parzen-window log likelihood from a model's samples: Table 2's MNIST numbers.

Table 2 compares models on MNIST by the code Goodfellow et al. (2014) released with
adversarial nets (``parzen_ll.py``, by Yann Dauphin): put an isotropic Gaussian of
width ``sigma`` on each of ``M`` samples ``s_m`` of the model and score a test image
``x`` (``D`` pixels) under the mixture,

    log p(x) = log (1/M) sum_m N(x; s_m, sigma^2 I)
             = logmeanexp_m( -|x - s_m|^2 / (2 sigma^2) ) - D log(sigma sqrt(2 pi)).

That code's protocol, kept here: ``M = 10,000`` samples; pixels on the [0, 1] scale
``q / 255`` (pylearn2's MNIST; test images not dequantized); ``sigma`` chosen on the grid
``numpy.logspace(-1, 0, 10)`` by the mean log likelihood of 1,000 validation images,
the first 1,000 of training images 50,000..59,999 (its ``limit_size`` default); the
mean over the 10,000 test images reported with the standard error of the mean.  (It
divides by ``sqrt(N)`` the standard deviation with ``ddof=0``; here ``ddof=1``, a
relative difference of 5e-5 at ``N = 10,000``.)

Units.  Its numbers are in nats per image, the log of a density on ``[0, 1]^784``.
Table 2 gives them in bits, the same divided by ``ln 2``: adversarial nets' 225 ± 2
nats (Goodfellow et al.'s Table 1) is Table 2's 325 ± 2.9 bits, and the diffusion
model's 317 ± 2.7 bits is 220 ± 1.9 nats; the "perfect model", the same code with
training images as the samples, 349 ± 3.3 bits.  Bits per image, not per pixel.  The
bound ``K`` (nats per image on the unit-variance data) moves to this scale by a change
of variables, :func:`.mnist.bound_on_unit_interval`; it is then a log density in the
same unit, though of dequantized images, and a bound where this is an estimate.

What the number is worth (Theis, van den Oord & Bethge 2016): little.  In 784
dimensions 10,000 kernels cover the data too thinly for the estimate to approach the
log likelihood; it rewards samples close to test images, and a model can score well
with poor samples or poorly with good ones.  Theis et al. show a k-means model whose
centroids, used as the samples, score higher than training images do, so even the
"perfect model" row is no ceiling.  It is reported because the paper reports it,
beside the bound ``K``, a true lower bound on the log likelihood.

Memory: distances come from ``|x|^2 - 2 x.s + |s|^2`` (one matrix product per chunk of
test points), so a chunk holds ``(rows, M)`` numbers and never ``(rows, M, D)``; every
``sigma`` of the grid reuses the same distances.
"""
import math

from ..backend import array_module, to_host
from ..bits import LN2, standard_error

SIGMAS = tuple(10.0 ** (-1 + k / 9) for k in range(10))   # numpy.logspace(-1, 0, 10)
MODEL_SAMPLES = 10_000                                     # model samples in the mixture
SIGMA_VALIDATION_IMAGES = 1_000                            # the first 1,000 validation images score each width


def parzen_log_likelihood(x, samples, sigmas, *, chunk_elements=2 ** 24):
    """``log p(x)`` of each row of ``x`` under the Parzen window of ``samples``, for each width.

    Parameters
    ----------
    x : ndarray of shape (N, D), the points scored.
    samples : ndarray of shape (M, D), the kernel centres.  Either on the GPU (CuPy) puts
        the arithmetic there.
    sigmas : sequence of S floats > 0, kernel widths (same units as ``x``).
    chunk_elements : int
        About how many numbers a chunk's distance matrix holds (rows of ``x`` per chunk:
        ``chunk_elements // M``, at least one).

    Returns
    -------
    ll : host float64 ndarray of shape (S, N), nats.
    """
    xp = array_module(x, samples)
    x, samples = xp.asarray(x, dtype=xp.float64), xp.asarray(samples, dtype=xp.float64)
    sigmas = _check(x, samples, sigmas)
    rows = max(1, chunk_elements // samples.shape[0])
    s2 = (samples ** 2).sum(axis=1)                                        # |s_m|^2   (M,)
    parts = [_chunk(x[i:i + rows], samples, s2, sigmas, xp) for i in range(0, x.shape[0], rows)]
    return to_host(xp.concatenate(parts, axis=1))


def _chunk(x, samples, s2, sigmas, xp):
    """The (S, rows) log likelihoods of one chunk of test points."""
    d2 = (x ** 2).sum(axis=1)[:, None] - 2.0 * x @ samples.T + s2[None, :]   # |x - s|^2   (rows, M)
    d2 = xp.maximum(d2, 0.0)                                                  # rounding below zero
    D, M = x.shape[1], samples.shape[0]
    out = []
    for sigma in sigmas:
        a = -d2 / (2.0 * sigma ** 2)                                           # log kernel, unnormalized
        top = a.max(axis=1)                                                    # (rows,)
        lme = top + xp.log(xp.exp(a - top[:, None]).sum(axis=1)) - math.log(M)  # logmeanexp over samples
        out.append(lme - D * math.log(sigma * math.sqrt(2.0 * math.pi)))       # the normalizer of N(., sigma^2 I)
    return xp.stack(out)                                                       # (S, rows)


def _check(x, samples, sigmas):
    """Shapes agree and widths are positive; returns the widths as a tuple of floats."""
    if x.ndim != 2 or samples.ndim != 2 or x.shape[1] != samples.shape[1] or samples.shape[0] == 0:
        raise ValueError(f"x (N, D) and samples (M, D) must be 2-D with the same D and M >= 1, got "
                         f"{tuple(x.shape)} and {tuple(samples.shape)}")
    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas or not all(s > 0 and math.isfinite(s) for s in sigmas):
        raise ValueError(f"sigmas must be finite widths > 0, got {sigmas}")
    return sigmas


def choose_sigma(samples, x_valid, sigmas=SIGMAS):
    """The width of ``sigmas`` with the highest mean log likelihood of ``x_valid``.

    Returns ``(sigma, mean_ll)``: the chosen width (a float) and the mean validation log
    likelihood for each width, host (S,) nats.  Ties go to the first, as ``numpy.argmax``.
    """
    mean_ll = parzen_log_likelihood(x_valid, samples, sigmas).mean(axis=1)    # (S,)
    return float(tuple(sigmas)[int(mean_ll.argmax())]), mean_ll


def parzen_report(samples, x_valid, x_test, sigmas=SIGMAS):
    """Table 2's protocol: ``sigma`` chosen on ``x_valid``, then the test images scored.

    Parameters
    ----------
    samples : (M, D) the model's samples; x_valid : (V, D); x_test : (N, D); all on the
        same scale (for MNIST, pixels in [0, 1]: :func:`.mnist.unit_interval`).
    sigmas : the grid of widths.

    Returns
    -------
    dict of floats: ``sigma``, ``log_lik_nats`` and ``log_lik_nats_stderr`` (mean over test
    images and its standard error), the same in bits (``log_lik_bits``,
    ``log_lik_bits_stderr``), and ``valid_log_lik_nats`` (list, per width of ``sigmas``).
    """
    sigma, valid_ll = choose_sigma(samples, x_valid, sigmas)
    ll = parzen_log_likelihood(x_test, samples, [sigma])[0]                  # (N,) nats
    return {"sigma": sigma, "log_lik_nats": float(ll.mean()), "log_lik_nats_stderr": standard_error(ll),
            "log_lik_bits": float(ll.mean()) / LN2, "log_lik_bits_stderr": standard_error(ll) / LN2,
            "valid_log_lik_nats": valid_ll.tolist()}
