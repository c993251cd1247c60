"""The toy data sets: the swiss roll's standardization and the heartbeat's shape."""
import numpy as np
import pytest

from numpy_diffusion.datasets import (U_HIGH, U_LOW, exact_heartbeat_fraction, heartbeat, on_roll_fraction,
                                      swiss_roll, swiss_roll_angle_to_point, swiss_roll_moments)


def test_swiss_roll_moments_match_quadrature_and_data():
    mean, std = swiss_roll_moments()
    u = np.linspace(U_LOW, U_HIGH, 2_000_001)                       # trapezoid rule on a fine grid
    pts = np.stack([u * np.cos(u), u * np.sin(u)], 1)
    w = np.full(u.size, 1.0)
    w[[0, -1]] = 0.5
    w /= w.sum()
    q_mean = w @ pts
    np.testing.assert_allclose(mean, q_mean, rtol=1e-9, atol=1e-9)  # O(h^2) ~ 1e-11 quadrature error
    np.testing.assert_allclose(std, np.sqrt(w @ (pts - q_mean) ** 2), rtol=1e-9)
    x = swiss_roll(200_000, np.random.default_rng(0))
    np.testing.assert_allclose(x.mean(0), 0, atol=0.01)              # Monte Carlo: stderr ~ 0.0022
    np.testing.assert_allclose(x.std(0), 1, atol=0.01)


def test_swiss_roll_is_on_the_roll_and_seeded():
    raw = swiss_roll(1000, np.random.default_rng(1), standardize=False)
    r, angle = np.hypot(raw[:, 0], raw[:, 1]), np.arctan2(raw[:, 1], raw[:, 0])
    assert np.all((r >= U_LOW - 1e-9) & (r <= U_HIGH + 1e-9))
    np.testing.assert_allclose(np.cos(r), np.cos(angle), atol=1e-9)  # the angle is the radius, mod 2 pi
    np.testing.assert_array_equal(swiss_roll(5, np.random.default_rng(2)), swiss_roll(5, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="noise must be a standard deviation >= 0"):
        swiss_roll(5, np.random.default_rng(0), noise=-1.0)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        swiss_roll(0, np.random.default_rng(0))


def test_heartbeat_sequences():
    x = heartbeat(500, np.random.default_rng(0))
    assert x.shape == (500, 20) and set(np.unique(x)) == {0.0, 1.0}
    assert np.all(x.sum(1) == 4) and exact_heartbeat_fraction(x) == 1.0
    first = x.argmax(1)
    assert set(first) == {0, 1, 2, 3, 4}                            # every phase occurs
    assert exact_heartbeat_fraction(np.zeros((3, 20))) == 0.0


def test_on_roll_fraction():
    rng = np.random.default_rng(0)
    u = rng.uniform(U_LOW, U_HIGH, 2000)
    x = swiss_roll_angle_to_point(u)
    tangent = swiss_roll_angle_to_point(u + 1e-6) - x
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) / np.linalg.norm(tangent, axis=1, keepdims=True)
    assert on_roll_fraction(x) == 1.0                                   # points on the roll
    assert on_roll_fraction(x + 0.03 * normal) == 1.0                   # 0.03 across it
    assert on_roll_fraction(x + 0.07 * normal) == 0.0                   # 0.07 across it (the arms are > 0.5 apart)
    assert on_roll_fraction(np.concatenate([x, x + 0.07 * normal])) == 0.5
    with pytest.raises(ValueError, match="n, 2"):
        on_roll_fraction(np.zeros((3, 3)))
