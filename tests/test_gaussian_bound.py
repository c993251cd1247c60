"""Gaussian KL and entropies, the forward process, and the bound of eq. (14)."""
import math

import numpy as np
import pytest
from hypothesis import given

from numpy_diffusion.gaussian.bound import (bound_all_t, bound_backward, bound_forward, entropy_terms,
                                            gaussian_entropy, kl_backward, kl_forward, standard_normal_logpdf)
from numpy_diffusion.gaussian.forward import q_posterior_forward, q_sample_backward, q_sample_forward
from numpy_diffusion.gaussian.schedule import ScheduleConfig, schedule_forward
from numpy_diffusion.gaussian.tables import add_grads, tables_backward, tables_forward
from numpy_diffusion.gradcheck import check_gradient

from strategies import dims, fixed_schedules, seeds
from strategies import parameterizations as params

schedules = fixed_schedules(max_T=40)


def tables_of_beta(beta):
    return tables_forward(beta)[0]


def tables_of(cfg):
    return tables_forward(schedule_forward(cfg)[0])[0]


def q_sample(x0, t, eps, tab):
    return q_sample_forward(x0, t, eps, tab)[0]


def q_posterior(x0, xt, t, tab):
    return q_posterior_forward(x0, xt, t, tab)[0]


def batch(rng, N, D, T):
    """Random data, frozen t in 2..T and eps, with the x_t they make."""
    x0, eps = rng.standard_normal((N, D)), rng.standard_normal((N, D))
    return x0, rng.integers(2, T + 1, N), eps


# ---- Gaussian KL and entropies ------------------------------------------------------

@given(seed=seeds, D=dims)
def test_kl_is_nonnegative_and_zero_for_equal_arguments(seed, D):
    rng = np.random.default_rng(seed)
    mu_q, mu_p = rng.normal(0, 2, (5, D)), rng.normal(0, 2, (5, D))
    logvar_q, logvar_p = rng.normal(0, 3, (5, 1)), rng.normal(0, 3, (5, D))
    assert np.all(kl_forward(mu_q, logvar_q, mu_p, logvar_p)[0] >= 0)
    same = kl_forward(mu_p, logvar_p, mu_p, logvar_p)[0]
    assert np.all(same == 0.0)                                       # exactly: every term cancels


def test_kl_matches_the_spec_formula():
    rng = np.random.default_rng(1)
    mu_q, mu_p, s_q, s_p = rng.normal(size=6), rng.normal(size=6), rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    spec = np.log(s_p / s_q) + (s_q**2 + (mu_q - mu_p) ** 2) / (2 * s_p**2) - 0.5
    ours = kl_forward(mu_q, 2 * np.log(s_q), mu_p, 2 * np.log(s_p))[0]
    assert np.allclose(ours, spec, rtol=1e-12, atol=1e-15)          # two float64 forms of one formula


@given(seed=seeds, D=dims)
def test_kl_backward_matches_finite_differences(seed, D):
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=(4, D)), rng.normal(size=(4, 1)), rng.normal(size=(4, D)), rng.normal(size=(4, D))]
    dKL = rng.normal(size=(4, D))
    grads = kl_backward(dKL, kl_forward(*args)[1])
    for i, g in enumerate(grads):
        def f(a, i=i):
            return (kl_forward(*[a if j == i else args[j] for j in range(4)])[0] * dKL).sum()
        assert g.shape == args[i].shape
        assert check_gradient(f, args[i], g) < 1e-5                   # smooth: ~1e-8, small entries ~1e-6


def test_entropies_and_null_log_likelihood():
    assert gaussian_entropy(0.0) == pytest.approx(0.5 * math.log(2 * math.pi * math.e), rel=1e-15)
    x = np.array([[0.0, 0.0], [1.0, -2.0]])
    assert np.allclose(standard_normal_logpdf(x), [-math.log(2 * math.pi), -math.log(2 * math.pi) - 2.5])


# ---- forward process ----------------------------------------------------------------

