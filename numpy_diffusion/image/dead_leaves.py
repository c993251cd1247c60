"""Dead leaves images (§3.2, Table 1), their units, and a full-covariance Gaussian baseline.

The dead leaves model (Jeulin 1997; Lee, Mumford & Huang 2001): discs at uniform
positions with radius density ``p(r) ∝ r^-3`` on ``[r_min, r_max]`` (equal area
in every octave of sizes: the images look alike at every scale), each disc one
grey level, painted in order with earlier discs hiding later ones, until every
pixel is covered.  The paper used Theis et al. (2012)'s images, which are not
public; these are generated here, so results are compared against baselines on
the same images, not against the paper's numbers alone.

Pipeline and units (those of every 8-bit data set here: :mod:`.pixels`).  Grey levels
are drawn uniform on [0, 1) and quantized to 8 bits ``q in {0..255}``; dequantization
(Theis et al. 2016) adds ``u ~ U[0, 1)`` so that ``v = q + u`` has a density; fixed
constants map ``v`` to unit variance, ``x0 = (v - SHIFT) / SCALE``.  Every pixel's
``v`` is exactly uniform on [0, 256), so ``SHIFT = 128`` and ``SCALE = 256 / sqrt(12)``
make each pixel zero mean and unit variance exactly (Table 1's convention), with no
estimate.

A bound ``K`` (nats per image, on ``x0``) is reported two ways:

- the paper's: bits per pixel on the unit-variance data, ``K / (D ln 2)``, beside
  ``L_null = -1/2 log2(2 pi e)``, the standard normal's per pixel;
- negative log likelihood in bits per dimension of the 8-bit data: the change of
  variables ``v = SCALE x0 + SHIFT`` divides the density by ``SCALE`` per pixel,
  so ``-log2 p(v) / D = log2(SCALE) - K / (D ln 2)``; and by Jensen
  ``log P(q) >= E_u log p(q + u)`` (Theis et al. 2016), it bounds the discrete NLL.
"""
import math

import numpy

from ..validation import check_positive_int
from .pixels import PixelScale, bits_per_pixel, first_step_ceiling_bits  # noqa: F401  (named here too)

SHIFT = 128.0                                   # grey levels
SCALE = 256.0 / math.sqrt(12.0)                 # grey levels per unit of x0
UNITS = PixelScale(SHIFT, SCALE)                # = fit_pixel_scale of grey levels uniform on 0..255
# The pipeline's three steps with dead leaves' constants (see :class:`.pixels.PixelScale`):
# dequantize(q, rng) -> x0 (n, D);  to_grey_levels(x0) -> v;  nll_bits_per_dim(K, D) -> bits/dim.
dequantize, to_grey_levels, nll_bits_per_dim = UNITS.dequantize, UNITS.to_grey_levels, UNITS.nll_bits_per_dim
data_ceiling_bits, beta_1_at_ceiling = UNITS.data_ceiling_bits, UNITS.beta_1_at_ceiling   # 6.21 bits; 1.07e-5
L_NULL_BITS = -0.5 * math.log2(2 * math.pi * math.e)   # per pixel, N(0, 1) on unit-variance data
SAME_GREY = 8.0                                 # grey levels: two pixels closer than this look alike


def _radii(n, r_min, r_max, rng):
    """Radii with density ∝ r^-3 on [r_min, r_max], by inverting the CDF
    ``F(r) = (r_min^-2 - r^-2) / (r_min^-2 - r_max^-2)``."""
    u = rng.uniform(size=n)
    return (r_min ** -2 - u * (r_min ** -2 - r_max ** -2)) ** -0.5


