"""The paper's two toy data sets, generated in NumPy (§3.1.1, §3.1.2).

Generators take a ``numpy.random.Generator`` and return host arrays; the
caller moves them to a backend.  Held-out data comes from another seed.
"""
import numpy

from .validation import check_positive_int

# Per-coordinate mean and standard deviation of the raw swiss roll below,
# u ~ U(1.5 pi, 4.5 pi), x = (u cos u, u sin u), computed by trapezoid quadrature over ``u`` in
# `swiss_roll_moments()`; fixed constants so that every data set, training or
# held-out, is standardized identically (Table 1: unit variance per coordinate).
U_LOW, U_HIGH = 1.5 * numpy.pi, 4.5 * numpy.pi


def swiss_roll_moments():
    """Exact mean and std per coordinate of the raw roll, by quadrature of ``u ~ U(U_LOW, U_HIGH)``."""
    u = numpy.linspace(U_LOW, U_HIGH, 2_000_001)
    pts = numpy.stack([u * numpy.cos(u), u * numpy.sin(u)], axis=1)
    w = numpy.full(u.size, 1.0)
    w[0] = w[-1] = 0.5                                    # trapezoid rule
    w /= w.sum()
    mean = w @ pts
    std = numpy.sqrt(w @ (pts - mean) ** 2)
    return mean, std


SWISS_ROLL_MEAN, SWISS_ROLL_STD = swiss_roll_moments()


def swiss_roll(n, rng, noise=0.0, standardize=True):
    """Points on the 2-D swiss roll (§3.1.1, App. D.1.1).

    Parameters
    ----------
    n : int
        Number of points.
    rng : numpy.random.Generator
    noise : float
        Standard deviation of isotropic Gaussian noise added in the raw
        coordinates (0: points exactly on the roll, the default).
    standardize : bool
        Shift and scale by the fixed constants to zero mean, unit variance.

    Returns
    -------
    x0 : host ndarray of shape (n, 2), float64.
    """
    n = check_positive_int("n", n)
    if not noise >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise}")
    u = rng.uniform(U_LOW, U_HIGH, n)
    x0 = numpy.stack([u * numpy.cos(u), u * numpy.sin(u)], axis=1)
    if noise:
        x0 += noise * rng.standard_normal(x0.shape)
    return (x0 - SWISS_ROLL_MEAN) / SWISS_ROLL_STD if standardize else x0


def swiss_roll_angle_to_point(u, standardize=True):
    """Map roll angles ``u`` (shape (M,)) to points (M, 2), for drawing the roll itself."""
    x = numpy.stack([u * numpy.cos(u), u * numpy.sin(u)], axis=1)
    return (x - SWISS_ROLL_MEAN) / SWISS_ROLL_STD if standardize else x


HEARTBEAT_LENGTH, HEARTBEAT_PERIOD = 20, 5


def heartbeat(n, rng, length=HEARTBEAT_LENGTH, period=HEARTBEAT_PERIOD):
    """Binary 'heartbeat' sequences (§3.1.2): a 1 in every ``period``-th bin,
    the phase of the first pulse uniform over the first ``period`` bins.

    Returns a host ndarray of shape (n, length), float64 of 0s and 1s.  There
    are ``period`` equally likely sequences, so the true log likelihood is
    ``log2(1/period)`` bits per sequence.
    """
    n, length, period = (check_positive_int(k, v) for k, v in
                         (("n", n), ("length", length), ("period", period)))
    phase = rng.integers(0, period, n)                                # (n,)
    bins = numpy.arange(length)
    return ((bins[None, :] - phase[:, None]) % period == 0).astype(numpy.float64)


def exact_heartbeat_fraction(x, period=HEARTBEAT_PERIOD):
    """Fraction of the rows of binary ``x`` (n, length) that are exact heartbeats:
    a 1 in every ``period``-th bin from some phase in ``0..period-1``, 0 elsewhere
    (for length 20 and period 5, four ones).  Returns a float in [0, 1]."""
    x = numpy.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (n, length) array, got shape {x.shape}")
    period = check_positive_int("period", period)
    bins = numpy.arange(x.shape[1])
    patterns = (bins[None, :] - numpy.arange(period)[:, None]) % period == 0   # (period, length)
    exact = (x[:, None, :] == patterns[None]).all(axis=2).any(axis=1)          # (n,)
    return float(exact.mean())
