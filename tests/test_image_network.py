"""The image network end to end: layout of z, the readout's normalization, and the
hand-written backward against finite differences (float64).

The whole-parameter check runs along random directions (two loss evaluations
each); a correct gradient gives a relative error near 1e-9, a wrong one O(1).
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.gradcheck import roundoff_floor
from numpy_diffusion.image.network import ImageNetConfig, ImageNetwork, image_net_backward
from strategies import rng_from, seeds
from test_conv import jvp_error


def directional_error(loss, theta, grad, rng, scale, delta=1e-6):
    """Relative error of ``grad . d`` against the central difference along a random unit ``d``
    (two loss evaluations, any number of parameters); differences below the round-off floor
    of a loss whose terms sum to ``scale`` in magnitude are compared in absolute terms."""
    d = rng.standard_normal(theta.shape)
    d /= np.linalg.norm(d)
    numeric = (loss(theta + delta * d) - loss(theta - delta * d)) / (2 * delta)
    analytic = float(grad @ d)
    return abs(analytic - numeric) / max(abs(analytic) + abs(numeric), roundoff_floor(scale, delta))

TOL = 1e-5

configs = st.fixed_dictionaries(dict(
    size=st.sampled_from([4, 8]), channels=st.integers(1, 2), T=st.integers(2, 50), n_scales=st.integers(1, 3),
    kernel=st.sampled_from([1, 3]), n_hidden_conv=st.integers(1, 4), n_layers_conv=st.integers(0, 2),
    n_hidden_pixel=st.integers(1, 4), n_layers_pixel=st.integers(0, 2), n_temporal_basis=st.integers(1, 4),
    n_layers_dense=st.integers(0, 2), n_hidden_dense=st.integers(1, 5), n_dense_channels=st.integers(1, 3),
    time_embedding=st.sampled_from([0, 0, 1, 4]))).filter(
        lambda c: not c["time_embedding"] or c["n_layers_conv"] or c["n_layers_pixel"]).map(
        lambda c: ImageNetConfig(**c))   # a time embedding needs layers to shift


def random_params(net, rng):
    """Initial parameters with every array random, so that no gradient is trivially zero."""
    return {k: rng.normal(scale=0.7, size=v.shape) for k, v in net.init_params(rng).items()}


def flat(params):
    return np.concatenate([params[k].ravel() for k in sorted(params)])


def unflat(theta, like):
    out, i = {}, 0
    for k in sorted(like):
        out[k] = theta[i:i + like[k].size].reshape(like[k].shape)
        i += like[k].size
    return out


def draw(net, rng, N=2):
    return rng.normal(size=(N, net.D)), rng.integers(1, net.T + 1, size=N)


@given(cfg=configs, seed=seeds)
def test_backward_end_to_end(cfg, seed):
    net, rng = ImageNetwork(cfg), rng_from(seed)
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
    dxt_none, same = net.backward(dz, cache, need_dxt=False)           # what a fixed schedule asks for
    assert dxt_none is None and all(np.array_equal(same[k], grads[k]) for k in grads)


@given(seed=seeds)
def test_every_parameter_gradient(seed):
    """Entry by entry on a small two-scale network (the directional check sees only sums)."""
    net = ImageNetwork(ImageNetConfig(size=4, T=10, n_scales=2, n_hidden_conv=2, n_layers_conv=2,
                                      n_hidden_pixel=3, n_temporal_basis=3, n_layers_dense=1,
                                      n_hidden_dense=3, n_dense_channels=2, time_embedding=3))
    rng = rng_from(seed)
    params = random_params(net, rng)
    xt, t = draw(net, rng)
    dz = rng.normal(size=(2, 2 * net.D))
    _, grads = net.backward(dz, net.forward(xt, t, params)[1], need_dxt=False)
    for name, p in params.items():
        assert jvp_error(lambda _: net.forward(xt, t, params)[0], p, dz, grads[name]) < TOL


def test_untrained_network_outputs_zero():
    net = ImageNetwork(ImageNetConfig(size=8, T=20))
    params = net.init_params(np.random.default_rng(0), np.float32)
    z, _ = net.forward(np.random.default_rng(1).normal(size=(3, 64)), np.array([1, 7, 20]), params)
    assert z.dtype == np.float32 and not z.any()


def test_constant_coefficients_give_constant_outputs_in_the_right_halves():
    """The bumps sum to one over j (eq. 63): equal coefficients for every j read out as that
    value at every t; the first C J coefficients feed z_mu = z[:, :D], the rest z_Sigma."""
    cfg = ImageNetConfig(size=4, channels=2, T=30, n_scales=2, n_temporal_basis=5)
    net = ImageNetwork(cfg)
    params = net.init_params(np.random.default_rng(0))
    params["readout.b"] = np.repeat([1.0, 2.0, -3.0, 4.0], 5)            # (mu c0, mu c1, Sigma c0, Sigma c1) x J
    z, _ = net.forward(np.zeros((2, cfg.D)), np.array([2, 30]), params)
    D = cfg.D
    np.testing.assert_allclose(z[:, :D].reshape(2, 4, 4, 2), np.broadcast_to([1.0, 2.0], (2, 4, 4, 2)))
    np.testing.assert_allclose(z[:, D:].reshape(2, 4, 4, 2), np.broadcast_to([-3.0, 4.0], (2, 4, 4, 2)))


@pytest.mark.parametrize("cfg", [ImageNetConfig(size=4, T=10, n_scales=2),
                                 ImageNetConfig(size=4, T=10, n_scales=2, n_layers_dense=1, n_hidden_dense=3),
                                 ImageNetConfig(size=4, T=10, n_layers_conv=0, n_layers_pixel=0, n_layers_dense=2,
                                                n_hidden_dense=3)])
def test_no_input_gradient_when_not_needed(cfg):
    net = ImageNetwork(cfg)
    rng = np.random.default_rng(0)
    params = random_params(net, rng)
    xt, t = draw(net, rng)
    z, cache = net.forward(xt, t, params)
    dz = rng.normal(size=z.shape)
    dxt, grads = net.backward(dz, cache, need_dxt=False)
    assert dxt is None
    for name, g in net.backward(dz, cache)[1].items():
        np.testing.assert_allclose(grads[name], g, rtol=1e-12)


def test_dense_pathway_sees_the_whole_image():
    """Without convolutions the 1 x 1 layers see one pixel each; the dense pathway (on the
    whole image vector) makes every output depend on every pixel, and only on the pixels
    without it."""
    rng = np.random.default_rng(3)
    xt, t = rng.normal(size=(1, 16)), np.array([5])
    for n_layers_dense, reaches in ((0, False), (1, True)):
        net = ImageNetwork(ImageNetConfig(size=4, T=10, n_layers_conv=0, n_layers_dense=n_layers_dense,
                                          n_hidden_dense=4))
        params = random_params(net, rng)
        moved = xt.copy()
        moved[0, 0] += 1.0                                              # the top-left pixel
        change = np.abs(net.forward(moved, t, params)[0] - net.forward(xt, t, params)[0])
        assert change[0, 0] > 1e-6 and change[0, 16] > 1e-6              # its own z_mu and z_Sigma
        far = change[0, [15, 31]]                                       # the far corner's z_mu and z_Sigma
        assert (far > 1e-6).all() if reaches else not far.any()


def test_config_round_trip_and_errors():
    renamed = {("n_layers_global" if k == "n_layers_dense" else k): v for k, v in ImageNetConfig().to_dict().items()}
    with pytest.raises(ValueError, match=r"missing \['n_layers_dense'\], unknown \['n_layers_global'\]"):
        ImageNetwork.from_config(renamed)                               # other names: refused, not defaulted
    fewer = {k: v for k, v in ImageNetConfig().to_dict().items() if k != "n_dense_channels"}
    with pytest.raises(ValueError, match=r"missing \['n_dense_channels'\]"):
        ImageNetwork.from_config(fewer)
    wide = ImageNetwork(ImageNetConfig(size=8, n_layers_dense=2, n_hidden_dense=7, n_dense_channels=3))
    assert ImageNetwork.from_config(wide.config()).cfg == wide.cfg
    net = ImageNetwork(ImageNetConfig(size=8, n_scales=4))
    assert ImageNetwork.from_config(net.config()).cfg == net.cfg
    with pytest.raises(ValueError, match="divisible"):
        ImageNetConfig(size=12, n_scales=4)
    with pytest.raises(ValueError, match="odd"):
        ImageNetConfig(kernel=2)
    with pytest.raises(ValueError, match=r"x_t must have shape \(N, 64\)"):
        net.forward(np.zeros((1, 10)), np.array([1]), net.init_params(np.random.default_rng(0)))


def test_backward_function_form():
    """The module-level pair follows the contract: ``image_net_backward(dz, cache) -> (dx, dparams)``."""
    net = ImageNetwork(ImageNetConfig(size=4, T=5, n_scales=1))
    rng = np.random.default_rng(2)
    params = random_params(net, rng)
    xt, t = draw(net, rng)
    z, cache = net.forward(xt, t, params)
    dx, dparams = image_net_backward(np.ones_like(z), cache)
    assert dx.shape == xt.shape and set(dparams) == set(params)


def test_time_embedding_starts_as_the_papers_network():
    """Its shifts start at zero: with the same other parameters, z is the paper network's.  With one
    bump (J = 1, g(t) = 1: a readout without t) the paper's z does not depend on t at all; once a
    shift is nonzero, the embedding's z does, through the layers."""
    rng = np.random.default_rng(4)
    cfg = dict(size=4, T=30, n_scales=2, n_hidden_conv=3, n_layers_conv=2, n_hidden_pixel=3, n_temporal_basis=1)
    paper, timed = ImageNetwork(ImageNetConfig(**cfg)), ImageNetwork(ImageNetConfig(**cfg, time_embedding=5))
    p = random_params(paper, rng)
    q = {**timed.init_params(rng), **p}                                # the same shared weights, shifts at 0
    xt, t = draw(paper, rng, N=3)
    np.testing.assert_array_equal(paper.forward(xt, t, p)[0], timed.forward(xt, t, q)[0])
    early, late = np.full(3, 7), np.full(3, 16)
    np.testing.assert_array_equal(paper.forward(xt, early, p)[0], paper.forward(xt, late, p)[0])
    q["conv0.emb.W"] = rng.normal(size=q["conv0.emb.W"].shape)
    assert not np.allclose(timed.forward(xt, early, q)[0], timed.forward(xt, late, q)[0])
