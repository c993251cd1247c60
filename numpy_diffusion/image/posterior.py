"""Inpainting and denoising images (§2.5; Figs. 3, 5): masks, the Gaussian baseline's exact
posteriors, and the numbers that say how good a fill or a denoised image is.

The diffusion model's posterior samples come from :mod:`numpy_diffusion.posterior`
(the paper's modified reverse steps, and sequential Monte Carlo), which take
images flattened to ``(B, D)`` and a boolean mask of the observed pixels.  This
module gives the same tasks' answers under the full-covariance Gaussian fitted
to the training images (:func:`~.dead_leaves.fit_gaussian`), in closed form,
so that each number has a baseline beside it.  Host NumPy throughout.
"""
import numpy

from .dead_leaves import SAME_GREY, SCALE


def central_mask(size, hidden):
    """Observed pixels of a ``size x size`` image with its central ``hidden x hidden``
    square unknown: a bool (size^2,) array, True where observed."""
    if not 0 < hidden < size or (size - hidden) % 2:
        raise ValueError(f"hidden square {hidden} must be smaller than the image ({size}) and centred "
                         "(size - hidden even)")
    lo = (size - hidden) // 2
    observed = numpy.ones((size, size), dtype=bool)
    observed[lo:lo + hidden, lo:lo + hidden] = False
    return observed.reshape(-1)


def gaussian_inpaint(mean, chol, y, mask, rng, n=1):
    """Samples of ``N(mean, L L^T)`` conditioned on ``x[mask] = y[mask]``.

    Hidden block ``h``, observed ``o``: mean ``m_h + S_ho S_oo^-1 (y_o - m_o)``,
    covariance ``S_hh - S_ho S_oo^-1 S_oh`` (Schur complement).

    Parameters
    ----------
    mean : (D,);  chol : (D, D);  y : (B, D);  mask : bool (D,), True where observed
    rng : numpy.random.Generator;  n : samples per row of ``y``

    Returns
    -------
    x : (B, n, D) with ``x[..., mask] = y[:, None, mask]``; cond_mean : (B, D).
    """
    S, h, o = chol @ chol.T, ~mask, mask
    gain = numpy.linalg.solve(S[numpy.ix_(o, o)], S[numpy.ix_(o, h)]).T      # S_ho S_oo^-1   (n_h, n_o)
    cond_mean = numpy.array(y, dtype=numpy.float64)
    cond_mean[:, h] = mean[h] + (y[:, o] - mean[o]) @ gain.T                  # (B, n_h)
    cov = S[numpy.ix_(h, h)] - gain @ S[numpy.ix_(o, h)]                      # Schur complement
    L = numpy.linalg.cholesky(cov + 1e-12 * numpy.eye(cov.shape[0]))
    x = numpy.repeat(cond_mean[:, None, :], n, axis=1)
    x[:, :, h] += rng.standard_normal((y.shape[0], n, h.sum())) @ L.T
    return x, cond_mean


def gaussian_denoise(mean, chol, y, sigma_d, rng, n=1):
    """Samples of ``N(mean, S)`` given ``y = x + N(0, sigma_d^2 I)``: mean
    ``m + S (S + s^2 I)^-1 (y - m)``, covariance ``S - S (S + s^2 I)^-1 S``.
    Shapes as :func:`gaussian_inpaint`."""
    S = chol @ chol.T
    gain = numpy.linalg.solve(S + sigma_d ** 2 * numpy.eye(S.shape[0]), S).T   # S (S + s^2 I)^-1
    cond_mean = mean + (y - mean) @ gain.T                                       # (B, D)
    cov = S - gain @ S
    L = numpy.linalg.cholesky(0.5 * (cov + cov.T) + 1e-12 * numpy.eye(S.shape[0]))
    return cond_mean[:, None, :] + rng.standard_normal((y.shape[0], n, S.shape[0])) @ L.T, cond_mean


def rmse_grey_levels(x, x_true, where=None):
    """Root mean square error in grey levels (0..255 scale) over the pixels ``where`` (default all).
    ``x`` (..., D) broadcasts against ``x_true`` (D,) or (B, 1, D)."""
    d2 = (SCALE * (numpy.asarray(x) - x_true)) ** 2
    return float(numpy.sqrt(d2[..., where].mean() if where is not None else d2.mean()))


def border_agreement(x, x_true, mask, size, tol=SAME_GREY):
    """Does a fill continue what crosses the border of the hidden region?

    For each hidden pixel with an observed 4-neighbour, ask whether it has the
    neighbour's grey level (within ``tol`` grey levels): a region continues
    inside, or an edge runs along the border.  Returns the fraction of such
    (pixel, neighbour) pairs on which ``x`` answers as ``x_true`` does; a fill
    that ignored the border scores the chance level of the two answers.
    """
    grid = numpy.asarray(mask).reshape(size, size)
    same = lambda img, a, b: numpy.abs(SCALE * (img[..., a] - img[..., b])) < tol   # noqa: E731
    agree = []
    for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        i, j = numpy.nonzero(~grid)
        ni, nj = i + di, j + dj
        ok = (ni >= 0) & (ni < size) & (nj >= 0) & (nj < size)
        i, j, ni, nj = i[ok], j[ok], ni[ok], nj[ok]
        edge = grid[ni, nj]
        a, b = (i * size + j)[edge], (ni * size + nj)[edge]
        agree.append(same(numpy.asarray(x), a, b) == same(numpy.broadcast_to(x_true, numpy.shape(x)), a, b))
    return float(numpy.concatenate(agree, axis=-1).mean())
