"""The U-Net end to end (image/unet.py): gradients against central differences (float64),
``z = 0`` at initialization, the layout of ``z``, configurations and their errors.

The whole-parameter check runs along random directions (two loss evaluations each) and,
on a tiny network, entry by entry; the input gradient entry by entry.  Tolerance as in
test_conv.py and test_image_network.py: a correct gradient gives a relative error near
1e-8, a wrong one O(1); we accept below 1e-5.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_diffusion.image.unet import UNet, maps_from_z, unet_backward, z_from_maps
from numpy_diffusion.image.unet_config import UNetConfig, param_shapes
from strategies import rng_from, seeds
from test_conv import jvp_error
from test_image_network import directional_error, draw, flat, unflat

TOL = 1e-5


@st.composite
def configs(draw):
    """Tiny U-Nets: 1 to 3 levels, widths multiples of the group count, every switch."""
    L, G = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    widths = tuple(G * draw(st.integers(1, 2)) for _ in range(L))
    return UNetConfig(size=2 ** (L - 1) * draw(st.sampled_from([1, 2])), channels=draw(st.integers(1, 2)),
                      T=draw(st.integers(2, 50)), widths=widths, blocks=draw(st.integers(1, 2)),
                      attention=draw(st.booleans()), emb_dim=draw(st.integers(1, 3)), groups=G,
                      kernel=draw(st.sampled_from([1, 3])))


def random_params(net, rng, scale=0.5):
    """Parameters with every array random (none at its zero start), so no gradient is trivially zero."""
    return {k: rng.normal(scale=scale, size=v.shape) for k, v in net.init_params(rng).items()}


def check_end_to_end(cfg, seed):
    """Parameter gradients along random directions, the input gradient entry by entry, and
    the same parameter gradients without the input's."""
    net, rng = UNet(cfg), rng_from(seed)
    params = random_params(net, rng)
    xt, t = draw(net, rng)
    z, cache = net.forward(xt, t, params)
    assert z.shape == (2, 2 * net.D) and z.dtype == np.float64
    dz = rng.normal(size=z.shape)
    dxt, grads = net.backward(dz, cache)
    assert sorted(grads) == sorted(params)
    loss = lambda theta: (net.forward(xt, t, unflat(theta, params))[0] * dz).sum()
    for _ in range(3):
        assert directional_error(loss, flat(params), flat(grads), rng, abs(z * dz).sum()) < TOL
    assert jvp_error(lambda x: net.forward(x, t, params)[0], xt, dz, dxt) < TOL
    dxt_none, same = net.backward(dz, cache, need_dxt=False)          # what a fixed schedule asks for
    assert dxt_none is None and all(np.array_equal(same[k], grads[k]) for k in grads)


@given(cfg=configs(), seed=seeds)
def test_backward_end_to_end(cfg, seed):
    check_end_to_end(cfg, seed)


@settings(max_examples=2)
@given(seed=seeds)
def test_every_parameter_gradient(seed):
    """Entry by entry on a two-level network with attention and both kinds of skip (the
    directional check sees only sums); 566 parameters."""
    net = UNet(UNetConfig(size=4, T=10, widths=(1, 2), emb_dim=1, groups=1))
    rng = rng_from(seed)
    params = random_params(net, rng)
    xt, t = draw(net, rng)
    dz = rng.normal(size=(2, 2 * net.D))
    _, grads = net.backward(dz, net.forward(xt, t, params)[1], need_dxt=False)
    for name, p in params.items():
        assert jvp_error(lambda _: net.forward(xt, t, params)[0], p, dz, grads[name]) < TOL, name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("widths", [(16, 32, 32), (8,)])
def test_untrained_network_outputs_zero(dtype, widths):
    net = UNet(UNetConfig(widths=widths))
    params = net.init_params(np.random.default_rng(0), dtype)
    z, cache = net.forward(np.random.default_rng(1).normal(size=(3, 256)), np.array([1, 7, 1000]), params)
    assert z.dtype == dtype and z.shape == (3, 512) and not z.any()
    dxt, grads = net.backward(np.ones_like(z), cache)
    assert dxt.dtype == dtype and grads["out.W"].any()                 # out learns first


def test_z_layout():
    """``z_mu`` is the first C channels, ``z_Sigma`` the next C, each row-major over (H, W, C)."""
    N, H, W, C = 2, 3, 4, 2
    F = np.arange(N * H * W * 2 * C, dtype=float).reshape(N, H, W, 2 * C)
    z = z_from_maps(F)
    for n, h, w, c in np.ndindex(N, H, W, C):
        assert z[n, (h * W + w) * C + c] == F[n, h, w, c]              # z_mu, like x_t[n] = x[n].ravel()
        assert z[n, H * W * C + (h * W + w) * C + c] == F[n, h, w, C + c]   # z_Sigma
    np.testing.assert_array_equal(maps_from_z(z, (N, H, W, C)), F)


def test_out_bias_reaches_its_half_of_z():
    """The network hands its last layer's channels to ``z_from_maps``: with ``out.W = 0`` the
    bias's mean channels fill ``z_mu`` and its variance channels ``z_Sigma``, at every pixel."""
    net = UNet(UNetConfig(size=4, channels=2, T=30, widths=(8, 8)))
    params = net.init_params(np.random.default_rng(0))
    params["out.b"] = np.array([1.0, 2.0, -3.0, 4.0])                  # (mu c0, mu c1, Sigma c0, Sigma c1)
    z, _ = net.forward(np.random.default_rng(1).normal(size=(2, 32)), np.array([2, 30]), params)
    np.testing.assert_array_equal(z[:, :32].reshape(2, 4, 4, 2), np.broadcast_to([1.0, 2.0], (2, 4, 4, 2)))
    np.testing.assert_array_equal(z[:, 32:].reshape(2, 4, 4, 2), np.broadcast_to([-3.0, 4.0], (2, 4, 4, 2)))


