"""8-bit images as unit-variance data, and the units a bound on them is reported in.

Every image data set here (dead leaves, MNIST, a texture photograph) goes the same way:

1. grey levels ``q in {0..255}`` (8 bits per pixel);
2. dequantization (Theis et al. 2016): ``v = q + u``, ``u ~ U[0, 1)`` independent per
   pixel, so that ``v`` has a density on ``[0, 256)``;
3. one fixed affine map per data set, ``x0 = (v - shift) / scale``, two scalars that
   give the training pixels mean 0 and variance 1 (Table 1's "scaled by a constant").

A model's log likelihood or bound ``K`` (nats per image, on ``x0``) is then reported
two ways:

- the paper's bits per pixel on the unit-variance data, ``K / (D ln 2)``;
- negative log likelihood in bits per dimension of the 8-bit data.  The change of
  variables ``v = scale x0 + shift`` divides the density by ``scale`` per pixel,
  ``p_v(v) = p_x0(x0) / scale^D``, so ``-log2 p_v(v) / D = log2(scale) - K / (D ln 2)``;
  and by Jensen ``log P(q) >= E_u log p_v(q + u)`` (Theis et al. 2016), it bounds the
  negative log likelihood of the discrete 8-bit data.

The constants in closed form from the training grey levels.  With ``q`` drawn from
the training pixels' histogram and ``u`` independent of it,
``E[v] = E[q] + 1/2`` and ``Var[v] = Var[q] + 1/12``; :func:`fit_pixel_scale` returns
``shift = mean(q) + 1/2`` and ``scale = sqrt(var(q) + 1/12)`` (population moments over
every training pixel), the exact mean and standard deviation of the dequantized
training pixels, with no dequantization noise in the estimate.  Grey levels uniform
on 0..255 give ``shift = 128`` and ``scale = 256 / sqrt(12)``, dead leaves' constants.
"""
import math
from typing import NamedTuple

import numpy

from ..bits import LN2


class PixelScale(NamedTuple):
    """The fixed map between dequantized grey levels ``v`` and unit-variance data ``x0``:
    ``x0 = (v - shift) / scale``.  ``shift`` in grey levels, ``scale`` in grey levels per
    unit of ``x0``."""
    shift: float
    scale: float

    def dequantize(self, q, rng):
        """8-bit images to unit-variance data: ``x0 = (q + u - shift) / scale``, ``u ~ U[0, 1)``.

        Parameters
        ----------
        q : host ndarray of uint8, shape (n, ...) (each entry a grey level, one image per row)
        rng : numpy.random.Generator, for the dequantization noise ``u``

        Returns
        -------
        x0 : host float64 ndarray of shape (n, D), one flattened image per row.
        """
        v = q.astype(numpy.float64) + rng.uniform(size=q.shape)           # grey levels with a density
        return ((v - self.shift) / self.scale).reshape(q.shape[0], -1)

    def to_grey_levels(self, x0):
        """Unit-variance data back to grey levels ``v = scale x0 + shift`` (for display): float
        array shaped like ``x0``, in grey levels (0..256 for data; samples may stray outside)."""
        return self.scale * numpy.asarray(x0) + self.shift

    def nll_bits_per_dim(self, log_lik_nats, D):
        """A log likelihood or bound (nats per image on ``x0``) as negative log likelihood in bits
        per dimension of the 8-bit data: ``log2(scale) - K / (D ln 2)`` (change of variables
        ``v = scale x0 + shift``)."""
        return math.log2(self.scale) - bits_per_pixel(log_lik_nats, D)

    def data_ceiling_bits(self):
        """The most any model's log likelihood can give, bits per pixel of the unit-variance data,
        before the images' own entropy: ``log2(scale)``.

        The data is 8-bit images ``q`` spread uniformly over each grey level's bin, of width
        ``1 / scale`` in units of ``x0``, so its entropy per pixel is ``H(q) / D - log2(scale)``,
        and no model's expected ``log2 p(x0)``, nor a bound on it, exceeds minus that entropy:
        ``log2(scale) - H(q) / D <= log2(scale)`` (6.21 bits for dead leaves' scale).
        """
        return math.log2(self.scale)

    def beta_1_at_ceiling(self):
        """The largest ``beta_1`` whose first-step ceiling reaches the data's:
        :func:`first_step_ceiling_bits` ``=`` :meth:`data_ceiling_bits`, ``beta_1 = 1 / (2 pi e scale^2)``
        (1.07e-5 for dead leaves; the dequantization noise's own variance is ``1 / (12 scale^2)``,
        1.53e-5).  A smaller ``beta_1`` raises no ceiling that binds; a larger one lowers the bound's."""
        return 1.0 / (2 * math.pi * math.e * self.scale ** 2)


def fit_pixel_scale(q):
    """The constants that make dequantized grey levels ``q + u`` mean 0, variance 1, exactly.

    ``shift = mean(q) + 1/2``, ``scale = sqrt(var(q) + 1/12)`` over every entry of ``q``
    (``u ~ U[0, 1)`` adds mean 1/2 and variance 1/12, independently of ``q``).

    Parameters
    ----------
    q : host ndarray of uint8, any shape: the training grey levels.

    Returns
    -------
    PixelScale of two Python floats.
    """
    if getattr(q, "dtype", None) != numpy.uint8 or q.size == 0:
        raise ValueError(f"grey levels must be a non-empty uint8 array, got {getattr(q, 'dtype', type(q).__name__)}"
                         f" of shape {numpy.shape(q)}")
    counts = numpy.bincount(q.ravel(), minlength=256)
    levels = numpy.arange(counts.size, dtype=numpy.float64)
    p = counts / counts.sum()                                             # the grey-level histogram
    mean = float(p @ levels)
    var = float(p @ (levels - mean) ** 2)
    return PixelScale(mean + 0.5, math.sqrt(var + 1.0 / 12.0))


def bits_per_pixel(log_lik_nats, D):
    """A log likelihood or bound (nats per image on ``x0``) in the paper's unit: bits per pixel."""
    return log_lik_nats / (D * LN2)


def first_step_ceiling_bits(beta_1):
    """The most eq. (14) can give, bits per pixel, with the fixed first step ``beta_1``:
    ``-1/2 log2(2 pi e beta_1)``.

    Every KL term of eq. (14) is ``>= 0`` and ``H_q(X_T|X_0) <= H_p(X_T)`` (``1 - alpha_bar_T
    <= 1``), so ``K <= -H_q(X_1|X_0)``, which is ``-1/2 log(2 pi e beta_1)`` per pixel: the
    entropy of the first step's noise, which the bound charges whatever the network does.
    It rises by ``1/2 log2(10) = 1.66`` bits for every factor of 10 that ``beta_1`` falls.
    """
    return -0.5 * math.log2(2 * math.pi * math.e * beta_1)
