"""The gradient checker itself, on functions whose derivatives are known."""
import numpy as np
import pytest
from hypothesis import given

from numpy_diffusion.gradcheck import (check_gradient, directional_check, numerical_gradient,
                                       rel_error)
from strategies import rng_from, seeds

KNOWN = [  # f, exact gradient
    (lambda x: (x ** 3).sum(), lambda x: 3 * x ** 2),
    (lambda x: np.sin(x).prod(), lambda x: np.cos(x) * np.prod(np.sin(x)) / np.sin(x)),
    (lambda x: np.log(np.exp(x).sum()), lambda x: np.exp(x) / np.exp(x).sum()),
]


@pytest.mark.parametrize("f,grad", KNOWN)
@given(seed=seeds)
def test_numerical_gradient_matches_known_derivative(f, grad, seed):
    x = rng_from(seed).uniform(0.2, 1.5, 5)                 # sin(x) != 0, so the product rule form is valid
    num = numerical_gradient(f, x.copy())
    assert rel_error(grad(x), num) < 1e-7                    # O(h^2) + O(eps/h) ~ 1e-10 relative
    assert check_gradient(f, x.copy(), grad(x)) < 1e-5


def test_checker_catches_a_wrong_gradient():
    x = np.linspace(0.3, 1.2, 6)
    wrong = 3 * x ** 2
    wrong[2] *= 1.01                                        # one entry off by 1%
    assert check_gradient(lambda z: (z ** 3).sum(), x, wrong) > 1e-3


def test_directional_check():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(50, 50))
    theta = rng.normal(size=50)
    loss = lambda th: 0.5 * th @ A @ th
    good = 0.5 * (A + A.T) @ theta
    assert directional_check(loss, theta, good, rng) < 1e-7
    assert directional_check(loss, theta, A @ theta, rng) > 1e-3      # forgot to symmetrize


def test_checker_restores_input_and_demands_float64():
    x = np.array([1.0, 2.0])
    numerical_gradient(lambda z: (z ** 2).sum(), x)
    assert x.tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda z: z.sum(), x.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        rel_error(np.zeros(2), np.zeros(3))


def test_check_vjp_sets_the_floor_from_the_terms_not_their_cancelling_sum():
    """sum(out * dout) can be tiny while its terms are not: the round-off is the terms'."""
    from numpy_diffusion.gradcheck import check_vjp
    x = np.linspace(-1.0, 1.0, 7)[:, None] * np.ones((1, 3))
    dout = np.ones_like(x)                                  # sum of sin(x) over a symmetric grid: 0
    forward = lambda z: np.sin(z)                           # noqa: E731
    assert check_vjp(forward, x, dout, np.cos(x) * dout) < 1e-7
    assert check_vjp(forward, x, dout, -np.cos(x) * dout) > 0.5          # a wrong gradient still reads O(1)
