"""Dead leaves: the generator paints what its docstring says; units and the Gaussian baseline."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.image import dead_leaves as dl
from strategies import seeds


def paint_one_naive(size, rng, r_min, r_max):
    """One image, disc by disc and pixel by pixel, drawing from ``rng`` in the generator's order."""
    grey = np.full((size, size), -1)
    while (grey < 0).any():
        cy, cx = rng.uniform(-r_max, size + r_max, (2, 1))[:, 0]
        r = dl._radii(1, r_min, r_max, rng)[0]
        level = dl.quantize(rng.uniform(size=1))[0]
        for i in range(size):
            for j in range(size):
                if grey[i, j] < 0 and (i + 0.5 - cy) ** 2 + (j + 0.5 - cx) ** 2 <= r * r:
                    grey[i, j] = level                                  # the first disc wins
    return grey


@given(seed=seeds, size=st.integers(3, 9), r_min=st.sampled_from([0.7, 1.5, 3.0]))
def test_generator_paints_first_disc_on_top(seed, size, r_min):
    q = dl.dead_leaves(1, size, np.random.default_rng(seed), r_min=r_min)
    assert q.shape == (1, size, size) and q.dtype == np.uint8
    np.testing.assert_array_equal(q[0], paint_one_naive(size, np.random.default_rng(seed), r_min, float(size)))


def test_generator_is_seeded_and_chunks_do_not_matter_for_shape():
    a = dl.dead_leaves(7, 8, np.random.default_rng(3), chunk=3)
    np.testing.assert_array_equal(a, dl.dead_leaves(7, 8, np.random.default_rng(3), chunk=3))
    assert a.shape == (7, 8, 8)


def test_radii_follow_r_to_the_minus_3():
    """Empirical CDF against F(r) = (r_min^-2 - r^-2) / (r_min^-2 - r_max^-2) (Kolmogorov distance)."""
    r = np.sort(dl._radii(20000, 1.0, 16.0, np.random.default_rng(0)))
    F = (1 - r ** -2) / (1 - 16.0 ** -2)
    assert r.min() >= 1.0 and r.max() <= 16.0
    assert np.abs(F - (np.arange(r.size) + 0.5) / r.size).max() < 1.6 / math.sqrt(r.size)   # KS 99 %+


