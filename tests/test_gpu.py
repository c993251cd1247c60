"""CuPy parity: the same host-drawn inputs through NumPy and CuPy, outputs compared in float64.

Marked ``gpu``; skipped where CuPy is missing or no GPU is usable (see conftest.py).
Run them with ``python -m pytest -m gpu`` on a machine with an NVIDIA GPU.
Tolerance: float64 on both sides, different reduction orders: 1e-10 relative.
"""
import numpy as np
import pytest

from numpy_diffusion.nn import layers, readout
from numpy_diffusion.backend import get_backend, to_host
from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.nn.network import NetConfig
from numpy_diffusion.nn.optim import Adam
from numpy_diffusion.gaussian.schedule import ScheduleConfig

pytestmark = pytest.mark.gpu
RTOL = 1e-10


@pytest.fixture(scope="module")
def cp():
    return get_backend("cupy")


def close(a, b):
    np.testing.assert_allclose(to_host(a), to_host(b), rtol=RTOL, atol=1e-12)


def test_layers_match(cp):
    rng = np.random.default_rng(0)
    x, W, b, dout = rng.normal(size=(64, 7)), rng.normal(size=(7, 5)), rng.normal(size=5), rng.normal(size=(64, 5))
    for xp_args in ((x, W, b),):
        out_h, cache_h = layers.linear_forward(*xp_args)
        out_d, cache_d = layers.linear_forward(*(cp.asarray(a) for a in xp_args))
        close(out_h, out_d)
        for gh, gd in zip(layers.linear_backward(dout, cache_h), layers.linear_backward(cp.asarray(dout), cache_d)):
            close(gh, gd)
    for fwd, bwd in layers.ACTIVATIONS.values():
        (oh, ch), (od, cd) = fwd(x), fwd(cp.asarray(x))
        close(oh, od)
        close(bwd(x, ch), bwd(cp.asarray(x), cd))
    B = rng.normal(size=(7, 4))
    (oh, ch), (od, cd) = layers.fourier_forward(x, B), layers.fourier_forward(cp.asarray(x), cp.asarray(B))
    close(oh, od)
    dF = rng.normal(size=oh.shape)
    for gh, gd in zip(layers.fourier_backward(dF, ch), layers.fourier_backward(cp.asarray(dF), cd)):
        close(gh, gd)


def test_rbf_and_readouts_match(cp):
    rng = np.random.default_rng(1)
    x, c, lw = rng.normal(size=(50, 2)), rng.normal(size=(16, 2)), rng.normal(size=16) * 0.3
    (oh, ch), (od, cd) = layers.rbf_forward(x, c, lw), layers.rbf_forward(*(cp.asarray(a) for a in (x, c, lw)))
    close(oh, od)
    d = rng.normal(size=oh.shape)
    for gh, gd in zip(layers.rbf_backward(d, ch), layers.rbf_backward(cp.asarray(d), cd)):
        close(gh, gd)
    h, t = rng.normal(size=(50, 6)), rng.integers(1, 11, 50)
    W, b, d = rng.normal(size=(6, 10, 3)), rng.normal(size=(10, 3)), rng.normal(size=(50, 3))
    G = readout.bump_basis(10, 10)
    (oh, ch) = readout.readout_forward(h, t, W, b, G)
    (od, cd) = readout.readout_forward(*(cp.asarray(a) for a in (h, t, W, b, G)))
    close(oh, od)
    for gh, gd in zip(readout.readout_backward(d, ch), readout.readout_backward(cp.asarray(d), cd)):
        close(gh, gd)
    (oh, ch) = readout.step_readout_forward(h, t, W, b)
    (od, cd) = readout.step_readout_forward(*(cp.asarray(a) for a in (h, t, W, b)))
    close(oh, od)
    for gh, gd in zip(readout.step_readout_backward(d, ch), readout.step_readout_backward(cp.asarray(d), cd)):
        close(gh, gd)


@pytest.mark.parametrize("learn", [False, True])
def test_model_loss_grads_and_samples_match(cp, learn):
    cfg = ModelConfig(net=NetConfig(T=12, hidden=(16, 16), fourier=8, n_bumps=4),
                      schedule=ScheduleConfig(T=12, beta_1=1e-6, baseline="logsnr", learn=learn,
                                              learned_form="decrements"))
    model = GaussianDiffusion(cfg)
    rng = np.random.default_rng(2)
    host = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in model.init_params(rng).items()}
    dev = {k: cp.asarray(v) for k, v in host.items()}
    x0 = rng.normal(size=(40, 2))
    t, eps, w = model.draw(rng, 40)
    loss_h, g_h = model.loss_and_grads(host, x0, t, eps, w)
    loss_d, g_d = model.loss_and_grads(dev, cp.asarray(x0), cp.asarray(t), cp.asarray(eps), cp.asarray(w))
    assert loss_d == pytest.approx(loss_h, rel=RTOL)
    for k in g_h:
        close(g_h[k], g_d[k])
    close(model.sample(host, 30, np.random.default_rng(3)), model.sample(dev, 30, np.random.default_rng(3)))
    res_h = model.evaluate(host, x0, np.random.default_rng(4))
    res_d = model.evaluate(dev, cp.asarray(x0), np.random.default_rng(4))
    assert res_d["K_bits"] == pytest.approx(res_h["K_bits"], rel=1e-9)


def test_adam_matches(cp):
    rng = np.random.default_rng(5)
    th, grads = rng.normal(size=9), rng.normal(size=(3, 9))
    td = cp.asarray(th)
    oh, od = Adam(9), Adam(9, xp=cp)
    for g in grads:
        oh.step(th, g)
        od.step(td, cp.asarray(g))
    close(th, td)
