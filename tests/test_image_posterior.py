"""The Gaussian baseline's exact inpainting and denoising, and the fill scores."""
import numpy as np
import pytest

from numpy_diffusion.image import dead_leaves as dl
from numpy_diffusion.image import posterior as ip


def toy_gaussian(D=9, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(D, D))
    return rng.normal(size=D), np.linalg.cholesky(A @ A.T / D + 0.1 * np.eye(D)), rng


def test_central_mask():
    m = ip.central_mask(6, 2).reshape(6, 6)
    assert (~m).sum() == 4 and not m[2:4, 2:4].any() and m[:2].all()
    with pytest.raises(ValueError, match="centred"):
        ip.central_mask(6, 3)


def test_inpainting_keeps_the_observed_pixels_and_matches_the_conditional():
    """Sample moments of the hidden block against the Schur complement."""
    mean, chol, rng = toy_gaussian()
    mask = np.arange(9) % 3 != 1
    y = rng.normal(size=(1, 9))
    x, cond_mean = ip.gaussian_inpaint(mean, chol, y, mask, rng, n=40000)
    np.testing.assert_array_equal(x[:, :, mask], np.broadcast_to(y[:, None, mask], x[:, :, mask].shape))
    S = chol @ chol.T
    h, o = ~mask, mask
    want_cov = S[np.ix_(h, h)] - S[np.ix_(h, o)] @ np.linalg.solve(S[np.ix_(o, o)], S[np.ix_(o, h)])
    np.testing.assert_allclose(x[0, :, h].mean(axis=1), cond_mean[0, h], atol=0.03)
    np.testing.assert_allclose(np.cov(x[0][:, h].T), want_cov, atol=0.03)


def test_denoising_is_bayes_rule():
    """The posterior mean of a jointly Gaussian (x, y) by the joint's regression formula."""
    mean, chol, rng = toy_gaussian(D=4)
    y = rng.normal(size=(2, 4))
    _, cond_mean = ip.gaussian_denoise(mean, chol, y, 0.7, rng)
    S = chol @ chol.T
    want = mean + (y - mean) @ np.linalg.solve(S + 0.49 * np.eye(4), S)   # S symmetric
    np.testing.assert_allclose(cond_mean, want, rtol=1e-10)


def test_scores():
    x = np.zeros((1, 16))
    assert ip.rmse_grey_levels(x + 1 / dl.SCALE, x) == pytest.approx(1.0)
    mask = ip.central_mask(4, 2)
    truth = np.zeros(16)
    assert ip.border_agreement(truth[None], truth, mask, 4) == 1.0           # a flat fill of a flat image
    other = np.where(mask, 0.0, 1.0)[None]                                  # hidden square of another grey
    assert ip.border_agreement(other, truth, mask, 4) == 0.0
