"""Conditioning (§2.5, App. C): the paper's modified chain against its closed form, the
sequential Monte Carlo sampler against the exact posterior, and the bookkeeping.

The Gaussian model: a zero network in the ``'reference'`` parameterization gives
``p(x_{t-1} | x_t) = N(sqrt(alpha_t) x_t, beta_t)``, the forward kernel, which keeps
``N(0, 1)`` invariant, so ``p(x_0) = N(0, 1)`` exactly.  With ``r(x) = N(y; x, sigma_d^2)``
every modified step is linear-Gaussian and the chain's end point is Gaussian too;
:func:`chain_closed_form` propagates its mean and variance.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.nn.network import NetConfig
from numpy_diffusion.posterior.paper import (CHOICES, denoise_sample, inpaint_sample, r_schedule,
                                       smooth_sample)
from numpy_diffusion.posterior.smc import draw_one, smc_denoise, smc_inpaint, systematic_resample
from numpy_diffusion.gaussian.schedule import ScheduleConfig
from strategies import seeds

T, Y, S2 = 40, 1.0, 0.5                          # a case with a closed form: y = 1, sigma_d^2 = 0.5
EXACT = (Y / (1 + S2), S2 / (1 + S2))            # N(0, 1) prior times N(y; x, s2): N(0.667, 0.333)


def gaussian_model(D=1, beta_1=1e-5, hidden=(8,)):
    """``p(x_0) = N(0, I)`` exactly: zero readout, reference parameterization, reference schedule."""
    net = NetConfig(D=D, T=T, net="mlp", hidden=hidden, activation="tanh", basis="identity")
    sched = ScheduleConfig(T=T, beta_1=beta_1, baseline="reference")
    model = GaussianDiffusion(ModelConfig(net=net, schedule=sched, param="reference"))
    return model, model.init_params(np.random.default_rng(0))


def random_model(D=2, seed=0):
    """A model whose network is not zero, so conditioning has something to do."""
    model, params = gaussian_model(D=D, hidden=(6,))
    params["readout.W"] = 0.5 * np.random.default_rng(seed).standard_normal(params["readout.W"].shape)
    return model, params


MODEL, PARAMS = gaussian_model()


def intermediate_r(beta, choice, s2=S2):
    """``(c_t, h_t)``, ``r_t(x) ∝ N(c_t y; x, 1/h_t)``, derived here from the definitions."""
    alpha_bar = np.concatenate([[1.0], np.cumprod(1 - beta[1:])])
    t = np.arange(T + 1)
    if choice == "constant":                                              # eq. (23)
        return np.ones(T + 1), np.full(T + 1, 1 / s2)
    if choice == "annealed":                                              # r^{(T-t)/T}
        return np.ones(T + 1), (T - t) / T / s2
    return 1 / np.sqrt(alpha_bar), alpha_bar / (1 - alpha_bar + s2)       # N(y; sqrt(abar) x, 1 - abar + s2)


def chain_closed_form(beta, choice, y=Y, s2=S2, smooth=False):
    """Mean and variance of ``x_0`` at the end of the modified linear-Gaussian chain.

    Step ``t`` (``t = T + 1`` is the start, ``pi = N(0, 1)``): the kernel ``N(a x, v)``,
    times ``N(c y; x, 1/h)`` gives ``N(k x + b, 1/(1/v + h))`` with ``k = a / (v (1/v + h))``,
    ``b = h c y / (1/v + h)``.  With ``smooth``, Table App.1 instead: the mean moves by
    ``v h (c y - a x)``, ``x' = a (1 - v h) x + v h c y + sqrt(v) eps``.
    """
    c, h = intermediate_r(beta, choice, s2)
    M, V = 0.0, 0.0                                                       # x_{T+1} is unused
    for t in range(T + 1, 0, -1):
        a, v = (0.0, 1.0) if t == T + 1 else (math.sqrt(1 - beta[t]), beta[t])
        g = h[t - 1]
        if smooth:
            k, b, var = a * (1 - v * g), v * g * c[t - 1] * y, v
        else:
            k, b, var = a / (1 + v * g), v * g * c[t - 1] * y / (1 + v * g), v / (1 + v * g)
        M, V = k * M + b, k * k * V + var
    return M, V


def beta_of(model):
    return np.asarray(model.tables(PARAMS)["beta"])


def test_zero_network_is_the_forward_kernel():
    x = np.random.default_rng(1).standard_normal((7, 1))
    for t in (2, 17, T):
        z = MODEL.predict(PARAMS)(x, np.full(7, t))
        assert np.all(z == 0), "init_params must start the readout at zero"
        mu, logvar = MODEL.p_mean_logvar(PARAMS, x, t)
        beta = beta_of(MODEL)[t]
        np.testing.assert_allclose(mu, math.sqrt(1 - beta) * x, rtol=1e-12)
        np.testing.assert_allclose(np.exp(logvar), beta, rtol=1e-9)


def test_closed_form_reproduces_the_issue():
    """Derived here for the reference schedule at beta_1 = 1e-5 (ScheduleConfig's default);
    the digits 0.798/0.207 and 0.667/0.257 come out at 3 decimals."""
    beta = beta_of(MODEL)
    np.testing.assert_allclose(chain_closed_form(beta, "constant"), (0.798, 0.207), atol=5e-4)
    # the closed form is 0.25766 (0.258 to 3 places) at beta_1 = 1e-5 or 1e-6
    np.testing.assert_allclose(chain_closed_form(beta, "annealed"), (0.667, 0.2577), atol=5e-5)
    np.testing.assert_allclose(EXACT, (0.667, 0.333), atol=5e-4)
    np.testing.assert_allclose(chain_closed_form(beta, "constant", s2=1e12), (0.0, 1.0), atol=1e-9)


def test_r_schedule_matches_its_definition():
    beta = beta_of(MODEL)
    for choice in CHOICES:
        c, h = r_schedule(MODEL.tables(PARAMS), math.sqrt(S2), choice)
        c0, h0 = intermediate_r(beta, choice)
        np.testing.assert_allclose(c, c0, rtol=1e-12)
        np.testing.assert_allclose(h, h0, rtol=1e-12)


def _check_moments(x, M, V, n_se=5.0):
    n = x.size
    assert abs(x.mean() - M) < n_se * math.sqrt(V / n), (x.mean(), M)
    assert abs(x.var() - V) < n_se * V * math.sqrt(2 / n), (x.var(), V)


@pytest.mark.parametrize("choice", CHOICES)
def test_paper_chain_matches_its_closed_form(choice):
    x = denoise_sample(MODEL, PARAMS, np.array([Y]), math.sqrt(S2), 20000, np.random.default_rng(2),
                       choice=choice)
    _check_moments(x[:, 0], *chain_closed_form(beta_of(MODEL), choice))


@pytest.mark.parametrize("choice", CHOICES[:2])
def test_smooth_r_matches_its_closed_form(choice):
    grad_log_r = lambda x: (Y - x) / S2                                   # noqa: E731  r = N(y; x, S2)
    x = smooth_sample(MODEL, PARAMS, grad_log_r, 20000, np.random.default_rng(3), choice=choice)
    _check_moments(x[:, 0], *chain_closed_form(beta_of(MODEL), choice, smooth=True))


@pytest.mark.parametrize("choice", ["annealed"])
def test_smc_matches_the_exact_posterior(choice):
    """20 independent particle systems of 2000: the spread of their estimates is the MC error."""
    R = 20
    out = smc_denoise(MODEL, PARAMS, np.full((R, 1), Y), math.sqrt(S2), 2000, np.random.default_rng(4),
                      choice=choice)
    x, w = out["x0"][..., 0], out["w"]
    mean = (w * x).sum(axis=1)
    var = (w * (x - mean[:, None]) ** 2).sum(axis=1)
    log_p_y = -0.5 * math.log(2 * math.pi * (1 + S2)) - Y ** 2 / (2 * (1 + S2))
    for est, exact in ((mean, EXACT[0]), (var, EXACT[1]), (out["log_Z"], log_p_y)):
        assert abs(est.mean() - exact) < 5 * est.std(ddof=1) / math.sqrt(R) + 1e-3, (est.mean(), exact)


def test_diffused_r_is_the_exact_twist_of_the_gaussian_model():
    """For N(0, I) data the 'diffused' r_t is p(y | x_t) itself: every weight is equal,
    the ESS stays N and the normalizer is log p(y) = log N(y; 0, 1 + s2) to round-off."""
    out = smc_denoise(MODEL, PARAMS, np.array([Y]), math.sqrt(S2), 500, np.random.default_rng(6),
                      choice="diffused")
    np.testing.assert_allclose(out["ess"], 500, rtol=1e-9)
    log_p_y = -0.5 * math.log(2 * math.pi * (1 + S2)) - Y ** 2 / (2 * (1 + S2))
    assert abs(out["log_Z"] - log_p_y) < 1e-9


@given(seed=seeds, observed=st.integers(0, 1), n=st.integers(1, 5))
@settings(max_examples=10)
def test_inpainting_never_changes_observed_coordinates(seed, observed, n):
    model, params = random_model(seed=seed % 97)
    rng = np.random.default_rng(seed)
    y = rng.uniform(-2, 2, (3, 2))
    mask = np.zeros(2, bool)
    mask[observed] = True
    for choice in CHOICES:
        x = inpaint_sample(model, params, y, mask, n, rng, choice=choice)
        assert np.array_equal(x[..., observed], np.broadcast_to(y[:, None, observed], (3, n)))
    x = smc_inpaint(model, params, y, mask, n, rng)["x0"]
    assert np.array_equal(x[..., observed], np.broadcast_to(y[:, None, observed], (3, n)))


def test_smc_inpainting_of_the_gaussian_model():
    """Coordinates are independent under p = N(0, I): the free one stays N(0, 1), the
    weights stay equal (the twist is exact here) and ``log_Z = log N(0.7; 0, 1)``."""
    model, params = gaussian_model(D=2)
    out = smc_inpaint(model, params, np.array([0.7, 0.0]), np.array([True, False]), 20000,
                      np.random.default_rng(5))
    x, w = out["x0"][:, 1], out["w"]
    _check_moments(x, 0.0, 1.0)
    np.testing.assert_allclose(w, 1 / 20000, rtol=1e-9)
    assert abs(out["log_Z"] - (-0.5 * math.log(2 * math.pi) - 0.7 ** 2 / 2)) < 1e-9


def test_seeds_reproduce():
    model, params = random_model()
    y, mask = np.array([0.3, -0.2]), np.array([True, False])
    runs = [smc_inpaint(model, params, y, mask, 50, np.random.default_rng(s)) for s in (7, 7, 8)]
    assert np.array_equal(runs[0]["x0"], runs[1]["x0"]) and np.array_equal(runs[0]["w"], runs[1]["w"])
    assert not np.array_equal(runs[0]["x0"], runs[2]["x0"])
    a, b = (denoise_sample(model, params, y, 0.3, 20, np.random.default_rng(9)) for _ in range(2))
    assert np.array_equal(a, b)


@given(seed=seeds, N=st.integers(1, 40), choice=st.sampled_from(CHOICES))
@settings(max_examples=10)
def test_weights_finite_normalized_and_ess_bounded(seed, N, choice):
    model, params = random_model(seed=seed % 89)
    rng = np.random.default_rng(seed)
    out = smc_denoise(model, params, rng.uniform(-2, 2, (2, 2)), 0.2, N, rng, choice=choice)
    assert out["x0"].shape == (2, N, 2) and out["w"].shape == (2, N) and out["ess"].shape == (2, T + 1)
    assert np.isfinite(out["w"]).all() and np.isfinite(out["x0"]).all()
    np.testing.assert_allclose(out["w"].sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(out["ess"] >= 1 - 1e-9) and np.all(out["ess"] <= N * (1 + 1e-9))


@given(seed=seeds, B=st.integers(1, 4), N=st.integers(1, 60))
def test_systematic_resampling_keeps_the_count(seed, B, N):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.full(N, 0.3), size=B)
    idx = systematic_resample(w, rng)
    assert idx.shape == (B, N) and idx.min() >= 0 and idx.max() < N
    counts = np.stack([np.bincount(row, minlength=N) for row in idx])
    assert np.all(counts >= np.floor(N * w) - 1e-9) and np.all(counts <= np.ceil(N * w) + 1e-9)
    one_hot = np.eye(N)[rng.integers(0, N, B)]
    expected = np.broadcast_to(one_hot.argmax(1)[:, None], (B, N))
    assert np.array_equal(systematic_resample(one_hot, rng), expected)


def test_one_particle_is_drawn_by_its_weight():
    """Frequencies of ``draw_one`` match the weights within binomial error, for weights where
    the first tooth of a systematic comb would not (it picks particle 0 with probability 0.75
    when ``w = (1/4, 1/2, 1/4)``); a zero weight is never drawn."""
    w = np.array([[0.25, 0.5, 0.25], [0.0, 0.1, 0.9], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    n = 100_000
    idx = draw_one(np.tile(w, (n, 1)), np.random.default_rng(0)).reshape(n, len(w))
    for b in range(len(w)):
        freq = np.bincount(idx[:, b], minlength=3) / n
        assert (np.abs(freq - w[b]) <= 5 * np.sqrt(w[b] * (1 - w[b]) / n)).all()
    assert not (idx[:, 1] == 0).any() and not (idx[:, 2] == 1).any() and not (idx[:, 3] == 2).any()


def test_bad_input_is_a_clear_error():
    model, params = random_model()
    rng, y, mask = np.random.default_rng(0), np.zeros(2), np.array([True, False])
    with pytest.raises(ValueError, match="observation y must have shape"):
        denoise_sample(model, params, np.zeros(3), 0.5, 4, rng)
    with pytest.raises(ValueError, match="observation y must have shape"):
        smc_denoise(model, params, np.zeros((2, 2, 2)), 0.5, 4, rng)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma_d must be"):
            smc_denoise(model, params, y, bad, 4, rng)
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        inpaint_sample(model, params, y, np.array([True, False, True]), 4, rng)
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        smc_inpaint(model, params, y, np.array([1.0, 0.0]), 4, rng)
    with pytest.raises(ValueError, match="needs a boolean mask"):
        smc_inpaint(model, params, y, None, 4, rng)
    with pytest.raises(ValueError, match="at least one particle"):
        smc_inpaint(model, params, y, mask, 0, rng)
    with pytest.raises(ValueError, match="unknown choice"):
        smooth_sample(model, params, lambda x: x, 4, rng, choice="diffused")
    with pytest.raises(ValueError, match="ess_threshold"):
        smc_denoise(model, params, y, 0.5, 4, rng, ess_threshold=2.0)


def test_library_closed_form_agrees_with_this_derivation():
    from numpy_diffusion.posterior.paper import forward_kernel_chain_moments
    tables, beta = MODEL.tables(PARAMS), beta_of(MODEL)
    for choice in CHOICES:
        for smooth in ((False, True) if choice != "diffused" else (False,)):
            np.testing.assert_allclose(forward_kernel_chain_moments(tables, Y, math.sqrt(S2), choice, smooth=smooth),
                                       chain_closed_form(beta, choice, smooth=smooth), rtol=1e-12)