def test_pixels_are_uniform_grey_levels_and_unit_variance():
    """Every pixel's grey level is uniform on 0..255, so the fixed constants give mean 0, variance 1."""
    q = dl.dead_leaves(3000, 4, np.random.default_rng(1))
    x0 = dl.dequantize(q, np.random.default_rng(2))
    assert x0.shape == (3000, 16)
    counts = np.bincount(q[:, 0, 0], minlength=256)
    assert counts.sum() == 3000 and abs(x0[:, 0].mean()) < 0.06 and abs(x0[:, 0].var() - 1) < 0.06
    np.testing.assert_allclose(dl.to_grey_levels(x0).reshape(q.shape) // 1, q)   # u in [0, 1) keeps q


def test_quantize_edges():
    np.testing.assert_array_equal(dl.quantize([0.0, 1 / 256, 0.999999, 1.0]), [0, 1, 255, 255])


def test_units():
    D = 100
    assert math.isclose(dl.L_NULL_BITS, -2.047, abs_tol=5e-4)          # Table 1's L_null per pixel
    # the uniform density on [0, 256)^D: on x0 its cube has side 256 / SCALE = sqrt(12)
    K_uniform = -D * math.log(math.sqrt(12))
    assert math.isclose(dl.nll_bits_per_dim(K_uniform, D), 8.0, rel_tol=1e-12)
    assert math.isclose(dl.bits_per_pixel(D * math.log(2), D), 1.0)


@given(seed=seeds)
def test_gaussian_baseline_is_the_density(seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(3, 3))
    x = rng.normal(size=(50, 3)) @ np.linalg.cholesky(A @ A.T + np.eye(3)).T + rng.normal(size=3)  # cond. <~ 10^2
    mean, chol = dl.fit_gaussian(x)
    cov = np.cov(x.T, bias=True)
    np.testing.assert_allclose(chol @ chol.T, cov, rtol=1e-10, atol=1e-12)
    y = rng.normal(size=(4, 3))
    d = y - mean
    want = -0.5 * np.einsum("nd,de,ne->n", d, np.linalg.inv(cov), d) \
        - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
    np.testing.assert_allclose(dl.gaussian_log_likelihood(y, mean, chol), want, rtol=1e-9)


def test_rejects_bad_radii():
    with pytest.raises(ValueError, match="r_min"):
        dl.dead_leaves(1, 4, np.random.default_rng(0), r_min=5.0, r_max=2.0)


def test_flat_neighbour_fraction_counts_pairs_within_the_tolerance():
    """A flat image is all flat pairs; a left half black and right half white 4 x 4 image has
    one unequal pair per row among its 24 pairs; steps of 7.9 and 8.1 grey levels fall on
    either side of the tolerance; independent noise of s.d. 16 grey levels has a share
    ``erf(8 / 32) = 0.276`` (pair differences have s.d. ``16 sqrt 2``)."""
    grey = lambda v: (np.asarray(v, dtype=float) - dl.SHIFT) / dl.SCALE      # noqa: E731
    assert dl.flat_neighbour_fraction(np.full((1, 16), 0.3), 4) == 1.0
    halves = np.tile(np.repeat([0.0, 255.5], 2), 4)[None]                  # grey levels of a 4 x 4 image
    assert dl.flat_neighbour_fraction(grey(halves), 4) == 20 / 24
    assert dl.flat_neighbour_fraction(grey([[100, 107.9, 100, 107.9]]), 2) == 1.0
    assert dl.flat_neighbour_fraction(grey([[100, 108.1, 100, 108.1]]), 2) == 0.5
    noise = np.random.default_rng(0).normal(size=(400, 256)) * 16 / dl.SCALE
    assert abs(dl.flat_neighbour_fraction(noise, 16) - math.erf(0.25)) < 0.005


@pytest.mark.parametrize("beta_1", [1e-3, 1e-4, 1e-5, 1e-6])
def test_first_step_ceiling_bounds_eq14(beta_1):
    """The ceiling is eq. (14)'s entropy terms with every KL at zero, per pixel: no network beats it."""
    from numpy_diffusion.gaussian.bound import entropy_sum, entropy_terms
    from numpy_diffusion.gaussian.schedule import ScheduleConfig, schedule_forward
    from numpy_diffusion.gaussian.tables import tables_forward
    for baseline in ("linear", "reference"):
        beta = schedule_forward(ScheduleConfig(T=1000, beta_1=beta_1, baseline=baseline, beta_T=0.02))[0]
        best = entropy_sum(entropy_terms(tables_forward(beta)[0], 1)) / math.log(2)   # KL terms all zero
        assert best <= dl.first_step_ceiling_bits(beta_1)
        assert best == pytest.approx(dl.first_step_ceiling_bits(beta_1), abs=1e-3)  # H_q(X_T) ~ H_p(X_T)
    assert dl.first_step_ceiling_bits(beta_1 / 10) - dl.first_step_ceiling_bits(beta_1) == pytest.approx(
        0.5 * math.log2(10))


def test_data_ceiling_and_the_beta_1_where_they_meet():
    """Minus the entropy of a grey level's bin (uniform, width 1/SCALE) in bits, measured by Monte
    Carlo on dequantized pixels: -E log2 p(x | q) = log2(1 / SCALE)."""
    q = np.full((1, 4000), 77, dtype=np.uint8)
    x = dl.dequantize(q, np.random.default_rng(0))
    lo = (77 - dl.SHIFT) / dl.SCALE
    assert np.all((x >= lo) & (x < lo + 1 / dl.SCALE))                       # one bin, width 1 / SCALE
    assert dl.data_ceiling_bits() == pytest.approx(math.log2(dl.SCALE))
    b = dl.beta_1_at_ceiling()
    assert dl.first_step_ceiling_bits(b) == pytest.approx(dl.data_ceiling_bits(), rel=1e-12)
    assert dl.first_step_ceiling_bits(2 * b) < dl.data_ceiling_bits() < dl.first_step_ceiling_bits(b / 2)
