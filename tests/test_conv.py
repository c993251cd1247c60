"""Image layers: the fast convolution equals the plain one, and every backward
matches central differences (float64, h = 1e-6).

Tolerance: entries below the round-off floor ``10 eps S / (h tol)`` are compared in
absolute terms (``check_gradient``'s rule), with ``S`` the sum of the magnitudes of the
terms of ``f = sum(out * dout)``: a sum that cancels carries the round-off of its terms,
not of its value.  A correct gradient then gives a relative error near 1e-8 and a wrong
one O(1).  We accept below 1e-5.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.gradcheck import numerical_gradient, rel_error, roundoff_floor
from numpy_diffusion.image import conv, layers
from numpy_diffusion.nn import layers as nn_layers
from numpy_diffusion.nn.readout import bump_basis
from strategies import arrays, seeds

TOL = 1e-5
kernels = st.sampled_from([1, 3, 5])
channels = st.integers(1, 3)
sides = st.integers(1, 6)


@st.composite
def images(draw, n_max=2, multiple=1, c=None):
    """Small float64 images (N, H, W, C) with H, W multiples of ``multiple``."""
    n, h, w = draw(st.integers(1, n_max)), multiple * draw(st.integers(1, 3)), multiple * draw(st.integers(1, 3))
    return draw(arrays((n, h, w, draw(channels) if c is None else c)))


def jvp_error(forward, x, dout, analytic):
    """Relative error of ``analytic`` against the central-difference gradient of
    ``sum(forward(x) * dout)`` in ``x``, with the floor of the module docstring."""
    floor = roundoff_floor(abs(forward(x) * dout).sum())
    return rel_error(analytic, numerical_gradient(lambda _: (forward(x) * dout).sum(), x), tiny=floor)


def _check_all(forward, dout, args, grads):
    """``forward()`` reads ``args`` (perturbed in place); each grad against finite differences."""
    for arg, grad in zip(args, grads):
        assert grad.shape == arg.shape
        assert jvp_error(lambda _: forward(), arg, dout, grad) < TOL


@given(x=images(n_max=3, multiple=1), k=kernels, o=channels, data=st.data())
def test_fast_conv_equals_naive(x, k, o, data):
    W, b = data.draw(arrays((k, k, x.shape[3], o))), data.draw(arrays((o,)))
    out, cache = conv.conv_forward(x, W, b)
    out_naive, cache_naive = conv.conv_forward_naive(x, W, b)
    np.testing.assert_allclose(out, out_naive, rtol=1e-12, atol=1e-12)
    dout = data.draw(arrays(out.shape))
    for fast, naive in zip(conv.conv_backward(dout, cache), conv.conv_backward_naive(dout, cache_naive)):
        np.testing.assert_allclose(fast, naive, rtol=1e-12, atol=1e-12)


def test_naive_conv_is_the_formula():
    """One output pixel by the sum written in the module docstring, zero outside the image."""
    rng = np.random.default_rng(0)
    x, W, b = rng.normal(size=(1, 4, 5, 2)), rng.normal(size=(3, 3, 2, 3)), rng.normal(size=3)
    out = conv.conv_forward_naive(x, W, b)[0]
    for h, w in ((0, 0), (2, 3), (3, 4)):
        want = b + sum(x[0, h + i - 1, w + j - 1] @ W[i, j] for i in range(3) for j in range(3)
                       if 0 <= h + i - 1 < 4 and 0 <= w + j - 1 < 5)
        np.testing.assert_allclose(out[0, h, w], want, rtol=1e-12)


@given(x=images(), k=kernels, o=channels, data=st.data())
def test_conv_backward(x, k, o, data):
    W, b = data.draw(arrays((k, k, x.shape[3], o))), data.draw(arrays((o,)))
    dout = data.draw(arrays(x.shape[:3] + (o,)))
    grads = conv.conv_backward(dout, conv.conv_forward(x, W, b)[1])
    _check_all(lambda: conv.conv_forward(x, W, b)[0], dout, (x, W, b), grads)
    dx, dW, db = conv.conv_backward(dout, conv.conv_forward(x, W, b)[1], need_dx=False)
    assert dx is None and np.array_equal(dW, grads[1])


@given(x=images(multiple=2), data=st.data())
def test_mean_pool_backward(x, data):
    out, cache = conv.mean_pool_forward(x)
    np.testing.assert_allclose(out[:, 0, 0], x[:, :2, :2].mean(axis=(1, 2)), rtol=1e-12)
    dout = data.draw(arrays(out.shape))
    _check_all(lambda: conv.mean_pool_forward(x)[0], dout, (x,),
               (conv.mean_pool_backward(dout, cache),))


@given(x=images(), data=st.data())
def test_upsample_backward(x, data):
    out, cache = conv.upsample_forward(x)
    np.testing.assert_array_equal(out[:, 1::2, ::2], x)
    dout = data.draw(arrays(out.shape))
    _check_all(lambda: conv.upsample_forward(x)[0], dout, (x,),
               (conv.upsample_backward(dout, cache),))


@given(x=images(multiple=2), data=st.data())
def test_pool_and_upsample_are_adjoint(x, data):
    """<P x, y> = <x, U y> / 4: the upsampling is four times the pool's transpose."""
    y = data.draw(arrays(conv.mean_pool_forward(x)[0].shape))
    lhs = (conv.mean_pool_forward(x)[0] * y).sum()
    assert np.isclose(lhs, (x * conv.upsample_forward(y)[0]).sum() / 4, rtol=1e-12, atol=1e-12)


