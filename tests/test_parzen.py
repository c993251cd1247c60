"""The Parzen-window estimate: against a direct computation, on a case with a known answer,
the width chosen on validation points, and Table 2's units."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.image import parzen
from strategies import seeds


def parzen_direct(x, samples, sigma):
    """log (1/M) sum_m N(x; s_m, sigma^2 I), with every difference x - s_m formed."""
    D = x.shape[1]
    log_k = (-0.5 * ((x[:, None, :] - samples[None, :, :]) / sigma) ** 2).sum(axis=2) \
        - D * math.log(sigma * math.sqrt(2 * math.pi))                       # (N, M)
    return np.logaddexp.reduce(log_k, axis=1) - math.log(samples.shape[0])


@given(seed=seeds, D=st.integers(1, 6), M=st.integers(1, 9), chunk=st.sampled_from([1, 5, 2 ** 24]))
def test_equals_the_direct_computation(seed, D, M, chunk):
    rng = np.random.default_rng(seed)
    x, samples = rng.normal(size=(7, D)) * 2, rng.normal(size=(M, D))
    sigmas = (0.05, 0.3, 1.0, 4.0)
    got = parzen.parzen_log_likelihood(x, samples, sigmas, chunk_elements=chunk)
    assert got.shape == (4, 7)
    for k, sigma in enumerate(sigmas):
        np.testing.assert_allclose(got[k], parzen_direct(x, samples, sigma), rtol=1e-10, atol=1e-9)


def test_many_samples_give_the_smoothed_density():
    """Samples of N(mu, s^2 I) make the window's mixture N(x; mu, (s^2 + sigma^2) I) as M grows.
    The estimate is a mean of M kernel values, so its log errs by about its relative standard
    deviation ``sqrt((E[k^2] / E[k]^2 - 1) / M)``, known in closed form:
    ``k^2 = (2 pi sigma^2)^-D (pi sigma^2)^(D/2) N(x; s, sigma^2/2 I)``.  Tolerance: 5 of those."""
    rng = np.random.default_rng(0)
    D, M, s, sigma, mu = 3, 200_000, 1.0, 0.7, np.array([0.5, -1.0, 2.0])
    samples = mu + s * rng.normal(size=(M, D))
    x = mu + rng.normal(size=(20, D)) * 1.2
    got = parzen.parzen_log_likelihood(x, samples, [sigma])[0]
    r2 = ((x - mu) ** 2).sum(axis=1)
    log_gauss = lambda var: -0.5 * r2 / var - 0.5 * D * math.log(2 * math.pi * var)   # noqa: E731
    want = log_gauss(s ** 2 + sigma ** 2)
    log_k2 = -D * math.log(2 * math.pi * sigma ** 2) + 0.5 * D * math.log(math.pi * sigma ** 2) \
        + log_gauss(s ** 2 + sigma ** 2 / 2)                               # log E[k^2]
    rel_sd = np.sqrt((np.exp(log_k2 - 2 * want) - 1) / M)
    assert np.all(np.abs(got - want) < 5 * rel_sd)
    unsmoothed = log_gauss(s ** 2)                                         # the answer without the window
    assert np.abs(unsmoothed - want).mean() > 4 * (5 * rel_sd).max()       # the test has teeth


def test_chosen_width_maximizes_the_validation_likelihood():
    rng = np.random.default_rng(1)
    samples, valid = rng.normal(size=(300, 4)), rng.normal(size=(50, 4))
    sigma, mean_ll = parzen.choose_sigma(samples, valid)
    direct = [parzen_direct(valid, samples, s).mean() for s in parzen.SIGMAS]
    np.testing.assert_allclose(mean_ll, direct, rtol=1e-10)
    assert sigma == parzen.SIGMAS[int(np.argmax(direct))]
    assert 0 < int(np.argmax(direct)) < 9                                  # an interior maximum, not an edge


def test_memorized_points_choose_the_narrowest_window():
    samples = np.random.default_rng(2).uniform(size=(40, 10))
    assert parzen.choose_sigma(samples, samples[:5])[0] == parzen.SIGMAS[0]


def test_grid_is_goodfellows():
    np.testing.assert_allclose(parzen.SIGMAS, np.logspace(-1, 0, 10), rtol=1e-15)


def test_report_is_in_nats_and_bits_per_image():
    rng = np.random.default_rng(3)
    samples, valid, test = rng.uniform(size=(100, 8)), rng.uniform(size=(30, 8)), rng.uniform(size=(40, 8))
    r = parzen.parzen_report(samples, valid, test)
    ll = parzen_direct(test, samples, r["sigma"])
    assert r["sigma"] == parzen.choose_sigma(samples, valid)[0]
    assert math.isclose(r["log_lik_nats"], ll.mean(), rel_tol=1e-10)
    assert math.isclose(r["log_lik_nats_stderr"], ll.std(ddof=1) / math.sqrt(40), rel_tol=1e-8)
    assert math.isclose(r["log_lik_bits"], r["log_lik_nats"] / math.log(2), rel_tol=1e-12)
    assert math.isclose(r["log_lik_bits_stderr"], r["log_lik_nats_stderr"] / math.log(2), rel_tol=1e-12)
    assert len(r["valid_log_lik_nats"]) == 10


def test_table2_bits_are_goodfellows_nats_over_ln2():
    """Table 2's adversarial-net row, 325 ± 2.9 bits, is Goodfellow et al.'s 225 ± 2 nats."""
    assert round(225 / math.log(2)) == 325 and round(2 / math.log(2), 1) == 2.9


@pytest.mark.parametrize("x, samples, sigmas, message", [
    (np.zeros((2, 3)), np.zeros((4, 2)), [1.0], "same D"),
    (np.zeros(3), np.zeros((4, 3)), [1.0], "must be 2-D"),
    (np.zeros((2, 3)), np.zeros((0, 3)), [1.0], "M >= 1"),
    (np.zeros((2, 3)), np.zeros((4, 3)), [0.0], "widths > 0"),
    (np.zeros((2, 3)), np.zeros((4, 3)), [], "widths > 0"),
    (np.zeros((2, 3)), np.zeros((4, 3)), [float("nan")], "widths > 0"),
])
def test_bad_input_is_refused(x, samples, sigmas, message):
    with pytest.raises(ValueError, match=message):
        parzen.parzen_log_likelihood(x, samples, sigmas)


@pytest.mark.gpu
def test_cupy_gives_the_numpy_numbers():
    """Float64 on both sides, different reduction orders: 1e-10 relative."""
    from numpy_diffusion.backend import get_backend
    cp = get_backend("cupy")
    rng = np.random.default_rng(5)
    x, samples = rng.uniform(size=(300, 50)), rng.uniform(size=(400, 50))
    want = parzen.parzen_log_likelihood(x, samples, parzen.SIGMAS, chunk_elements=4000)
    got = parzen.parzen_log_likelihood(cp.asarray(x), cp.asarray(samples), parzen.SIGMAS, chunk_elements=4000)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, want, rtol=1e-10)