@given(cfg=schedules, seed=seeds)
def test_marginalizing_the_posterior_gives_the_previous_marginal(cfg, seed):
    """int q(x_{t-1}|x_t,x0) q(x_t|x0) dx_t = q(x_{t-1}|x0): compare first and second moments."""
    tab, x0 = tables_of(cfg), np.random.default_rng(seed).normal(size=(1, 3))
    for t in range(1, cfg.T + 1):
        tt = np.array([t])
        mean_xt = tab["sqrt_alpha_bar"][t] * x0                      # E[x_t | x0]
        mu_q, logvar_q = q_posterior(x0, mean_xt, tt, tab)          # mu_q is linear in x_t
        c_xt = q_posterior(np.zeros((1, 1)), np.ones((1, 1)), tt, tab)[0][0, 0]
        var = np.exp(logvar_q[0, 0]) + c_xt**2 * tab["one_minus_alpha_bar"][t]
        # float64 products of a few table entries: 1e-12 relative leaves room for cancellation
        assert np.allclose(mu_q, tab["sqrt_alpha_bar"][t - 1] * x0, rtol=1e-12, atol=1e-15)
        assert var == pytest.approx(tab["one_minus_alpha_bar"][t - 1], rel=1e-10, abs=1e-300)


def test_q_sample_is_the_closed_form_marginal():
    tab = tables_of(ScheduleConfig(T=10))
    rng = np.random.default_rng(0)
    x0, t, eps = batch(rng, 6, 2, 10)
    xt = q_sample(x0, t, eps, tab)
    expected = np.sqrt(tab["alpha_bar"][t])[:, None] * x0 + np.sqrt(1 - tab["alpha_bar"][t])[:, None] * eps
    assert np.allclose(xt, expected, rtol=1e-13)


# ---- the bound: exactness -----------------------------------------------------------

def sigma_points(T, D):
    """Rows (x0, eps) at (+-sqrt 2, 0), (0, +-sqrt 2) per dimension, for every t = 2..T.

    Every KL term is a quadratic in (x0_d, eps_d), and the average of a quadratic over
    these four points is its exact expectation under N(0, I): the bound's
    expectation over data ~ N(0, I) and eps, in closed form, with no sampling.
    """
    s = math.sqrt(2.0)
    pts = np.array([[s, 0.0], [-s, 0.0], [0.0, s], [0.0, -s]])
    t = np.repeat(np.arange(2, T + 1), 4)
    return np.tile(pts[:, :1], (T - 1, D)), t, np.tile(pts[:, 1:], (T - 1, D))


@given(cfg=schedules, D=dims, param=params)
def test_forward_kernel_as_reverse_kernel_gives_L_null(cfg, D, param):
    """Data ~ N(0, I), reverse kernel = forward kernel: K = L_null exactly in expectation.

    'reference' with z = 0, 'bounded' with z_S = 40 (sigmoid(40) = 1 in float64, so
    Sigma = beta_t) and 'eps' with z_S = 40 and z_mu = sqrt(1 - alpha_bar_t) x_t (the best
    noise estimate for N(0, I) data, which makes the mean sqrt(alpha_t) x_t) are exact.  'paper' with z = 0 has mean (1 - beta_t) x_t instead of
    sqrt(alpha_t) x_t, which adds (sqrt(alpha_t) - alpha_t)^2 E[x_t^2] / (2 beta_t) nats per
    dimension and step (E[x_t^2] = 1): we compare with L_null minus that closed-form gap.
    """
    T, tab = cfg.T, tables_of(cfg)
    x0, t, eps = sigma_points(T, D)
    z = np.zeros((t.size, 2 * D))
    z[:, D:] = 40.0 if param in ("bounded", "eps") else 0.0
    xt = q_sample(x0, t, eps, tab)
    if param == "eps":
        z[:, :D] = tab["sqrt_one_minus_alpha_bar"][t][:, None] * xt
    weights = np.full(t.size, T - 1.0)                               # uniform t: weight T - 1
    loss, _ = bound_forward(z, x0, xt, t, weights, tab, param=param)
    L_null = -0.5 * D * (math.log(2 * math.pi) + 1)                  # E log N(x0; 0, I)
    b = tab["beta"][2:]
    gap = D * np.sum((np.sqrt(1 - b) - (1 - b)) ** 2 / (2 * b)) if param == "paper" else 0.0
    # closed form: only float64 round-off, on terms of size |H| ~ 10 nats
    assert -float(loss) == pytest.approx(L_null - gap, abs=1e-10 * (1 + D * T))


