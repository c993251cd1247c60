"""The last reverse step is the forward kernel reversed, never the learned one (App. B.2, eq. 44).

Through the models' public ``sample``: with a per-step readout (the identity
basis, whose row ``t - 1`` is step ``t``'s readout), pushing the readout of
``t = 1`` to either extreme must leave every sample as it was, draw for draw;
the same push at ``t = 2`` must change them (so the test would see a sampler
that read the learned kernel at ``t = 1``).
"""
import numpy as np
import pytest

from numpy_diffusion.binomial.model import BinomialDiffusion
from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.gaussian.schedule import ScheduleConfig
from numpy_diffusion.nn.network import NetConfig


def binomial():
    return BinomialDiffusion(D=6, T=5, pi=0.2, hidden=(8,), basis="identity")


def gaussian():
    net = NetConfig(D=2, T=5, net="mlp", hidden=(8,), basis="identity")
    return GaussianDiffusion(ModelConfig(net=net, schedule=ScheduleConfig(T=5, beta_1=1e-3), param="reference"))


def pushed(params, t, by):
    """``params`` with step ``t``'s readout bias moved by ``by`` (a new dict)."""
    out = {k: v.copy() for k, v in params.items()}
    out["readout.b"][t - 1] += by
    return out


@pytest.mark.parametrize("make", [binomial, gaussian])
def test_sampling_ends_with_the_fixed_step_not_the_learned_one(make):
    model = make()
    params = model.init_params(np.random.default_rng(0))
    params["readout.W"][...] = 0.1 * np.random.default_rng(1).standard_normal(params["readout.W"].shape)
    draw = lambda p: model.sample(p, 500, np.random.default_rng(2))   # noqa: E731  the same draws
    base = draw(params)
    for by in (-30.0, 30.0):
        assert np.array_equal(draw(pushed(params, 1, by)), base)     # t = 1's readout is never read
        assert not np.array_equal(draw(pushed(params, 2, by)), base)  # t = 2's is