def dead_leaves(n, size, rng, r_min=1.0, r_max=None, chunk=512):
    """``n`` dead-leaves images, quantized to 8 bits.

    Disc centres are uniform on the square ``[-r_max, size + r_max]^2`` (every disc
    that can touch the image), pixel ``(i, j)`` is at ``(i + 1/2, j + 1/2)`` and
    belongs to a disc if within its radius; each pixel keeps the first disc
    that covers it.  Discs are drawn one per image per round, so the images of
    a chunk are painted together; a chunk ends when all its images are covered.

    Parameters
    ----------
    n, size : int
        Number of images; side in pixels.
    rng : numpy.random.Generator
    r_min, r_max : float
        Smallest and largest radius, in pixels (``r_max`` defaults to ``size``).
    chunk : int
        Images painted together (memory ``chunk * size^2``).

    Returns
    -------
    q : host ndarray of shape (n, size, size), uint8 grey levels.
    """
    n, size = check_positive_int("n", n), check_positive_int("size", size)
    r_max = float(size if r_max is None else r_max)
    if not 0 < r_min <= r_max:
        raise ValueError(f"need 0 < r_min <= r_max, got r_min={r_min}, r_max={r_max}")
    return numpy.concatenate([_paint(min(chunk, n - s), size, r_min, r_max, rng)
                              for s in range(0, n, chunk)])


def _paint(n, size, r_min, r_max, rng):
    centre = numpy.arange(size) + 0.5                                 # pixel centres  (size,)
    grey = numpy.full((n, size, size), numpy.nan)                     # NaN: not yet covered
    todo = numpy.arange(n)
    while todo.size:
        m = todo.size
        cy, cx = rng.uniform(-r_max, size + r_max, (2, m))            # (m,) each
        r, level = _radii(m, r_min, r_max, rng), quantize(rng.uniform(size=m))
        d2 = (centre[None, :, None] - cy[:, None, None]) ** 2 \
            + (centre[None, None, :] - cx[:, None, None]) ** 2        # (m, size, size)
        sub = grey[todo]
        paint = (d2 <= r[:, None, None] ** 2) & numpy.isnan(sub)      # earlier discs hide later ones
        sub[paint] = numpy.broadcast_to(level[:, None, None], sub.shape)[paint]
        grey[todo] = sub
        todo = todo[numpy.isnan(sub).any(axis=(1, 2))]
    return grey.astype(numpy.uint8)


def quantize(v):
    """Grey levels ``v`` in [0, 1) to 8 bits: ``q = floor(256 v)``, clipped to 0..255."""
    return numpy.clip(numpy.floor(256 * numpy.asarray(v)), 0, 255).astype(numpy.uint8)


def flat_neighbour_fraction(x0, size, tol=SAME_GREY):
    """The share of horizontally or vertically adjacent pixel pairs whose grey levels differ by
    less than ``tol`` (default :data:`SAME_GREY`, 8 of 256): high inside flat discs, low in
    texture or noise.  A number for the sharp, flat regions a sample should share with the data.

    ``x0`` (n, size^2) unit-variance images; returns a float in [0, 1].
    """
    v = to_grey_levels(x0).reshape(-1, size, size)
    pairs = numpy.concatenate([numpy.abs(numpy.diff(v, axis=1)).ravel(), numpy.abs(numpy.diff(v, axis=2)).ravel()])
    return float((pairs < tol).mean())


def fit_gaussian(x0, ridge=0.0):
    """Maximum-likelihood full-covariance Gaussian: ``(mean (D,), cholesky factor (D, D))``.

    ``ridge`` adds ``ridge * I`` to the sample covariance (0: the plain estimate).
    """
    x0 = numpy.asarray(x0, dtype=numpy.float64)
    mean = x0.mean(axis=0)                                            # (D,)
    centred = x0 - mean                                               # (n, D)
    cov = centred.T @ centred / x0.shape[0] + ridge * numpy.eye(x0.shape[1])   # (D, D)
    return mean, numpy.linalg.cholesky(cov)


def gaussian_log_likelihood(x0, mean, chol):
    """``log N(x0; mean, L L^T)`` per row, in nats.  (n,)"""
    white = numpy.linalg.solve(chol, (numpy.asarray(x0) - mean).T)    # L^-1 (x - mean)   (D, n)
    half_logdet = numpy.log(numpy.diag(chol)).sum()                   # 1/2 log det(L L^T)
    D = mean.shape[0]
    return -0.5 * (white ** 2).sum(axis=0) - half_logdet - 0.5 * D * math.log(2 * math.pi)
