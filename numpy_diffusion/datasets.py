"""The paper's two toy data sets, generated in NumPy (§3.1.1, §3.1.2).

Generators take a ``numpy.random.Generator`` and return host arrays; the
caller moves them to a backend.  Held-out data comes from another seed.
"""
import numpy

from .validation import check_positive_int

# The raw roll: u ~ U(1.5 pi, 4.5 pi), x = (u cos u, u sin u).  Every data set,
# training or held-out, is standardized by the same fixed constants, the roll's
# exact per-coordinate mean and standard deviation: unit variance per coordinate, as
# Table 1 asks of the data (its caption says "scaled by a constant"; the README lists
# the per-coordinate scaling among the departures).  The range of u is the usual one,
# that of scikit-learn's ``make_swiss_roll``; the paper does not give its own.
U_LOW, U_HIGH = 1.5 * numpy.pi, 4.5 * numpy.pi


def swiss_roll_moments():
    """Exact mean and standard deviation per coordinate of the raw roll, in closed form.

    With ``u ~ U(a, b)``: ``E[u cos u] = [cos u + u sin u]_a^b / (b - a)``,
    ``E[u sin u] = [sin u - u cos u]_a^b / (b - a)`` and
    ``E[u^2 cos^2 u], E[u^2 sin^2 u] = [u^3 / 6 +- (u^2 sin 2u / 4 + u cos 2u / 4 - sin 2u / 8)]_a^b / (b - a)``.
    """
    def span(f):
        return (f(U_HIGH) - f(U_LOW)) / (U_HIGH - U_LOW)
    mean = numpy.array([span(lambda u: numpy.cos(u) + u * numpy.sin(u)),
                        span(lambda u: numpy.sin(u) - u * numpy.cos(u))])
    cube = span(lambda u: u ** 3 / 6)
    wave = span(lambda u: u ** 2 * numpy.sin(2 * u) / 4 + u * numpy.cos(2 * u) / 4 - numpy.sin(2 * u) / 8)
    second = numpy.array([cube + wave, cube - wave])
    return mean, numpy.sqrt(second - mean ** 2)


SWISS_ROLL_MEAN, SWISS_ROLL_STD = swiss_roll_moments()


def swiss_roll(n, rng, *, noise=0.0, standardize=True):
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


def swiss_roll_angle_to_point(u, *, standardize=True):
    """Map roll angles ``u`` (shape (M,)) to points (M, 2), for drawing the roll itself."""
    x = numpy.stack([u * numpy.cos(u), u * numpy.sin(u)], axis=1)
    return (x - SWISS_ROLL_MEAN) / SWISS_ROLL_STD if standardize else x



def on_roll_fraction(x, within=0.05, n_curve=5000, chunk=512):
    """Fraction of the rows of ``x`` (n, 2), standardized coordinates, that lie within
    ``within`` of the noiseless roll (a sample-quality measure; the roll has no width).

    The distance is to the nearest of ``n_curve`` points evenly spaced in angle on the
    standardized roll (5,000 are at most 4e-3 apart, so a point at distance 0.05 from the
    curve reads at most 4e-5 farther).  Returns a float in [0, 1].
    """
    x = numpy.asarray(x, dtype=numpy.float64)
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty (n, 2) array, got shape {x.shape}")
    curve = swiss_roll_angle_to_point(numpy.linspace(U_LOW, U_HIGH, check_positive_int("n_curve", n_curve)))
    near = [((x[s:s + chunk, None, :] - curve[None]) ** 2).sum(axis=2).min(axis=1) <= within ** 2
            for s in range(0, x.shape[0], check_positive_int("chunk", chunk))]      # (chunk, n_curve) each
    return float(numpy.concatenate(near).mean())

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
