"""Every layer's backward against central differences, driven by one table.

Tolerance: a correct float64 gradient checked with h = 1e-6 gives a relative
error near 1e-8 (truncation O(h^2), round-off O(1e-16 / h)); a wrong one gives
O(1).  We accept below 1e-5.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.nn import layers, readout
from numpy_diffusion.gradcheck import check_gradient
from strategies import arrays, batch, dims, rng_from, seeds, times, width

TOL = 1e-5

# name -> (forward taking x, backward returning dx); x drawn away from 0 for leaky ReLU's kink
ACTIVATIONS = [(name, fwd, bwd) for name, (fwd, bwd) in layers.ACTIVATIONS.items()]


@pytest.mark.parametrize("name,forward,backward", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
@given(n=batch, d=width, data=st.data())
def test_activation_backward(name, forward, backward, n, d, data):
    x = data.draw(arrays((n, d), scale=3.0, away_from_zero=1e-3))
    dout = data.draw(arrays((n, d)))
    out, cache = forward(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert check_gradient(lambda z: (forward(z)[0] * dout).sum(), x, backward(dout, cache)) < TOL


@given(n=batch, i=width, o=width, data=st.data())
def test_linear_backward(n, i, o, data):
    x, W, b = (data.draw(arrays(s)) for s in ((n, i), (i, o), (o,)))
    dout = data.draw(arrays((n, o)))
    dx, dW, db = layers.linear_backward(dout, layers.linear_forward(x, W, b)[1])
    f = lambda _: (layers.linear_forward(x, W, b)[0] * dout).sum()
    for arg, grad in ((x, dx), (W, dW), (b, db)):
        assert check_gradient(f, arg, grad) < TOL


@given(n=batch, d=dims, h=width, data=st.data())
def test_rbf_backward(n, d, h, data):
    # |x - c| <= 2 sqrt(d), widths in [1, 2]: logits >= -8, so the softmax is not
    # saturated and its gradient stays well above the finite-difference noise
    x, centres = data.draw(arrays((n, d), scale=1.0)), data.draw(arrays((h, d), scale=1.0))
    log_width = data.draw(arrays((h,), scale=0.35)) + 0.35
    dout = data.draw(arrays((n, h)))
    out, cache = layers.rbf_forward(x, centres, log_width)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-12)   # normalized over units
    grads = layers.rbf_backward(dout, cache)
    f = lambda _: (layers.rbf_forward(x, centres, log_width)[0] * dout).sum()
    for arg, grad in zip((x, centres, log_width), grads):
        assert check_gradient(f, arg, grad) < TOL


@given(n=batch, d=dims, f=width, data=st.data())
def test_fourier_backward(n, d, f, data):
    x, B = data.draw(arrays((n, d))), data.draw(arrays((d, f), scale=3.0))
    dout = data.draw(arrays((n, d + 2 * f)))
    out, cache = layers.fourier_forward(x, B)
    np.testing.assert_array_equal(out[:, :d], x)              # the input passes through
    dx, dB = layers.fourier_backward(dout, cache)
    f_ = lambda _: (layers.fourier_forward(x, B)[0] * dout).sum()
    assert check_gradient(f_, x, dx) < TOL
    assert check_gradient(f_, B, dB) < TOL


@pytest.mark.parametrize("kind", ["bump", "identity"])
@given(n=batch, h=width, o=dims, T=times, seed=seeds, data=st.data())
def test_readout_backward(kind, n, h, o, T, seed, data):
    rng = rng_from(seed)
    G = readout.basis(kind, T, J=min(T, 4))
    J = G.shape[1]
    t = rng.integers(1, T + 1, n)                             # each example its own t
    feats, W, b = (data.draw(arrays(s)) for s in ((n, h), (h, J, o), (J, o)))
    dout = data.draw(arrays((n, o)))
    grads = readout.readout_backward(dout, readout.readout_forward(feats, t, W, b, G)[1])
    f = lambda _: (readout.readout_forward(feats, t, W, b, G)[0] * dout).sum()
    for arg, grad in zip((feats, W, b), grads):
        assert check_gradient(f, arg, grad) < TOL


@given(n=batch, h=width, o=dims, T=times, seed=seeds)
def test_step_readout_equals_identity_basis(n, h, o, T, seed):
    """The gather-and-segment-sum readout is the identity-basis readout, values and gradients."""
    rng = rng_from(seed)
    t = rng.integers(1, T + 1, n)
    feats, W, b, dout = (rng.normal(size=s) for s in ((n, h), (h, T, o), (T, o), (n, o)))
    out_a, cache_a = readout.step_readout_forward(feats, t, W, b)
    out_b, cache_b = readout.readout_forward(feats, t, W, b, readout.identity_basis(T))
    np.testing.assert_allclose(out_a, out_b, rtol=1e-12, atol=1e-12)
    for ga, gb in zip(readout.step_readout_backward(dout, cache_a),
                      readout.readout_backward(dout, cache_b)):
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-12)


def test_bump_basis_is_normalized_and_smooth():
    G = readout.bump_basis(40, 10)
    assert G.shape == (41, 10)
    np.testing.assert_allclose(G[1:].sum(1), 1.0, rtol=1e-12)
    assert np.argmax(G[1]) == 0 and np.argmax(G[40]) == 9      # first bump at t=1, last at t=T


def test_linear_bumps_are_eq_63_in_t():
    """The paper's spacing, which every configuration without ``bump_spacing`` trained with."""
    T, J = 40, 10
    t, tau, w = np.arange(1, T + 1)[:, None], np.linspace(1, T, J), (T - 1) / (J - 1)
    bumps = np.exp(-0.5 * ((t - tau) / w) ** 2)
    np.testing.assert_allclose(readout.bump_basis(T, J)[1:], bumps / bumps.sum(1, keepdims=True), rtol=1e-14)