@given(S=st.integers(1, 3), k=st.sampled_from([1, 3]), o=channels, data=st.data())
def test_multiscale_backward(S, k, o, data):
    x = data.draw(images(multiple=2 ** (S - 1)))
    W, b = data.draw(arrays((S, k, k, x.shape[3], o))), data.draw(arrays((o,)))
    dout = data.draw(arrays(x.shape[:3] + (o,)))
    out, cache = layers.multiscale_forward(x, W, b)
    grads = layers.multiscale_backward(dout, cache)
    _check_all(lambda: layers.multiscale_forward(x, W, b)[0], dout, (x, W, b), grads)
    assert layers.multiscale_backward(dout, cache, need_dx=False)[0] is None


def test_multiscale_is_the_sum_over_scales():
    """Two scales by hand: conv at full size plus the upsampled conv of the pooled image."""
    rng = np.random.default_rng(1)
    x, W, b = rng.normal(size=(2, 4, 4, 2)), rng.normal(size=(2, 3, 3, 2, 3)), rng.normal(size=3)
    fine = conv.conv_forward_naive(x, W[0], b)[0]
    coarse = conv.conv_forward_naive(conv.mean_pool_forward(x)[0], W[1], 0 * b)[0]
    a = fine + conv.upsample_forward(coarse)[0]
    np.testing.assert_allclose(layers.multiscale_forward(x, W, b)[0], np.logaddexp(0, a), rtol=1e-12)


def test_multiscale_rejects_sizes_that_do_not_pool():
    with pytest.raises(ValueError, match="divisible by 4"):
        layers.multiscale_forward(np.zeros((1, 6, 6, 1)), np.zeros((3, 3, 3, 1, 1)), np.zeros(1))


@given(x=images(), o=channels, data=st.data())
def test_pointwise_backward(x, o, data):
    W, b = data.draw(arrays((x.shape[3], o))), data.draw(arrays((o,)))
    dout = data.draw(arrays(x.shape[:3] + (o,)))
    grads = layers.pointwise_backward(dout, layers.pointwise_forward(x, W, b)[1])
    _check_all(lambda: layers.pointwise_forward(x, W, b)[0], dout, (x, W, b), grads)


@pytest.mark.parametrize("pair", [(nn_layers.tanh_forward, nn_layers.tanh_backward),
                                  (nn_layers.softplus_forward, nn_layers.softplus_backward)], ids=["tanh", "softplus"])
@given(x=images(), data=st.data())
def test_activation_backward(pair, x, data):
    forward, backward = pair
    dout = data.draw(arrays(x.shape))
    _check_all(lambda: forward(x)[0], dout, (x,), (backward(dout, forward(x)[1]),))


@given(y=images(c=6), T=st.integers(2, 30), seed=seeds, data=st.data())
def test_pixel_readout_backward(y, T, seed, data):
    G = bump_basis(T, 3)
    t = np.random.default_rng(seed).integers(1, T + 1, size=y.shape[0])
    z, cache = layers.pixel_readout_forward(y, t, G)
    for k in (0, 1):                                                   # eq. (62), mean and variance
        np.testing.assert_allclose(z[0, ..., k], y[0, ..., 3 * k:3 * k + 3] @ G[t[0]], rtol=1e-12)
    dz = data.draw(arrays(z.shape))
    _check_all(lambda: layers.pixel_readout_forward(y, t, G)[0], dz, (y,),
               (layers.pixel_readout_backward(dz, cache),))
