"""Binomial model: every bad input is refused before any work, with one line that names the
argument, what was wrong and what is allowed."""
import numpy as np
import pytest

from numpy_diffusion.binomial.model import BinomialDiffusion

from strategies import rng_from


def small_model():
    return BinomialDiffusion(D=4, T=10, pi=0.25, hidden=(5, 3), basis="identity", t_sampling="uniform")


def batch(N=3):
    """A valid ``(x0, t, u, weights)`` for :func:`small_model`."""
    rng = rng_from(0)
    return ((rng.random((N, 4)) < 0.3).astype(float), rng.integers(2, 11, N), rng.random((N, 4)),
            np.full(N, 9.0))


def refused(m, params, match, **bad):
    x0, t, u, w = batch()
    kw = {"x0": x0, "t": t, "u": u, "weights": w, **bad}
    with pytest.raises(ValueError, match=match) as err:
        m.loss_and_grads(params, **kw)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("t, match", [
    (np.array([2.5, 3.0, 4.0]), r"t must hold integer.* in 2\.\.10.*float64"),
    (np.array([2.0, 3.0, 4.0]), r"t must hold integer.* in 2\.\.10.*float64"),   # no silent cast
    (np.array([True, True, False]), r"t must hold integer.* in 2\.\.10.*bool"),
    (np.array([1, 3, 4]), r"t must hold integer.* in 2\.\.10.*\[1, 4\]"),
    (np.array([2, 11, 4]), r"t must hold integer.* in 2\.\.10.*\[2, 11\]"),
    (np.array([2, -1, 4]), r"t must hold integer.* in 2\.\.10"),
])
def test_bad_steps(t, match):
    m = small_model()
    refused(m, m.init_params(rng_from(0)), match, t=t)


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.0, 1.5, float("inf")])
def test_bad_uniform_noise(value):
    m = small_model()
    u = batch()[2]
    u[1, 2] = value
    refused(m, m.init_params(rng_from(0)), r"u \(the frozen uniform noise\) must lie in \[0, 1\)", u=u)


@pytest.mark.parametrize("weights, match", [
    (np.full(2, 9.0), r"weights must have shape \(3\)"),
    (np.full((3, 1), 9.0), r"weights must have shape \(3\)"),
    (np.array([9.0, np.nan, 9.0]), "weights contains NaN or infinite"),
    (np.array([9.0, np.inf, 9.0]), "weights contains NaN or infinite"),
])
def test_bad_weights(weights, match):
    m = small_model()
    refused(m, m.init_params(rng_from(0)), match, weights=weights)


def test_noise_of_the_wrong_shape():
    m = small_model()
    refused(m, m.init_params(rng_from(0)), r"u must have shape \(3, 4\)", u=np.zeros((3, 5)))


@pytest.mark.parametrize("D", [2.7, 2.0, True, "4"])
def test_D_must_be_a_positive_integer_not_truncated(D):
    with pytest.raises((TypeError, ValueError), match=r"D must be an integer >= 1, got"):
        BinomialDiffusion(D=D, T=10)


@pytest.mark.parametrize("D", [0, -3])
def test_D_must_be_positive(D):
    with pytest.raises(ValueError, match=r"D must be an integer >= 1"):
        BinomialDiffusion(D=D, T=10)


def test_evaluate_on_no_examples_is_a_clear_error():
    m = small_model()
    params = m.init_params(rng_from(0))
    with pytest.raises(ValueError, match=r"x0 has no rows; give at least one example"):
        m.evaluate(params, np.zeros((0, 4)), rng_from(1))
    with pytest.raises(ValueError, match=r"x0 has no rows"):
        m.loss_and_grads(params, np.zeros((0, 4)), np.zeros(0, int), np.zeros((0, 4)), np.zeros(0))
    with pytest.raises(TypeError, match=r"n_eps must be an integer >= 1"):
        m.evaluate(params, batch()[0], rng_from(1), n_eps=1.5)


@pytest.mark.parametrize("n", [0, 2.5])
def test_sample_count_must_be_a_positive_integer(n):
    m = small_model()
    with pytest.raises((TypeError, ValueError), match=r"n must be an integer >= 1"):
        m.sample(m.init_params(rng_from(0)), n, rng_from(1))


def test_a_refused_batch_changes_nothing():
    m = small_model()
    params = m.init_params(rng_from(0))
    before = {k: v.copy() for k, v in params.items()}
    x0, t, u, w = batch()
    for bad in ({"t": t + 0.5}, {"u": u + 1}, {"weights": w[:2]}):
        with pytest.raises(ValueError):
            m.loss_and_grads(params, **{"x0": x0, "t": t, "u": u, "weights": w, **bad})
    assert all((params[k] == before[k]).all() for k in params)
