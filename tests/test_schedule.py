"""Schedules and their tables (§2.4.1, Table App.1): identities, gradients, bad input."""
import numpy as np
import pytest
from hypothesis import example, given

from numpy_diffusion.gradcheck import check_gradient
from numpy_diffusion.gaussian.schedule import (ScheduleConfig, baseline_beta, init_schedule_params, log_snr,
                                      schedule_backward, schedule_forward)
from numpy_diffusion.gaussian.tables import DIFFERENTIABLE, check_beta, scatter_by_t, tables_backward, tables_forward

from strategies import schedule_configs as configs
from strategies import seeds


def beta_of(cfg, seed, scale=2.0):
    """A schedule from ``cfg``, with random coefficients of size ``scale`` when learned."""
    if not cfg.learn:
        return schedule_forward(cfg)[0]
    w = init_schedule_params(cfg)
    w = w + scale / cfg.rate_scale ** (cfg.learned_form == "decrements") * \
        np.random.default_rng(seed).standard_normal(w.shape)
    return schedule_forward(cfg, w)[0]


@given(cfg=configs, seed=seeds)
def test_alpha_bar_starts_at_one_and_decreases(cfg, seed):
    tab = tables_forward(beta_of(cfg, seed))[0]
    ab = tab["alpha_bar"]
    assert ab[0] == 1.0 and tab["beta"][0] == 0.0
    assert np.all(np.diff(ab) < 0)                                   # every beta_t > 0
    assert np.all((tab["beta"][1:] > 0) & (tab["beta"][1:] < 1))
    assert tab["beta"][1] == cfg.beta_1                              # beta_1 stays fixed when learned
    # 1 - alpha_bar via expm1 keeps full precision: 1e-15 relative (a few ulps)
    assert abs(tab["one_minus_alpha_bar"][1] - cfg.beta_1) <= 1e-15 * cfg.beta_1


@given(cfg=configs, seed=seeds)
def test_closed_form_marginal_equals_iterated_kernel(cfg, seed):
    """Iterate q(x_t|x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) on the moments of x_t given x0."""
    tab = tables_forward(beta_of(cfg, seed))[0]
    mean, var = 1.0, 0.0                                             # per unit of x0; x_0 is fixed
    for t in range(1, cfg.T + 1):
        mean, var = tab["sqrt_alpha"][t] * mean, tab["alpha"][t] * var + tab["beta"][t]
        # float64 recursion vs closed form: relative error a few ulps per step, 1e-12 leaves room
        assert mean == pytest.approx(tab["sqrt_alpha_bar"][t], rel=1e-12)
        assert var == pytest.approx(tab["one_minus_alpha_bar"][t], rel=1e-12)
        assert tab["sqrt_one_minus_alpha_bar"][t] ** 2 == pytest.approx(var, rel=1e-12)


@given(cfg=configs, seed=seeds)
def test_posterior_variance_lies_below_beta(cfg, seed):
    tab = tables_forward(beta_of(cfg, seed))[0]
    bt, b = tab["beta_tilde"][2:], tab["beta"][2:]
    # §2.6: beta_tilde_t < beta_t; the ratio (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) rounds
    # to 1 once alpha_bar is tiny, so allow equality up to one rounding (1e-15 relative)
    assert np.all((bt > 0) & (bt <= b * (1 + 1e-15)))
    assert np.allclose(np.exp(tab["log_beta_tilde"][2:]), bt, rtol=1e-14, atol=0)
    assert tab["beta_tilde"][1] == 0.0                               # posterior at t = 1 is a point mass


def test_baselines():
    T = 40
    ref = baseline_beta(ScheduleConfig(T=T, baseline="reference"))
    assert np.allclose(ref[2:], 1 / np.linspace(T, 2, T)[1:], rtol=1e-15) and ref[T] == 0.5
    geo = baseline_beta(ScheduleConfig(T=T, baseline="geometric", beta_1=1e-5, beta_T=0.3))
    assert geo[1] == 1e-5 and geo[T] == pytest.approx(0.3, rel=1e-13)
    assert np.allclose(np.diff(np.log(geo[1:]), 2), 0, atol=1e-12)  # log-linear
    lin = baseline_beta(ScheduleConfig(T=T, baseline="linear", beta_1=1e-5, beta_T=0.3))
    assert lin[T] == pytest.approx(0.3) and np.allclose(np.diff(lin[1:], 2), 0, atol=1e-15)


