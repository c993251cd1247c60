"""Adam against Kingma & Ba (2015), Algorithm 1, and the flat parameter vector."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.nn.optim import Adam, ParamVector, cosine_lr
from strategies import rng_from, seeds


def adam_by_hand(theta, grads, lr, b1, b2, eps):
    """Algorithm 1, line by line, in plain Python floats (one scalar parameter)."""
    m = v = 0.0
    for k, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** k), v / (1 - b2 ** k)
        theta = theta - lr * m_hat / (math.sqrt(v_hat) + eps)
    return theta


@given(seed=seeds)
def test_three_steps_match_algorithm_1(seed):
    rng = rng_from(seed)
    theta0, grads = rng.normal(size=5), rng.normal(size=(3, 5))
    opt = Adam(5, lr=0.01, b1=0.8, b2=0.95, epsilon=1e-3)
    theta = theta0.copy()
    for g in grads:
        opt.step(theta, g)
    expected = [adam_by_hand(theta0[i], grads[:, i], 0.01, 0.8, 0.95, 1e-3) for i in range(5)]
    np.testing.assert_allclose(theta, expected, rtol=1e-13, atol=1e-15)   # same arithmetic, rounding only


@given(seed=seeds, scale=st.floats(1e-3, 1e3))
def test_update_invariant_to_gradient_scale(seed, scale):
    """With eps = 0, m_hat / sqrt(v_hat) does not change when every gradient is scaled by c > 0."""
    rng = rng_from(seed)
    theta0, grads = rng.normal(size=4), rng.normal(size=(4, 4))
    a, b = theta0.copy(), theta0.copy()
    opt_a, opt_b = Adam(4, epsilon=0.0), Adam(4, epsilon=0.0)
    for g in grads:
        opt_a.step(a, g)
        opt_b.step(b, scale * g)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_converges_on_a_quadratic():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    H, target = A @ A.T + np.eye(6), rng.normal(size=6)        # positive definite
    theta, opt = np.zeros(6), Adam(6, lr=0.05)
    for k in range(3000):
        opt.step(theta, H @ (theta - target), lr=cosine_lr(k, 3000, 0.05, final_fraction=0.01))
    np.testing.assert_allclose(theta, target, atol=1e-4)


def test_save_restore_gives_identical_next_step():
    rng = np.random.default_rng(1)
    theta, opt = rng.normal(size=7), Adam(7, lr=0.003)
    for _ in range(5):
        opt.step(theta, rng.normal(size=7))
    state, g = opt.state_dict(), rng.normal(size=7)
    restored = Adam(7, lr=1.0, b1=0.5)                      # wrong hyper-parameters on purpose
    restored.load_state_dict(state)
    a, b = theta.copy(), theta.copy()
    opt.step(a, g)
    restored.step(b, g)
    assert np.array_equal(a, b)                                # bit for bit
    assert restored.step_count == opt.step_count == 6


def test_param_vector_views_share_storage():
    arrays = {"W": np.arange(6.0).reshape(2, 3), "b": np.array([7.0, 8.0])}
    pv = ParamVector.from_arrays(arrays)
    assert pv.flat.shape == (8,)
    pv.flat[:] += 1                                             # one whole-vector operation ...
    np.testing.assert_array_equal(pv["W"], arrays["W"] + 1)     # ... updates every named view
    np.testing.assert_array_equal(pv["b"], [8.0, 9.0])
    grads = pv.zeros_like()
    grads["b"][...] = 5
    assert grads.flat[-2:].tolist() == [5.0, 5.0] and not grads["W"].any()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="b1 and b2 must lie in"):
        Adam(3, b1=1.0)
    with pytest.raises(ValueError, match="lr > 0"):
        Adam(3, lr=0)
    with pytest.raises(ValueError, match="optimizer state has 3 entries, this model has 4"):
        Adam(4).load_state_dict(Adam(3).state_dict())
    with pytest.raises(ValueError, match="layout needs"):
        ParamVector({"W": (2, 2)}, np.zeros(5))


def test_cosine_schedule():
    assert cosine_lr(0, 100, 1.0) == 1.0
    assert cosine_lr(100, 100, 1.0, final_fraction=0.1) == pytest.approx(0.1)
    assert cosine_lr(50, 100, 1.0) == pytest.approx(0.5)
    assert cosine_lr(4, 100, 1.0, warmup=10) == pytest.approx(0.5)
