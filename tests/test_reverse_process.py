"""The reverse kernel's four parameterizations (eqs. 64-65, the reference code, §2.6, DDPM's eps) and sampling."""
import numpy as np
import pytest
from hypothesis import given

from numpy_diffusion.gradcheck import check_gradient
from numpy_diffusion.gaussian.reverse import p_mean_logvar_backward, p_mean_logvar_forward, p_sample_loop
from numpy_diffusion.gaussian.schedule import ScheduleConfig, schedule_forward
from numpy_diffusion.gaussian.tables import tables_backward, tables_forward

from strategies import fixed_schedules, seeds
from strategies import parameterizations as params

schedules = fixed_schedules(max_T=30)


def make_tables(beta):
    return tables_forward(beta)[0]


def p_mean_logvar(z, xt, t, tab, param):
    """``(mu_p, logvar_p, cache)``, the pair's outputs unpacked."""
    (mu_p, logvar_p), cache = p_mean_logvar_forward(z, xt, t, tab, param=param)
    return mu_p, logvar_p, cache


def setup(cfg, seed, N=5, D=2):
    rng = np.random.default_rng(seed)
    beta = schedule_forward(cfg)[0]
    return (rng, beta, make_tables(beta), rng.normal(size=(N, 2 * D)), rng.normal(size=(N, D)),
            rng.integers(2, cfg.T + 1, N))


@given(cfg=schedules, seed=seeds)
def test_zero_outputs_reproduce_the_forward_kernel(cfg, seed):
    _, _, tab, _, xt, t = setup(cfg, seed)
    b = tab["beta"][t][:, None]
    zero, bounded_z = np.zeros((5, 4)), np.c_[np.zeros((5, 2)), np.full((5, 2), 40.0)]
    # eps: the noise estimate sqrt(1 - alpha_bar_t) x_t (exact for N(0, I) data) gives the forward mean
    eps_z = np.c_[tab["sqrt_one_minus_alpha_bar"][t][:, None] * xt, np.full((5, 2), 40.0)]
    for param, z, mean in [("reference", zero, np.sqrt(1 - b) * xt),
                           ("bounded", bounded_z, np.sqrt(1 - b) * xt),   # sigmoid(40) = 1: Sigma = beta_t
                           ("eps", eps_z, np.sqrt(1 - b) * xt),
                           ("paper", zero, (1 - b) * xt)]:                # eq. (65) at z = 0
        mu_p, logvar_p, _ = p_mean_logvar(z, xt, t, tab, param)
        assert np.allclose(mu_p, mean, rtol=1e-14, atol=1e-15)
        # log sigmoid(logit(beta)) in float64: a few ulps of |log beta| <= 14
        assert np.allclose(logvar_p, np.log(b), rtol=1e-13, atol=1e-13)


@given(cfg=schedules, seed=seeds)
def test_bounded_variance_lies_between_posterior_variance_and_beta(cfg, seed):
    _, _, tab, z, xt, t = setup(cfg, seed)
    logvar_p = p_mean_logvar(10 * z, xt, t, tab, "bounded")[1]
    lo, hi = tab["log_beta_tilde"][t][:, None], tab["log_beta"][t][:, None]
    assert np.all((logvar_p >= lo - 1e-12) & (logvar_p <= hi + 1e-12))  # interpolation, up to rounding


@given(cfg=schedules, seed=seeds, param=params)
def test_backward_matches_finite_differences(cfg, seed, param):
    """Gradients to z, x_t and (through the tables) beta of sum(dmu mu_p + dlogvar logvar_p)."""
    rng, beta, tab, z, xt, t = setup(cfg, seed)
    dmu, dlogvar = rng.normal(size=xt.shape), rng.normal(size=xt.shape)

    def f(z=z, xt=xt, tab=tab):
        mu_p, logvar_p, _ = p_mean_logvar(z, xt, t, tab, param)
        return (dmu * mu_p).sum() + (dlogvar * logvar_p).sum()

    dz, dxt, dtables = p_mean_logvar_backward(dmu, dlogvar, p_mean_logvar(z, xt, t, tab, param)[2])
    # smooth functions of O(1) inputs: FD at h = 1e-6 agrees to ~1e-8 on O(1) entries and
    # ~1e-6 on entries far below the largest; a wrong rule reads O(1)
    assert check_gradient(lambda a: f(z=a), z, dz) < 1e-5
    assert check_gradient(lambda a: f(xt=a), xt, dxt) < 1e-5
    dbeta = tables_backward(dtables, tables_forward(beta)[1])
    g = lambda log_b: f(tab=make_tables(np.r_[0.0, np.exp(log_b)]))  # noqa: E731  (log beta: scale-free)
    assert check_gradient(g, np.log(beta[1:]), dbeta[1:] * beta[1:]) < 1e-5


