"""The MLP and the reverse-process network, checked end to end by finite differences.

Tolerance 1e-5 on relative error, as in test_layers.py; the whole-model
directional check (two loss evaluations) uses the same bound.
"""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from numpy_diffusion.nn import layers
from numpy_diffusion.gradcheck import check_gradient, check_vjp, directional_check
from numpy_diffusion.nn.mlp import init_mlp, mlp_backward, mlp_forward
from numpy_diffusion.nn.network import NetConfig, init_network, network_backward, network_forward, temporal_basis
from numpy_diffusion.nn.optim import ParamVector
from strategies import batch, layer_sizes, rng_from, seeds, times

TOL = 1e-5


@pytest.mark.parametrize("activation", sorted(layers.ACTIVATIONS))
@given(sizes=layer_sizes(), n=batch, seed=seeds, activate_last=st.booleans())
def test_mlp_backward(activation, sizes, n, seed, activate_last):
    rng = rng_from(seed)
    params = init_mlp(sizes, rng)
    for v in params.values():                    # non-zero biases exercise db
        v += 0.1 * rng.standard_normal(v.shape)
    x = rng.uniform(-2, 2, (n, sizes[0]))
    if activation == "leaky_relu":               # stay off the kink at 0, where no derivative exists
        assume(_min_abs_preactivation(params, x, activate_last) > 1e-3)
    dout = rng.standard_normal((n, sizes[-1]))
    out, cache = mlp_forward(x, params, activation=activation, activate_last=activate_last)
    assert out.shape == (n, sizes[-1])
    dx, grads = mlp_backward(dout, cache)
    assert grads.keys() == params.keys()
    # check_vjp sets the round-off floor from sum |out * dout|: with a sigmoid MLP the
    # products cancel (|f| = 0.1 against terms summing to 6 seen), and a floor from |f|
    # alone read a correct gradient as 1e-5 wrong
    forward = lambda _: mlp_forward(x, params, activation=activation, activate_last=activate_last)[0]  # noqa: E731
    assert check_vjp(forward, x, dout, dx) < TOL
    for name in params:
        assert check_vjp(forward, params[name], dout, grads[name]) < TOL, name


def _min_abs_preactivation(params, x, activate_last):
    """Smallest |pre-activation| of a leaky-ReLU MLP: finite differences need it away from 0."""
    L, smallest = len(params) // 2, np.inf
    for i in range(L):
        x = x @ params[f"mlp.W{i}"] + params[f"mlp.b{i}"]
        if i < L - 1 or activate_last:
            smallest = min(smallest, np.abs(x).min())
            x = layers.leaky_relu_forward(x)[0]
    return smallest


def _network_loss(cfg, seed, n=5):
    """A random network, inputs and upstream gradient, and loss(theta) over a flat vector."""
    rng = rng_from(seed)
    params = init_network(cfg, rng)
    params["readout.W"] = rng.standard_normal(params["readout.W"].shape)   # zero init hides bugs
    pv = ParamVector.from_arrays(params)
    G = temporal_basis(cfg)
    x, t = rng.standard_normal((n, cfg.D)), rng.integers(1, cfg.T + 1, n)
    dz = rng.standard_normal((n, cfg.n_out))

    def loss(theta):
        return (network_forward(x, t, ParamVector(pv.layout, theta).views, cfg, G)[0] * dz).sum()

    z, cache = network_forward(x, t, pv.views, cfg, G)
    dx, grads = network_backward(dz, cache)
    flat = ParamVector.from_arrays({k: grads[k] for k in pv.layout}).flat
    return pv, x, t, G, dz, loss, flat, dx, rng


@pytest.mark.parametrize("net,hidden,basis,fourier", [
    ("mlp", (6, 5), "bump", 0), ("mlp", (4,), "identity", 0), ("mlp", (5, 4), "bump", 3),
    ("rbf", (6,), "identity", 0), ("rbf", (3,), "bump", 0)])
@given(seed=seeds, T=times)
def test_network_end_to_end(net, hidden, basis, fourier, seed, T):
    cfg = NetConfig(D=2, T=T, net=net, hidden=hidden, activation="tanh", basis=basis, n_bumps=3,
                    fourier=fourier, fourier_scale=1.5, fourier_learned=True)
    pv, x, t, G, dz, loss, flat, dx, rng = _network_loss(cfg, seed)
    assert directional_check(loss, pv.flat.copy(), flat, rng) < TOL       # whole model, 2 evaluations
    f = lambda _: (network_forward(x, t, pv.views, cfg, G)[0] * dz).sum()
    assert check_gradient(f, x, dx) < TOL                   # feeds the beta gradient


def test_untrained_network_outputs_zero():
    """The readout starts at zero, so z = 0: the reverse kernel starts as the forward one."""
    cfg = NetConfig()
    params = init_network(cfg, np.random.default_rng(0))
    x, t = np.random.default_rng(1).standard_normal((8, 2)), np.arange(1, 9)
    assert not network_forward(x, t, params, cfg, temporal_basis(cfg))[0].any()


def test_network_config_errors():
    with pytest.raises(ValueError, match="unknown net 'cnn'; allowed: mlp, rbf"):
        NetConfig(net="cnn")
    with pytest.raises(ValueError, match="T must be an integer >= 2, got 1"):
        NetConfig(T=1)
    with pytest.raises(ValueError, match="hidden width must be an integer >= 1, got 0"):
        NetConfig(hidden=(16, 0))
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        mlp_forward(np.zeros((1, 2)), init_mlp((2, 3), np.random.default_rng(0)), activation="relu6")
    with pytest.raises(ValueError, match="layer size must be an integer >= 1, got -3"):
        init_mlp((2, -3, 1), np.random.default_rng(0))
    cfg = NetConfig()
    params = init_network(cfg, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x_t must have shape \(any, 2\), got \(4, 3\)"):
        network_forward(np.zeros((4, 3)), np.ones(4, int), params, cfg, temporal_basis(cfg))
    with pytest.raises(ValueError, match="x_t contains NaN"):
        network_forward(np.full((4, 2), np.nan), np.ones(4, int), params, cfg, temporal_basis(cfg))