def test_logsnr_baseline_is_linear_in_log_snr():
    cfg = ScheduleConfig(T=40, baseline="logsnr", beta_1=1e-7, log_snr_T=-4.0)
    lam = log_snr(baseline_beta(cfg))
    assert lam[0] == pytest.approx(np.log((1 - 1e-7) / 1e-7), rel=1e-12)
    assert lam[-1] == pytest.approx(-4.0, abs=1e-12)
    assert np.allclose(np.diff(lam, 2), 0, atol=1e-9)


@given(cfg=configs.filter(lambda c: c.learn and c.learned_form == "decrements"), seed=seeds)
@example(cfg=ScheduleConfig(T=55, beta_1=1e-6, baseline="linear", beta_T=0.75, learn=True,  # 1 - beta_t
                            learned_form="decrements", n_bumps=1), seed=53459080)   # = 4e-13
def test_decrements_keep_both_ends_fixed(cfg, seed):
    """Whatever w, lambda_1 (from beta_1) and lambda_T (from the baseline) do not move."""
    lam0, lam = log_snr(baseline_beta(cfg)), log_snr(beta_of(cfg, seed))
    assert np.all(np.diff(lam) < 0)                                  # monotone: every beta_t in (0, 1)
    assert lam[0] == pytest.approx(lam0[0], rel=1e-12)
    # lambda_T is read back through beta; a moving end would show an O(1) change, round-off
    # is bounded by log_snr_roundoff for each schedule, plus the target lambda_T itself:
    # lambda_1 - sum of T - 1 steps R p_t, one rounding of size eps (|lambda_1| + R) per term
    R = lam0[0] - lam0[-1]
    tol = log_snr_roundoff(beta_of(cfg, seed)) + log_snr_roundoff(baseline_beta(cfg)) \
        + EPS * cfg.T * (abs(lam0[0]) + R)
    assert lam[-1] == pytest.approx(lam0[-1], abs=tol)


EPS = np.finfo(np.float64).eps


def log_snr_roundoff(beta):
    """A first-order bound on the float64 error of ``log_snr(beta)[-1]`` (one ulp, ``eps``, per
    operation).

    ``lambda_T = L_T - log(1 - alpha_bar_T)`` with ``L_T = sum_t log1p(-beta_t)``.  Per step:
    ``beta_t`` carries a relative rounding ``eps``, which ``log1p(-beta_t)`` turns into an
    absolute error ``eps beta_t / (1 - beta_t)`` (unbounded as ``1 - beta_t -> 0``); ``log1p``
    rounds its own result (``eps |log alpha_t|``) and the running sum rounds each partial sum
    (``eps |L_t|``).  The last conversion rounds ``L_T`` and ``lambda_T`` once more, and
    ``d lambda / dL = 1 / (1 - alpha_bar_T) = 1 + e^lambda_T`` carries all of it to ``lambda_T``.
    """
    b = beta[1:]
    log_alpha = np.log1p(-b)
    L = np.cumsum(log_alpha)
    lam_T = L[-1] - np.log(-np.expm1(L[-1]))
    per_step = b / (1 - b) + np.abs(log_alpha) + np.abs(L)
    return EPS * (per_step.sum() + abs(L[-1]) + abs(lam_T)) * (1 + np.exp(lam_T))


def test_zero_coefficients_give_the_baseline():
    cfg = ScheduleConfig(T=12, learn=True, n_bumps=4, baseline="geometric", beta_T=0.4)
    beta = schedule_forward(cfg, np.zeros(4, dtype=np.float32))[0]
    assert beta.dtype == np.float64
    assert np.allclose(beta, baseline_beta(cfg), rtol=1e-14, atol=0)


