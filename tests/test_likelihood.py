"""The importance-weighted log likelihood (Burda et al. 2016) of a Gaussian diffusion."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.datasets import swiss_roll
from numpy_diffusion.gaussian.bound import bound_all_t, standard_normal_logpdf
from numpy_diffusion.gaussian.likelihood import (grouped_estimate, importance_weighted_log_likelihood, log_mean_exp,
                                                 log_weights)
from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.gaussian.schedule import ScheduleConfig
from numpy_diffusion.nn.network import NetConfig

from strategies import fixed_schedules, seeds


def small_model(schedule, param="reference"):
    return GaussianDiffusion(ModelConfig(net=NetConfig(D=2, T=schedule.T, hidden=(8,), n_bumps=3),
                                         schedule=schedule, param=param))


@given(schedule=fixed_schedules(max_T=20), seed=seeds, k=st.integers(1, 5))
def test_forward_kernel_reversed_under_pi_gives_log_pi_exactly(schedule, seed, k):
    # 'reference' at z = 0 (a zero readout) is N(sqrt(alpha_t) x_t, beta_t): the forward kernel
    # reversed under pi = N(0, I). Then pi(x_{t-1}) q(x_t|x_{t-1}) = pi(x_t) p(x_{t-1}|x_t) at every
    # step, the ratio telescopes to pi(x_0), and every trajectory's log w is log pi(x_0).
    model = small_model(schedule)
    rng = np.random.default_rng(seed)
    params = model.init_params(rng)
    assert not params["readout.W"].any()
    x0 = rng.normal(0, 2, (7, 2))
    log_w = log_weights(model.predict(params), x0, model.tables(params), "reference", rng)
    assert np.allclose(log_w, standard_normal_logpdf(x0), rtol=1e-10, atol=1e-9)   # float64 round-off
    L = importance_weighted_log_likelihood(model, params, x0, rng, k, chunk=10)   # chunks split the rows
    assert np.allclose(L, standard_normal_logpdf(x0), rtol=1e-10, atol=1e-9)


def trained_looking(param="bounded", seed=0):
    """A small model with a random readout: a reverse kernel far from the forward one."""
    model = small_model(ScheduleConfig(T=10, beta_1=1e-3, baseline="logsnr", log_snr_T=-3.0), param)
    rng = np.random.default_rng(seed)
    params = model.init_params(rng)
    params["readout.W"] = 0.5 * rng.standard_normal(params["readout.W"].shape)
    return model, params, swiss_roll(400, rng)


def paired_se(a):
    return a.std(ddof=1) / np.sqrt(a.size)


def test_one_trajectory_estimates_the_exact_bound():
    model, params, x0 = trained_looking()
    rng = np.random.default_rng(1)
    n = 10                                                      # ten k = 1 estimates per point, averaged
    L1 = importance_weighted_log_likelihood(model, params, np.tile(x0, (n, 1)), rng, k=1).reshape(n, -1).mean(0)
    K_exact = bound_all_t(model.predict(params), x0, model.tables(params), rng, param=model.cfg.param, n_eps=20)["K_exact"]
    diff = L1 - K_exact                                         # per point: E_q log w = K_exact(x0)
    assert abs(diff.mean()) < 4 * paired_se(diff), (diff.mean(), paired_se(diff))


def test_the_estimate_rises_with_k():
    model, params, x0 = trained_looking(param="paper")
    L = {k: importance_weighted_log_likelihood(model, params, x0, np.random.default_rng(k), k) for k in (1, 4, 32)}
    for lo, hi in ((1, 4), (4, 32)):
        gain = L[hi] - L[lo]
        assert gain.mean() > 4 * paired_se(gain), (lo, hi, gain.mean(), paired_se(gain))


@pytest.mark.parametrize("bad,match", [({"k": 0}, "k"), ({"chunk": 0}, "chunk"),
                                       ({"x0": np.zeros((3, 5))}, "x0")])
def test_clear_errors(bad, match):
    model, params, x0 = trained_looking()
    kwargs = {"x0": x0, "k": 2, **bad}
    with pytest.raises(ValueError, match=match):
        importance_weighted_log_likelihood(model, params, rng=np.random.default_rng(0), **kwargs)


def test_grouped_estimate_is_the_mean_over_groups():
    rng = np.random.default_rng(0)
    log_w = rng.normal(0, 3, (12, 5))
    assert np.allclose(grouped_estimate(log_w, 1), log_w.mean(0))
    assert np.allclose(grouped_estimate(log_w, 12), log_mean_exp(log_w))
    assert np.allclose(grouped_estimate(log_w, 4), np.mean([log_mean_exp(log_w[i:i + 4]) for i in (0, 4, 8)], 0))
    with pytest.raises(ValueError, match="divide"):
        grouped_estimate(log_w, 5)