def test_bad_parameterization_and_shapes_raise_clear_errors():
    cfg = ScheduleConfig(T=5)
    _, _, tab, z, xt, t = setup(cfg, 0)
    with pytest.raises(ValueError, match="unknown parameterization 'ddpm'; allowed: paper, reference, bounded, eps"):
        p_mean_logvar(z, xt, t, tab, "ddpm")
    with pytest.raises(ValueError, match=r"z must have shape \(5, 4\)"):
        p_mean_logvar(z[:, :3], xt, t, tab, "paper")


# ---- sampling -----------------------------------------------------------------------

def zero_net(D):
    return lambda xt, t: np.zeros((xt.shape[0], 2 * D))


def test_sampling_shapes_and_determinism():
    T, D, n = 6, 2, 50
    tab = make_tables(schedule_forward(ScheduleConfig(T=T))[0])
    net = lambda xt, t: np.c_[np.tanh(xt), 0.1 * xt]                 # noqa: E731  any fixed network
    a = p_sample_loop(net, n, D, tab, np.random.default_rng(4), param="bounded")
    b, traj = p_sample_loop(net, n, D, tab, np.random.default_rng(4), param="bounded", trajectory=True)
    assert a.shape == (n, D) and traj.shape == (T + 1, n, D) and a.dtype == np.float64
    assert np.array_equal(a, b) and np.array_equal(traj[0], b)       # same seed, same draws
    c = p_sample_loop(net, n, D, tab, np.random.default_rng(5), param="bounded")
    assert not np.array_equal(a, c)


def test_sampling_applies_the_fixed_last_step():
    """x_0 = sqrt(alpha_1) x_1 + sqrt(beta_1) eps, eps the last draw (App. B.2, eq. 44)."""
    T, D, n = 5, 3, 20
    tab = make_tables(schedule_forward(ScheduleConfig(T=T, beta_1=1e-3))[0])
    x0, traj = p_sample_loop(zero_net(D), n, D, tab, np.random.default_rng(9), param="paper", trajectory=True)
    rng = np.random.default_rng(9)
    draws = [rng.standard_normal((n, D)) for _ in range(T + 1)]       # x_T, steps T..2, last step
    assert np.array_equal(traj[T], draws[0])
    expected = np.sqrt(1 - 1e-3) * traj[1] + np.sqrt(1e-3) * draws[-1]
    assert np.allclose(x0, expected, rtol=1e-15, atol=1e-15)


def test_forward_kernel_as_reverse_kernel_keeps_samples_standard_normal():
    """With z = 0 ('reference'), each step maps N(0, I) to N(0, alpha_t + beta_t) = N(0, I)."""
    T, D, n = 10, 2, 20000
    tab = make_tables(schedule_forward(ScheduleConfig(T=T))[0])
    x = p_sample_loop(zero_net(D), n, D, tab, np.random.default_rng(2), param="reference")
    # n = 20000: stderr of the mean 0.007 and of the variance 0.01; 5 standard errors
    assert np.all(np.abs(x.mean(0)) < 0.035) and np.all(np.abs(x.var(0) - 1) < 0.05)


@given(cfg=schedules, seed=seeds)
def test_eps_mean_is_the_posterior_mean_at_the_true_noise(cfg, seed):
    """DDPM's eq. (11): predicting the very noise that made x_t gives the posterior mean mu_q
    (``x_0`` recovered exactly), and the mean gap is ``beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t))``
    times the noise error."""
    from numpy_diffusion.gaussian.forward import q_posterior_forward, q_sample_forward
    rng, _, tab, z, x0, t = setup(cfg, seed)
    eps = rng.normal(size=x0.shape)
    xt = q_sample_forward(x0, t, eps, tab)[0]
    mu_q = q_posterior_forward(x0, xt, t, tab)[0][0]
    mu_p = p_mean_logvar(np.c_[eps, z[:, 2:]], xt, t, tab, "eps")[0]
    scale = np.abs(xt).max() / tab["sqrt_alpha"][t].min()                  # size of the terms
    assert np.allclose(mu_p, mu_q, rtol=0, atol=1e-12 * scale)
    err = z[:, :2]                                                          # a wrong noise estimate
    mu_wrong = p_mean_logvar(np.c_[eps + err, z[:, 2:]], xt, t, tab, "eps")[0]
    c = (tab["beta"][t] / (tab["sqrt_alpha"][t] * tab["sqrt_one_minus_alpha_bar"][t]))[:, None]
    assert np.allclose(mu_q - mu_wrong, c * err, rtol=1e-9, atol=1e-12 * scale)
