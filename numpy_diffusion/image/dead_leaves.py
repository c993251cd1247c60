"""Dead leaves images (§3.2, Table 1), their units, and a full-covariance Gaussian baseline.

The dead leaves model (Jeulin 1997; Lee, Mumford & Huang 2001): discs at uniform
positions with radius density ``p(r) ∝ r^-3`` on ``[r_min, r_max]`` (equal area
in every octave of sizes: the images look alike at every scale), each disc one
grey level, painted in order with earlier discs hiding later ones, until every
pixel is covered.  The paper used Theis et al. (2012)'s images, which are not
public; these are generated here, so results are compared against baselines on
the same images, not against the paper's numbers alone.

Pipeline and units.  Grey levels are drawn uniform on [0, 1) and quantized to 8 bits
``q in {0..255}``; dequantization (Theis et al. 2016) adds ``u ~ U[0, 1)`` so that
``v = q + u`` has a density; fixed constants map ``v`` to unit variance,
``x0 = (v - SHIFT) / SCALE``.  Every pixel's ``v`` is exactly uniform on
[0, 256), so ``SHIFT = 128`` and ``SCALE = 256 / sqrt(12)`` make each pixel zero
mean and unit variance exactly (Table 1's convention), with no estimate.

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

from ..bits import LN2
from ..validation import check_positive_int

SHIFT = 128.0                                   # grey levels
SCALE = 256.0 / math.sqrt(12.0)                 # grey levels per unit of x0
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


def dequantize(q, rng):
    """8-bit images to unit-variance data: ``x0 = (q + u - SHIFT) / SCALE``, ``u ~ U[0, 1)``.

    Parameters
    ----------
    q : host ndarray of uint8, shape (n, size, size) (or any shape: each entry a grey level)
    rng : numpy.random.Generator, for the dequantization noise ``u``

    Returns
    -------
    x0 : host float64 ndarray of shape (n, size * size), one image per row.
    """
    v = q.astype(numpy.float64) + rng.uniform(size=q.shape)           # grey levels with a density
    return ((v - SHIFT) / SCALE).reshape(q.shape[0], -1)


def to_grey_levels(x0):
    """Unit-variance data back to grey levels ``v = SCALE x0 + SHIFT`` (for display): float
    array shaped like ``x0``, in grey levels (0..256 for data; samples may stray outside)."""
    return SCALE * numpy.asarray(x0) + SHIFT


def flat_neighbour_fraction(x0, size, tol=SAME_GREY):
    """The share of horizontally or vertically adjacent pixel pairs whose grey levels differ by
    less than ``tol`` (default :data:`SAME_GREY`, 8 of 256): high inside flat discs, low in
    texture or noise.  A number for the sharp, flat regions a sample should share with the data.

    ``x0`` (n, size^2) unit-variance images; returns a float in [0, 1].
    """
    v = to_grey_levels(x0).reshape(-1, size, size)
    pairs = numpy.concatenate([numpy.abs(numpy.diff(v, axis=1)).ravel(), numpy.abs(numpy.diff(v, axis=2)).ravel()])
    return float((pairs < tol).mean())


def bits_per_pixel(log_lik_nats, D):
    """A log likelihood or bound (nats per image on ``x0``) in the paper's unit: bits per pixel."""
    return log_lik_nats / (D * LN2)


def nll_bits_per_dim(log_lik_nats, D):
    """The same quantity as negative log likelihood in bits per dimension of the 8-bit data:
    ``log2(SCALE) - K / (D ln 2)`` (change of variables ``v = SCALE x0 + SHIFT``)."""
    return math.log2(SCALE) - bits_per_pixel(log_lik_nats, D)


def first_step_ceiling_bits(beta_1):
    """The most eq. (14) can give, bits per pixel, with the fixed first step ``beta_1``:
    ``-1/2 log2(2 pi e beta_1)``.

    Every KL term of eq. (14) is ``>= 0`` and ``H_q(X_T|X_0) <= H_p(X_T)`` (``1 - alpha_bar_T
    <= 1``), so ``K <= -H_q(X_1|X_0)``, which is ``-1/2 log(2 pi e beta_1)`` per pixel: the
    entropy of the first step's noise, which the bound charges whatever the network does.
    It rises by ``1/2 log2(10) = 1.66`` bits for every factor of 10 that ``beta_1`` falls.
    """
    return -0.5 * math.log2(2 * math.pi * math.e * beta_1)


def data_ceiling_bits(scale=SCALE):
    """The most any model's log likelihood can give, bits per pixel of the unit-variance data,
    before the images' own entropy: ``log2(scale)``.

    The data is 8-bit images ``q`` spread uniformly over each grey level's bin, of width
    ``1 / scale`` in units of ``x0``, so its entropy per pixel is ``H(q) / D - log2(scale)``,
    and no model's expected ``log2 p(x0)``, nor a bound on it, exceeds minus that entropy:
    ``log2(scale) - H(q) / D <= log2(scale)`` (6.21 bits for :data:`SCALE`).
    """
    return math.log2(scale)


def beta_1_at_ceiling(scale=SCALE):
    """The largest ``beta_1`` whose first-step ceiling reaches the data's:
    :func:`first_step_ceiling_bits` ``=`` :func:`data_ceiling_bits`, ``beta_1 = 1 / (2 pi e scale^2)``
    (1.07e-5 for :data:`SCALE`; the dequantization noise's own variance is ``1 / (12 scale^2)``,
    1.53e-5).  A smaller ``beta_1`` raises no ceiling that binds; a larger one lowers the bound's."""
    return 1.0 / (2 * math.pi * math.e * scale ** 2)


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