def test_log_spaced_bumps_are_eq_63_in_log_t():
    """Centres at ``t = T^(j / (J - 1))``, each row normalized, and the bump formula of
    eq. (63) in ``log t`` with the centres' spacing as its width."""
    T, J = 1000, 4                                             # centres at t = 1, 10, 100, 1000
    G = readout.bump_basis(T, J, spacing="log")
    np.testing.assert_allclose(G[1:].sum(1), 1.0, rtol=1e-12)
    assert [int(np.argmax(G[t])) for t in (1, 10, 100, 1000)] == [0, 1, 2, 3]
    s, w = np.log(np.arange(1, T + 1))[:, None], np.log(10.0)
    bumps = np.exp(-0.5 * ((s - np.log([1.0, 10.0, 100.0, 1000.0])) / w) ** 2)
    np.testing.assert_allclose(G[1:], bumps / bumps.sum(1, keepdims=True), rtol=1e-12)
    with pytest.raises(ValueError, match="unknown spacing 'exp'; allowed: linear, log"):
        readout.bump_basis(T, J, spacing="exp")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layers_keep_dtype(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3)).astype(dtype)
    W, b = rng.normal(size=(3, 2)).astype(dtype), np.zeros(2, dtype)
    assert layers.linear_forward(x, W, b)[0].dtype == dtype
    for fwd, bwd in layers.ACTIVATIONS.values():
        out, cache = fwd(x)
        assert out.dtype == dtype and bwd(out, cache).dtype == dtype
    out, cache = layers.rbf_forward(x, rng.normal(size=(5, 3)).astype(dtype), np.zeros(5, dtype))
    assert out.dtype == dtype and all(g.dtype == dtype for g in layers.rbf_backward(out, cache))


def test_stable_at_extremes():
    """No overflow warning (pytest turns RuntimeWarning into an error) and exact limits."""
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    np.testing.assert_allclose(layers.sigmoid(x), [0, np.exp(-50), 0.5, 1, 1], atol=1e-30)
    np.testing.assert_allclose(layers.softplus(x), [0, np.log1p(np.exp(-50)), np.log(2), 50, 1e4])


def test_bad_input_is_a_clear_error():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="do not fit"):
        layers.linear_forward(x, np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="unknown activation 'relu6'; allowed"):
        layers.activation("relu6")
    with pytest.raises(ValueError, match="do not fit"):
        layers.rbf_forward(x, np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="unknown temporal basis"):
        readout.basis("fourier", 10)
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        readout.bump_basis(1, 3)