def test_single_level_is_a_stack_of_residual_blocks():
    """``widths`` of length 1: no pooling or upsampling, every block at full resolution."""
    cfg = UNetConfig(size=6, widths=(4,), blocks=2, groups=2, emb_dim=3)
    names = list(param_shapes(cfg))
    assert not any(".up." in n for n in names) and "mid.attn.qkv.W" in names
    assert [n[:-len(".norm1.g")] for n in names if n.endswith("norm1.g")] == [
        "down0.block0", "down0.block1", "mid.block0", "mid.block1", "up0.block0", "up0.block1"]
    assert param_shapes(cfg)["up0.block0.conv1.W"] == (3, 3, 8, 4)     # reads [h, skip_0]
    check_end_to_end(cfg, seed=4)


def test_time_enters():
    net = UNet(UNetConfig(size=4, T=20, widths=(4, 4), groups=2))
    params, x = random_params(net, np.random.default_rng(0)), np.random.default_rng(1).normal(size=(1, 16))
    assert not np.allclose(net.forward(x, np.array([3]), params)[0], net.forward(x, np.array([4]), params)[0])


def test_float32_forward_is_float64_rounded():
    """The default network with random parameters in float32 and float64: float32 carries a
    relative error of 6e-8 per operation, grown by depth (about 20 layers, GroupNorm dividing
    by the deviations of its groups); when written the outputs differed by 7.4e-7 of their
    largest entry, and we accept 1e-5 (a float32-only error in a formula would be O(1))."""
    net, rng = UNet(UNetConfig()), np.random.default_rng(5)
    p64 = random_params(net, rng, scale=0.1)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    xt, t = draw(net, rng, N=4)
    z64, z32 = net.forward(xt, t, p64)[0], net.forward(xt, t, p32)[0]
    assert z32.dtype == np.float32 and np.abs(z64).max() > 0.1
    assert np.abs(z32 - z64).max() < 1e-5 * np.abs(z64).max()


def test_initialization():
    net = UNet(UNetConfig())
    a, b = net.init_params(np.random.default_rng(3)), net.init_params(np.random.default_rng(3))
    assert list(a) == list(param_shapes(net.cfg)) and all(np.array_equal(a[k], b[k]) for k in a)
    assert all(a[k].shape == s for k, s in param_shapes(net.cfg).items())
    assert not a["up1.block0.conv2.W"].any() and not a["mid.attn.out.W"].any() and not a["out.W"].any()
    assert a["mid.block0.conv1.W"].std() == pytest.approx(1 / np.sqrt(9 * 32), rel=0.05)   # variance 1 / fan_in
    assert (a["down1.block0.norm2.g"] == 1).all() and not a["down1.block0.skip.b"].any()


def test_config_round_trip_and_errors():
    net = UNet(UNetConfig(size=8, channels=3, widths=[8, 16], blocks=2, attention=False, groups=4))
    assert net.cfg.widths == (8, 16)
    assert UNet.from_config(json.loads(json.dumps(net.config()))).cfg == net.cfg
    assert net.config()["kind"] == "unet" and UNet(net.config()).cfg == net.cfg
    for kwargs, message in (({"widths": (16, 12)}, "groups = 8 must divide every width"),
                            ({"size": 10}, "divisible by 2\\^\\(len\\(widths\\) - 1\\) = 4"),
                            ({"widths": ()}, "widths must be a non-empty sequence"),
                            ({"widths": "16"}, "widths must be a non-empty sequence"),
                            ({"kernel": 2}, "kernel must be odd"),
                            ({"T": 1}, "T must be an integer >= 2"),
                            ({"blocks": 0}, "blocks must be an integer >= 1")):
        with pytest.raises(ValueError, match=message):
            UNetConfig(**kwargs)
    with pytest.raises(TypeError, match="attention must be True or False"):
        UNetConfig(attention=1)


def test_bad_inputs_are_one_clear_line():
    net = UNet(UNetConfig(size=4, T=10, widths=(8, 8)))
    params, x = net.init_params(np.random.default_rng(0)), np.zeros((2, 16))
    for t, message in ((np.array([0, 3]), "t must hold integers in 1..10"),
                       (np.array([1, 11]), "t must hold integers in 1..10"),
                       (np.array([1.0, 2.0]), "t must hold integers in 1..10 .* dtype float64"),
                       (np.array([1]), r"t must have shape \(2\)")):
        with pytest.raises(ValueError, match=message):
            net.forward(x, t, params)
    with pytest.raises(ValueError, match=r"x_t must have shape \(N, 16\)"):
        net.forward(np.zeros((2, 10)), np.array([1, 2]), params)


def test_backward_function_form():
    """The module-level pair keeps the contract: ``unet_backward(dz, cache) -> (dx, dparams)``."""
    net = UNet(UNetConfig(size=4, T=5, widths=(2,), groups=1))
    params = random_params(net, np.random.default_rng(2))
    xt, t = draw(net, np.random.default_rng(3))
    z, cache = net.forward(xt, t, params)
    dx, dparams = unet_backward(np.ones_like(z), cache)
    assert dx.shape == xt.shape and set(dparams) == set(params)