def test_bound_exact_on_gaussian_data_matches_L_null_within_monte_carlo_error():
    """The evaluation path: Monte Carlo over eps and data, zero network in 'reference'."""
    T, D, N = 12, 2, 2000
    tab = tables_of(ScheduleConfig(T=T, beta_1=1e-5))
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((N, D))
    res = bound_all_t(lambda xt, t: np.zeros((xt.shape[0], 2 * D)), x0, tab, rng, param="reference", n_eps=2)
    gain = res["K"] - standard_normal_logpdf(x0)
    stderr = gain.std(ddof=1) / math.sqrt(N)
    assert abs(gain.mean()) < 5 * stderr                             # 5 standard errors: false alarm ~1e-6
    assert res["kl_by_t"].shape == (T + 1,) and np.all(res["kl_by_t"][:2] == 0)


def test_bound_exact_sums_every_t_with_its_own_eps():
    """One chunk: K_n = -sum_t KL(x0_n, t, eps_{t,n}) + entropies, eps drawn time-major."""
    T, D, N = 5, 2, 3
    tab, rng = tables_of(ScheduleConfig(T=T)), np.random.default_rng(3)
    x0, z_const = rng.standard_normal((N, D)), rng.normal(size=2 * D)
    predict = lambda xt, t: np.tile(z_const, (xt.shape[0], 1))       # noqa: E731
    res = bound_all_t(predict, x0, tab, np.random.default_rng(11), param="bounded")
    eps = np.random.default_rng(11).standard_normal(((T - 1) * N, D))
    t, x0r = np.repeat(np.arange(2, T + 1), N), np.tile(x0, (T - 1, 1))
    xt = q_sample(x0r, t, eps, tab)
    loss, _ = bound_forward(predict(xt, t), x0r, xt, t, np.ones(t.size), tab, param="bounded")
    H = entropy_terms(tab, D)
    H_sum = H["H_q_T"] - H["H_q_1"] - H["H_p_T"]
    mean_kl_row = H_sum + float(loss)                                # loss = -(H_sum - mean KL) with w = 1
    expected = H_sum - (T - 1) * mean_kl_row                         # mean_n of H_sum - sum_t KL
    assert res["K"].mean() == pytest.approx(expected, rel=1e-12)


def test_exact_per_example_bound_is_the_monte_carlo_elbo():
    """K_exact = E_q[log p(x_{0:T}) - log q(x_{1:T}|x_0)] per example, off unit variance too.

    Reverse kernel = forward kernel ('reference', z = 0) and a short chain ending at
    log SNR_T = -2: the ELBO of whole forward trajectories, estimated by Monte Carlo,
    matches K_exact at x_0 = (3, 0), where eq. (14) is off by
    (|x_0|^2 - D)(beta_1 + alpha_bar_T) / 2 = 0.43 nats.
    """
    T, D, M = 10, 2, 20000
    tab = tables_of(ScheduleConfig(T=T, beta_1=1e-3, baseline="logsnr", log_snr_T=-2.0))
    x0 = np.tile([[3.0, 0.0]], (M, 1))                               # M independent eps draws
    res = bound_all_t(lambda xt, t: np.zeros((xt.shape[0], 2 * D)), x0, tab,
                      np.random.default_rng(1), param="reference")
    K_exact, K_se = res["K_exact"].mean(), res["K_exact"].std(ddof=1) / math.sqrt(M)
    rng = np.random.default_rng(2)
    x, log_w = x0.copy(), np.zeros(M)
    for t in range(1, T + 1):                                        # forward kernel, eq. (2)
        x_next = tab["sqrt_alpha"][t] * x + tab["sqrt_beta"][t] * rng.standard_normal((M, D))
        # log p(x_{t-1}|x_t) - log q(x_t|x_{t-1}), with p the forward kernel reversed under pi
        log_w += standard_normal_logpdf(x) - standard_normal_logpdf(x_next)
        x = x_next
    log_w += standard_normal_logpdf(x)                               # log p(x_T) = log pi(x_T)
    elbo, se = log_w.mean(), log_w.std(ddof=1) / math.sqrt(M)
    edge = -0.5 * (9.0 - D) * (tab["beta"][1] + tab["alpha_bar"][T])
    assert edge == pytest.approx(-0.43, abs=0.01)
    np.testing.assert_allclose(res["K_exact"], res["K"] + edge, rtol=1e-12)
    # this reverse kernel makes every trajectory's log ratio log pi(x_0): the ELBO is exact (se = 0)
    assert elbo == pytest.approx(standard_normal_logpdf(x0[:1])[0], abs=1e-9) and se < 1e-9
    assert abs(K_exact - elbo) < 5 * K_se                            # 5 standard errors: false alarm ~1e-6
    assert abs(res["K"].mean() - elbo) > 0.3 > 10 * K_se


