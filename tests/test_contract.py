"""The one contract every differentiable piece keeps, checked on all of them at once.

``thing_forward(inputs...) -> (out, cache)`` with a named cache (a ``NamedTuple``),
``thing_backward(upstream gradients..., cache)`` whose other parameters, if any,
are keyword-only flags.
"""
import inspect

import numpy as np
import pytest

from numpy_diffusion.gaussian import bound, forward, reverse, schedule, tables
from numpy_diffusion.nn import layers, mlp, network, readout

rng = np.random.default_rng(0)
x, W, b = rng.normal(size=(6, 3)), rng.normal(size=(3, 4)), rng.normal(size=4)
T, t = 5, np.array([2, 3, 5, 2, 4, 5])
tab, _ = tables.tables_forward(schedule.baseline_beta(schedule.ScheduleConfig(T=T)))
net_cfg = network.NetConfig(D=3, T=T, hidden=(4,), n_bumps=2, fourier=2)
net_params = network.init_network(net_cfg, rng)
G = network.temporal_basis(net_cfg)

# name -> (forward call, backward function, number of upstream gradients)
PAIRS = {
    "linear": (lambda: layers.linear_forward(x, W, b), layers.linear_backward, 1),
    **{name: (lambda f=f: f(x), bwd, 1) for name, (f, bwd) in layers.ACTIVATIONS.items()},
    "fourier": (lambda: layers.fourier_forward(x, W), layers.fourier_backward, 1),
    "rbf": (lambda: layers.rbf_forward(x, W.T, np.zeros(4)), layers.rbf_backward, 1),
    "readout": (lambda: readout.readout_forward(x, t, rng.normal(size=(3, 2, 4)), np.zeros((2, 4)),
                                                readout.bump_basis(T, 2)), readout.readout_backward, 1),
    "step_readout": (lambda: readout.step_readout_forward(x, t, rng.normal(size=(3, T, 4)), np.zeros((T, 4))),
                     readout.step_readout_backward, 1),
    "mlp": (lambda: mlp.mlp_forward(x, mlp.init_mlp((3, 4, 2), rng)), mlp.mlp_backward, 1),
    "network": (lambda: network.network_forward(x, t, net_params, net_cfg, G), network.network_backward, 1),
    "tables": (lambda: tables.tables_forward(tab["beta"]), tables.tables_backward, 1),
    "schedule": (lambda: schedule.schedule_forward(schedule.ScheduleConfig(T=T, learn=True, n_bumps=3),
                                                   np.zeros(3)), schedule.schedule_backward, 1),
    "q_sample": (lambda: forward.q_sample_forward(x, t, x, tab), forward.q_sample_backward, 1),
    "q_posterior": (lambda: forward.q_posterior_forward(x, x, t, tab), forward.q_posterior_backward, 2),
    "p_mean_logvar": (lambda: reverse.p_mean_logvar_forward(np.zeros((6, 6)), x, t, tab, param="paper"),
                      reverse.p_mean_logvar_backward, 2),
    "kl": (lambda: bound.kl_forward(x, x[:, :1], x, x), bound.kl_backward, 1),
    "bound": (lambda: bound.bound_forward(np.zeros((6, 6)), x, x, t, np.ones(6), tab, param="bounded"),
              bound.bound_backward, 1),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_pair_has_a_named_cache_and_keyword_only_flags(name):
    forward_call, backward, n_upstream = PAIRS[name]
    _, cache = forward_call()
    assert isinstance(cache, tuple) and hasattr(cache, "_fields"), f"{name}: the cache must be a NamedTuple"
    params = list(inspect.signature(backward).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert [p.name for p in positional][-1] == "cache" and len(positional) == n_upstream + 1, name
    assert all(p.kind == p.KEYWORD_ONLY for p in params[len(positional):]), f"{name}: flags keyword-only"