@given(cfg=configs.filter(lambda c: c.learn), seed=seeds)
def test_schedule_backward_matches_finite_differences(cfg, seed):
    rng = np.random.default_rng(seed)
    w0 = init_schedule_params(cfg)
    c = 1.0 if cfg.learned_form == "bumps" else cfg.rate_scale       # same perturbation of beta
    w = w0 + 0.2 / c * rng.standard_normal(w0.shape)
    c = rng.standard_normal(cfg.T + 1)
    _, cache = schedule_forward(cfg, w)
    # smooth: float64 central differences agree to ~1e-8 on O(1) entries; entries 1e-5 of
    # the largest (beta_t ~ 1e-6 in a geometric schedule) carry relative round-off ~1e-6;
    # the decrements form goes through log SNR ~ 14 (beta_1 = 1e-6), where log alpha_bar
    # ~ -1e-6 keeps ~10 digits, so its differences are noisier: measured up to 2e-6
    assert check_gradient(lambda w: c @ schedule_forward(cfg, w)[0], w, schedule_backward(c, cache)) < 1e-5


@given(cfg=configs, seed=seeds)
def test_tables_backward_matches_finite_differences(cfg, seed):
    """A random linear functional of every differentiable table, differentiated in beta_1..T."""
    rng = np.random.default_rng(seed)
    beta = beta_of(cfg, seed, scale=0.5)
    c = {k: rng.standard_normal(cfg.T + 1) for k in DIFFERENTIABLE}
    for k in c:
        c[k][0] = 0.0                                                # t = 0 is never read
    c["log_beta_tilde"][1] = 0.0                                     # -inf at t = 1, never read

    def f(log_b):                                                    # in log beta: scale-free steps
        tab = tables_forward(np.concatenate([[0.0], np.exp(log_b)]))[0]
        return sum(c[k] @ np.where(c[k] != 0, tab[k], 0.0) for k in c)

    analytic = tables_backward(c, tables_forward(beta)[1])
    assert analytic[0] == 0.0
    # smooth in log beta: central differences at h = 1e-6 agree to ~1e-8 on O(1) entries,
    # ~1e-6 on entries far below the largest; a wrong rule reads O(1)
    assert check_gradient(f, np.log(beta[1:]), analytic[1:] * beta[1:]) < 1e-5


def test_scatter_by_t_matches_add_at():
    rng = np.random.default_rng(0)
    t, g = rng.integers(2, 9, 50), rng.standard_normal(50)
    expected = np.zeros(9)
    np.add.at(expected, t, g)
    assert np.allclose(scatter_by_t(t, {"a": g}, 8)["a"], expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("kwargs, match", [
    (dict(T=1), "T must be an integer >= 2"),
    (dict(T=0), "T must be an integer >= 2"),
    (dict(beta_1=0.0), "beta_1 must lie strictly between 0 and 1"),
    (dict(beta_1=1.0), "beta_1 must lie strictly between 0 and 1"),
    (dict(beta_1=float("nan")), "beta_1 must lie strictly between 0 and 1"),
    (dict(beta_T=1.5), "beta_T must lie strictly between 0 and 1"),
    (dict(baseline="cosine"), "unknown baseline 'cosine'; allowed"),
    (dict(n_bumps=0), "n_bumps must be an integer >= 1"),
])
def test_bad_config_raises_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScheduleConfig(**kwargs)


@pytest.mark.parametrize("beta, match", [
    ([0.0, 0.1], r"shape \(T \+ 1,\) with T >= 2"),
    ([[0.0, 0.1, 0.2]], r"shape \(T \+ 1,\) with T >= 2"),
    ([0.0, 0.1, float("nan")], "NaN"),
    ([0.0, 0.1, 1.0], "t = 2 has beta_t = 1.0"),
    ([0.0, 0.0, 0.5], "t = 1 has beta_t = 0.0"),
    ([0.0, 0.1, -0.2], "strictly between 0 and 1"),
    ([0.3, 0.1, 0.2], "beta.0. is unused and must be 0"),
])
def test_bad_beta_raises_clear_errors(beta, match):
    with pytest.raises(ValueError, match=match):
        tables_forward(np.array(beta))
    with pytest.raises(ValueError, match=match):
        check_beta(np.array(beta))


def test_learned_schedule_needs_coefficients_of_the_right_shape():
    cfg = ScheduleConfig(T=10, learn=True, n_bumps=3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        schedule_forward(cfg, np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        schedule_forward(cfg, np.array([0.0, np.nan, 0.0]))


def test_unknown_table_gradient_is_a_clear_error():
    with pytest.raises(KeyError, match="no gradient rule for tables"):
        tables_backward({"alpha_bar": np.zeros(5)}, tables_forward(baseline_beta(ScheduleConfig(T=4)))[1])