def test_importance_weights_make_any_distribution_of_t_unbiased():
    """E_{t ~ p}[K_hat] with weight 1 / p(t) equals the exact sum over t, for any p."""
    T, D = 7, 2
    tab, rng = tables_of(ScheduleConfig(T=T)), np.random.default_rng(12)
    x0, eps, z = rng.standard_normal((1, D)), rng.standard_normal((1, D)), rng.normal(size=(1, 2 * D))
    p_t = rng.dirichlet(np.ones(T - 1))                              # any distribution over t = 2..T
    K_hat = [-bound_loss(z, x0, np.array([t]), eps, np.array([1 / p_t[t - 2]]), tab, "paper")
             for t in range(2, T + 1)]
    exact = -bound_loss(np.tile(z, (T - 1, 1)), np.tile(x0, (T - 1, 1)), np.arange(2, T + 1),
                        np.tile(eps, (T - 1, 1)), np.full(T - 1, T - 1.0), tab, "paper")  # every t once
    assert np.dot(p_t, K_hat) == pytest.approx(exact, rel=1e-12)


# ---- the bound: gradients -----------------------------------------------------------

def bound_loss(z, x0, t, eps, w, tab, param, xt=None):
    xt = q_sample(x0, t, eps, tab) if xt is None else xt
    return float(bound_forward(z, x0, xt, t, w, tab, param=param)[0])


@given(cfg=schedules, seed=seeds, D=dims, param=params)
def test_bound_gradient_wrt_z_and_xt(cfg, seed, D, param):
    rng = np.random.default_rng(seed)
    tab = tables_of(cfg)
    x0, t, eps = batch(rng, 5, D, cfg.T)
    xt, z, w = q_sample(x0, t, eps, tab), rng.normal(size=(5, 2 * D)), rng.uniform(0.5, 2, 5)
    dz, dxt, _ = bound_backward(1.0, bound_forward(z, x0, xt, t, w, tab, param=param)[1])
    # The loss carries ~1e-14 nats of round-off (entropy terms of ~10 nats): central
    # differences at h = 1e-6 have ~1e-8 absolute noise, ~1e-5 relative on entries far below
    # the largest; a wrong gradient reads O(1)
    assert check_gradient(lambda z: bound_loss(z, x0, t, eps, w, tab, param, xt), z, dz) < 1e-4
    assert check_gradient(lambda xt: bound_loss(z, x0, t, eps, w, tab, param, xt), xt, dxt) < 1e-4


@given(cfg=schedules, seed=seeds, D=dims, param=params)
def test_bound_gradient_wrt_beta(cfg, seed, D, param):
    """All paths to beta (x_t, posterior, reverse kernel, entropies) with z held fixed."""
    rng = np.random.default_rng(seed)
    beta = schedule_forward(cfg)[0]
    x0, t, eps = batch(rng, 6, D, cfg.T)
    z, w = rng.normal(size=(6, 2 * D)), np.full(6, cfg.T - 1.0)
    tab, t_cache = tables_forward(beta)
    xt, q_cache = q_sample_forward(x0, t, eps, tab)
    _, cache = bound_forward(z, x0, xt, t, w, tab, param=param)
    dz, dxt, dtables = bound_backward(1.0, cache)
    dbeta = tables_backward(add_grads(dtables, q_sample_backward(dxt, q_cache)), t_cache)
    f = lambda log_b: bound_loss(z, x0, t, eps, w, tables_of_beta(np.r_[0.0, np.exp(log_b)]), param)  # noqa: E731
    # in log beta (beta_1 may be 1e-6): scale-free steps; round-off as in the test above
    assert check_gradient(f, np.log(beta[1:]), dbeta[1:] * beta[1:]) < 1e-4


def test_bound_casts_float32_outputs_up_and_gradients_down():
    T, D = 8, 2
    tab, rng = tables_of(ScheduleConfig(T=T)), np.random.default_rng(5)
    x0, t, eps = batch(rng, 4, D, T)
    xt, z = q_sample(x0, t, eps, tab), rng.normal(size=(4, 2 * D)).astype(np.float32)
    w = np.full(4, T - 1.0)
    loss32, cache = bound_forward(z, x0, xt, t, w, tab, param="reference")
    loss64, _ = bound_forward(z.astype(np.float64), x0, xt, t, w, tab, param="reference")
    assert loss32.dtype == np.float64 and float(loss32) == float(loss64)
    assert bound_backward(1.0, cache)[0].dtype == np.float32
