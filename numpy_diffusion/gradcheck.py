"""Finite-difference gradient checks: central differences in float64, relative error with a round-off floor.

Use these on your own layers:

>>> import numpy as np
>>> from numpy_diffusion.gradcheck import check_gradient
>>> x = np.random.default_rng(0).normal(size=(3, 4))
>>> err = check_gradient(lambda x: (np.tanh(x) ** 2).sum(), x,
...                      2 * np.tanh(x) * (1 - np.tanh(x) ** 2))
>>> bool(err < 1e-7)
True

Everything runs in float64: with a step ``delta ~ 1e-6`` central differences have
truncation error ``O(delta^2)`` and round-off ``O(eps / delta) ~ 1e-10`` relative, so a
correct gradient gives a relative error around ``1e-8`` or below and a wrong
one gives ``O(1)``.
"""
import numpy

TINY = 1e-12


def rel_error(analytic, numeric, tiny=TINY, floor=1e-4):
    """Largest elementwise ``|a - n| / max(|a| + |n|, tiny)``.

    Central differences carry an absolute round-off of about
    ``eps |f| / delta ~ 1e-10 |f|``, the same for every entry, so an entry far
    smaller than the largest reads as a relative error near 1 even when its
    gradient is right.  The denominator is therefore at least ``floor`` times
    the largest ``|a| + |n|``: entries below ``1e-4`` of the largest are
    compared in absolute terms, against the largest.  ``floor=0`` gives the
    plain elementwise relative error.
    """
    a, n = numpy.asarray(analytic, dtype=numpy.float64), numpy.asarray(numeric, dtype=numpy.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic gradient has shape {a.shape}, numeric has {n.shape}")
    if a.size == 0:
        return 0.0
    scale = numpy.abs(a) + numpy.abs(n)
    denom = numpy.maximum(scale, max(tiny, floor * float(scale.max())))
    return float((numpy.abs(a - n) / denom).max())


def numerical_gradient(f, x, delta=1e-6):
    """Central-difference gradient of the scalar function ``f`` at ``x``.

    ``x`` (a float64 array) is perturbed in place one entry at a time and
    restored; ``f`` must read it each call.  The step is ``delta * max(1, |x_i|)``.
    Returns an array shaped like ``x``.
    """
    if x.dtype != numpy.float64:
        raise TypeError(f"finite differences need float64, got {x.dtype}")
    grad = numpy.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        step = delta * max(1.0, abs(old))
        flat[i] = old + step
        f_plus = float(f(x))
        flat[i] = old - step
        f_minus = float(f(x))
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * step)
    return grad


def numerical_vjp(f, x, dout, delta=1e-6):
    """Gradient of ``sum(f(x) * dout)``: checks a vector-valued ``f`` with upstream ``dout``."""
    return numerical_gradient(lambda z: (numpy.asarray(f(z)) * dout).sum(), x, delta)


def roundoff_floor(scale, delta=1e-6, tol=1e-5):
    """Smallest gradient entry that central differences resolve to ``tol``.

    A float64 sum carries a round-off of about ``eps`` times the sum of its terms'
    magnitudes, ``scale`` (``|f|`` when nothing cancels), so the difference quotient
    carries about ``eps scale / delta``; entries smaller than
    ``10 eps scale / (delta tol)`` are compared in absolute terms (this is the
    ``tiny`` of :func:`rel_error`).
    """
    return max(TINY, 10 * numpy.finfo(numpy.float64).eps * abs(float(scale)) / (delta * tol))


def check_gradient(f, x, analytic, delta=1e-6, tol=1e-5, scale=None):
    """Relative error between ``analytic`` and the central-difference gradient of ``f`` at ``x``.

    ``f`` is a scalar function reading ``x``; the comparison uses :func:`rel_error`
    with ``tiny`` set by :func:`roundoff_floor` from ``scale``, the magnitude of the
    terms ``f`` adds up (default ``|f(x)|``; give it when the terms cancel), so a
    correct gradient returns well below ``tol`` and a wrong one ``O(1)``.
    """
    scale = abs(float(f(x))) if scale is None else scale
    return rel_error(analytic, numerical_gradient(f, x, delta), tiny=roundoff_floor(scale, delta, tol))


def check_vjp(forward, x, dout, analytic, delta=1e-6, tol=1e-5):
    """:func:`check_gradient` for a layer: ``analytic`` is the gradient of ``sum(forward(x) * dout)``.

    ``forward`` maps ``x`` to the layer's output (an array); the round-off floor is
    set by ``sum |forward(x) * dout|``, the magnitude of the terms, so that outputs
    whose products with ``dout`` cancel do not read as a wrong gradient.
    """
    def f(z):
        return (numpy.asarray(forward(z)) * dout).sum()
    scale = numpy.abs(numpy.asarray(forward(x)) * dout).sum()
    return check_gradient(f, x, analytic, delta, tol, scale=scale)


def directional_check(loss, theta, grad, rng, delta=1e-6):
    """Whole-model check along one random direction: two loss evaluations.

    For a unit direction ``d``, compares ``grad . d`` with
    ``(loss(theta + delta d) - loss(theta - delta d)) / (2 delta)``.  Works for any number
    of parameters, which makes it the check for a whole model.

    Parameters
    ----------
    loss : callable
        ``loss(theta) -> float`` for a flat float64 parameter vector.
    theta, grad : ndarray of shape (P,)
    rng : numpy.random.Generator

    Returns
    -------
    float : relative error of the directional derivative.
    """
    d = rng.standard_normal(theta.shape)
    d /= numpy.linalg.norm(d)
    numeric = (float(loss(theta + delta * d)) - float(loss(theta - delta * d))) / (2 * delta)
    return rel_error(numpy.dot(grad, d), numeric)
