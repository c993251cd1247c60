"""The composed model: end-to-end gradients through the MLP and the RBF network, evaluation,
sampling, and clear errors for bad input."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from numpy_diffusion.gradcheck import check_gradient, directional_check
from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.nn.network import NetConfig
from numpy_diffusion.nn.optim import ParamVector
from numpy_diffusion.gaussian.schedule import ScheduleConfig

# Shared strategies: seeds (the models are built by small_model below).
from strategies import seeds  # noqa: E402


def small_model(net="mlp", param="bounded", learn=True, T=6, D=2, basis="bump", form="bumps"):
    sched = ScheduleConfig(T=T, learn=learn, n_bumps=4, baseline="geometric", beta_1=1e-5, beta_T=0.3,
                           learned_form=form, rate_scale=1.0)
    cfg = ModelConfig(net=NetConfig(D=D, T=T, net=net, hidden=(5,) if net == "rbf" else (6, 5),
                                    basis=basis, n_bumps=3, fourier=2 if net == "mlp" else 0,
                                    fourier_scale=1.0, fourier_learned=True),
                      schedule=sched, param=param)
    return GaussianDiffusion(cfg)


def perturbed_params(model, rng, scale=0.3):
    """Initial parameters moved off zero so every path carries gradient (the readout starts at 0)."""
    p = model.init_params(rng)
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in p.items()}


@pytest.mark.parametrize("net", ["mlp", "rbf"])
@pytest.mark.parametrize("param", ["paper", "reference", "bounded", "eps"])
@settings(max_examples=4, deadline=None)
@given(seed=seeds, learn=st.booleans(), form=st.sampled_from(["bumps", "decrements"]))
def test_end_to_end_gradient_matches_finite_differences(seed, net, param, learn, form):
    """Every parameter, including the schedule coefficients through x_t and the network's input."""
    model = small_model(net, param, learn, form=form)
    rng = np.random.default_rng(seed)
    p = perturbed_params(model, rng)
    x0 = rng.standard_normal((7, 2))
    t, eps, w = model.draw(rng, 7)
    _, grads = model.loss_and_grads(p, x0, t, eps, w)
    assert set(grads) == set(p) and ("schedule.w" in p) == learn
    for name in p:
        # The loss carries ~1e-14 nats of round-off (entropy terms of ~10 nats), so central
        # differences at h = 1e-4 have ~1e-10 absolute noise and ~h^2 truncation; entries
        # 1e-3 of the largest then read up to ~2e-5 (measured over 90 seeds); a wrong
        # gradient reads O(1).
        err = check_gradient(lambda _: model.loss_and_grads(p, x0, t, eps, w)[0], p[name], grads[name], delta=1e-4)
        assert err < 1e-4, name


def test_directional_check_on_a_param_vector_with_the_paper_readout():
    """The whole model along one random direction, params as views of one flat vector."""
    model = small_model("rbf", "paper", learn=True, basis="identity")
    rng = np.random.default_rng(1)
    pv = ParamVector.from_arrays(perturbed_params(model, rng))
    x0 = rng.standard_normal((9, 2))
    batch = model.draw(rng, 9)
    _, grads = model.loss_and_grads(pv, x0, *batch)
    g = np.concatenate([grads[k].ravel() for k in pv.layout])

    def loss(theta):
        return model.loss_and_grads(ParamVector(pv.layout, theta), x0, *batch)[0]

    assert directional_check(loss, pv.flat.copy(), g, rng, delta=1e-5) < 1e-6  # one smooth directional derivative


def test_float32_network_matches_float64_bound():
    model = small_model("mlp", "bounded")
    rng = np.random.default_rng(2)
    p64 = perturbed_params(model, rng)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x0 = rng.standard_normal((16, 2))
    batch = model.draw(rng, 16)
    loss64, _ = model.loss_and_grads(p64, x0, *batch)
    loss32, grads32 = model.loss_and_grads(p32, x0, *batch)
    assert all(g.dtype == np.float32 for g in grads32.values())
    # only the network runs in float32 (~1e-7 relative per layer); the bound is float64
    assert loss32 == pytest.approx(loss64, rel=1e-5)


def test_exactness_at_initialization_on_gaussian_data():
    """Zero readout (init) in 'reference' is the forward kernel: K = L_null within MC error."""
    model = small_model("mlp", "reference", learn=False, T=10)
    rng = np.random.default_rng(3)
    p = model.init_params(rng)
    x0 = rng.standard_normal((3000, 2))
    res = model.evaluate(p, x0, rng, n_eps=1, chunk=4096)
    # 5 standard errors: a false alarm once in ~1e6 runs, and this run is seeded
    assert abs(res["K_minus_L_null_bits"]) < 5 * res["K_minus_L_null_bits_stderr"]
    assert res["K_bits"] == pytest.approx(res["K_nats"] / math.log(2))
    kl = res["kl_bits_by_t"]
    assert kl.shape == (11,) and np.all(kl[:2] == 0) and np.all(kl[2:] > 0)
    H = res["H_q_T_bits"] - res["H_q_1_bits"] - res["H_p_T_bits"]
    assert res["K_bits"] == pytest.approx(H - kl.sum(), rel=1e-12)   # K = entropies - sum_t KL


def test_float32_network_keeps_the_exactness_check_exact():
    """The bound is float64 even for a float32 network: the zero-readout 'reference' model on
    N(0, I) data gives K = L_null to round-off (a float32 bound was off by 0.13 bits, issue 3)."""
    T, D = 40, 2
    model = small_model("mlp", "reference", learn=False, T=T)
    p = model.init_params(np.random.default_rng(0), np.float32)
    s = math.sqrt(2.0)                                                # sigma points: exact expectation
    pts = np.array([[s, 0.0], [-s, 0.0], [0.0, s], [0.0, -s]])        # (x0_d, eps_d), see test_gaussian_bound
    t = np.repeat(np.arange(2, T + 1), 4)
    x0, eps = np.tile(pts[:, :1], (T - 1, D)), np.tile(pts[:, 1:], (T - 1, D))
    loss, _ = model.loss_and_grads(p, x0, t, eps, np.full(t.size, T - 1.0))
    L_null = -0.5 * D * (math.log(2 * math.pi) + 1)
    assert -loss == pytest.approx(L_null, abs=1e-10)                  # float64 round-off on ~10-nat terms


def test_evaluate_is_deterministic_and_reports_null_likelihood():
    model = small_model("mlp", "bounded")
    rng = np.random.default_rng(4)
    p, x0 = perturbed_params(model, rng), rng.standard_normal((50, 2))
    a = model.evaluate(p, x0, np.random.default_rng(0), n_eps=2)
    b = model.evaluate(p, x0, np.random.default_rng(0), n_eps=2)
    assert a["K_bits"] == b["K_bits"] and a["n_eps"] == 2
    L_null = np.mean(-np.log(2 * np.pi) - 0.5 * (x0**2).sum(1)) / math.log(2)
    assert a["L_null_bits"] == pytest.approx(L_null, rel=1e-12)
    assert a["K_minus_L_null_bits"] == pytest.approx(a["K_bits"] - L_null, rel=1e-12)


def test_sample_shapes_and_determinism():
    model = small_model("rbf", "reference")
    rng = np.random.default_rng(5)
    p = perturbed_params(model, rng)
    x = model.sample(p, 30, np.random.default_rng(1))
    y, traj = model.sample(p, 30, np.random.default_rng(1), trajectory=True)
    assert x.shape == (30, 2) and traj.shape == (7, 30, 2)
    assert np.array_equal(x, y) and np.array_equal(traj[0], x)
    mu, logvar = model.p_mean_logvar(p, traj[3], 3)
    assert mu.shape == logvar.shape == (30, 2)


def test_random_batches_are_reproducible():
    model = small_model()
    p = perturbed_params(model, np.random.default_rng(6))
    x0 = np.random.default_rng(7).standard_normal((8, 2))
    a = model.loss_and_grads_random(p, x0, np.random.default_rng(8))[0]
    assert a == model.loss_and_grads_random(p, x0, np.random.default_rng(8))[0]
    t, _, w = model.draw(np.random.default_rng(0), 1000)
    assert t.min() == 2 and t.max() == 6 and np.all(w == 5)           # uniform on 2..T, weight T - 1


def test_init_params_function_and_config_round_trip():
    model = small_model(learn=True)
    p = model.init_params(np.random.default_rng(0), np.float32)
    assert p["schedule.w"].dtype == np.float32 and np.all(p["schedule.w"] == 0)
    assert ModelConfig.from_dict(model.cfg.to_dict()) == model.cfg
    assert GaussianDiffusion.from_config(model.config()).cfg == model.cfg


# ---- bad input --------------------------------------------------------------------

@pytest.fixture
def model_and_params():
    model = small_model()
    return model, perturbed_params(model, np.random.default_rng(0))


@pytest.mark.parametrize("make_x0, match", [
    (lambda: np.full((4, 2), np.nan), "x0 contains NaN"),
    (lambda: np.zeros((4, 3)), r"x0 must have shape \(any, 2\), got \(4, 3\)"),
    (lambda: np.zeros(4), r"x0 must have shape \(any, 2\), got \(4,\)"),
])
def test_bad_data_raises_clear_errors(model_and_params, make_x0, match):
    model, p = model_and_params
    x0 = make_x0()
    with pytest.raises(ValueError, match=match):
        model.loss_and_grads(p, x0, np.full(4, 2), np.zeros((4, 2)), np.ones(4))
    with pytest.raises(ValueError, match=match):
        model.evaluate(p, x0, np.random.default_rng(0))


@pytest.mark.parametrize("t, eps, weights, match", [
    (np.array([1, 2, 3, 4]), np.zeros((4, 2)), np.ones(4), r"t must hold integers in 2..6"),
    (np.array([2, 3, 4, 7]), np.zeros((4, 2)), np.ones(4), r"t must hold integers in 2..6"),
    (np.array([2.0, 3, 4, 5]), np.zeros((4, 2)), np.ones(4), r"t must hold integers in 2..6"),
    (np.array([2, 3, 4]), np.zeros((4, 2)), np.ones(4), r"t must have shape \(4\)"),
    (np.array([2, 3, 4, 5]), np.zeros((4, 3)), np.ones(4), r"eps must have shape \(4, 2\)"),
    (np.array([2, 3, 4, 5]), np.full((4, 2), np.inf), np.ones(4), "eps contains NaN or infinite"),
    (np.array([2, 3, 4, 5]), np.zeros((4, 2)), np.ones(3), r"weights must have shape \(4\)"),
])
def test_bad_batch_raises_clear_errors(model_and_params, t, eps, weights, match):
    model, p = model_and_params
    with pytest.raises(ValueError, match=match):
        model.loss_and_grads(p, np.zeros((4, 2)), t, eps, weights)


def test_bad_configuration_raises_clear_errors(model_and_params):
    with pytest.raises(ValueError, match="T must be an integer >= 2"):
        ModelConfig(net=NetConfig(T=1))
    with pytest.raises(ValueError, match="schedule has T = 10 but the network T = 40"):
        ModelConfig(net=NetConfig(T=40), schedule=ScheduleConfig(T=10))
    with pytest.raises(ValueError, match="unknown parameterization 'ddpm'"):
        ModelConfig(param="ddpm")
    model, p = model_and_params
    with pytest.raises(ValueError, match="n_eps must be an integer >= 1"):
        model.evaluate(p, np.zeros((3, 2)), np.random.default_rng(0), n_eps=0)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        model.sample(p, 0, np.random.default_rng(0))


@pytest.mark.parametrize("learn", [False, True])
def test_default_path_gradients_with_fixed_fourier_frequencies(learn):
    """The demo's own path: fixed Fourier B (no gradient), and with a fixed schedule no input
    gradient at all (``need_dxt=False``); every other parameter still matches finite differences."""
    T = 6
    net = NetConfig(D=2, T=T, hidden=(6, 5), basis="bump", n_bumps=3, fourier=3, fourier_scale=1.0)
    sched = ScheduleConfig(T=T, beta_1=1e-6, baseline="logsnr", learn=learn, learned_form="decrements",
                           rate_scale=1.0)
    model = GaussianDiffusion(ModelConfig(net=net, schedule=sched, param="bounded"))
    rng = np.random.default_rng(11)
    p = perturbed_params(model, rng)
    x0 = rng.standard_normal((7, 2))
    t, eps, w = model.draw(rng, 7)
    _, grads = model.loss_and_grads(p, x0, t, eps, w)
    assert not np.any(grads["trunk.fourier_B"])                      # fixed: Adam leaves it alone
    for name in p:
        if name != "trunk.fourier_B":                                # same tolerance as above
            err = check_gradient(lambda _: model.loss_and_grads(p, x0, t, eps, w)[0], p[name], grads[name],
                                 delta=1e-4)
            assert err < 1e-4, name


# ---- the training objective: the bound, or DDPM's simplified loss -----------------------------

def simple_model(T=12, t_sampling="uniform", objective="simple"):
    sched = ScheduleConfig(T=T, baseline="linear", beta_1=1e-5, beta_T=0.02)
    return GaussianDiffusion(ModelConfig(net=NetConfig(D=3, T=T, hidden=(4,), fourier=0), schedule=sched,
                                         param="eps", t_sampling=t_sampling, objective=objective))


def test_simple_objective_is_ddpm_noise_regression():
    """With the 'eps' mean and Sigma_t = beta_t (z_Sigma = 40: sigmoid(40) = 1), the simplified
    objective differs between two noise estimates by exactly mean_n |eps - eps_theta|^2 (Ho et al.
    2020, eq. 14): its weights undo DDPM's w_t of each KL term."""
    from numpy_diffusion.gaussian.bound import bound_forward
    from numpy_diffusion.gaussian.forward import q_sample_forward
    model, rng = simple_model(), np.random.default_rng(3)
    x0 = rng.standard_normal((50, 3))
    t, eps, w = model.draw(rng, 50)
    tab = model.tables(model.init_params(rng))
    xt = q_sample_forward(x0, t, eps, tab)[0]

    def loss(eps_theta):
        z = np.c_[eps_theta, np.full_like(eps_theta, 40.0)]
        return float(bound_forward(z, x0, xt, t, w, tab, param="eps")[0])
    a, b = rng.standard_normal(eps.shape), rng.standard_normal(eps.shape)
    ddpm = ((eps - a) ** 2).sum(axis=1).mean() - ((eps - b) ** 2).sum(axis=1).mean()
    assert loss(a) - loss(b) == pytest.approx(ddpm, rel=1e-10)


def test_objective_weights_and_draw():
    """The bound weighs every KL term 1; 'simple' by 1 / ((T - 1) w_t); draw gives lambda_t / P(t)
    for either way of drawing t, with the same random stream as the bound's."""
    bound, simple = simple_model(objective="bound"), simple_model()
    assert np.array_equal(bound.objective_weights()[2:], np.ones(11))
    tab = bound.tables(bound.init_params(np.random.default_rng(0)))
    w = tab["beta"][2:] / (2 * tab["alpha"][2:] * tab["one_minus_alpha_bar"][2:])   # DDPM's eq. (12), Sigma = beta
    assert np.allclose(simple.objective_weights()[2:], 1 / (11 * w), rtol=1e-12)
    hybrid = simple_model(objective="hybrid")
    np.testing.assert_allclose(hybrid.objective_weights(), simple.objective_weights() + 0.01 * bound.objective_weights(),
                               rtol=1e-15)
    for t_sampling in ("uniform", "log-uniform"):
        b, s = (simple_model(t_sampling=t_sampling, objective=o) for o in ("bound", "simple"))
        tb, eb, wb = b.draw(np.random.default_rng(5), 9)
        ts, es, ws = s.draw(np.random.default_rng(5), 9)
        assert np.array_equal(tb, ts) and np.array_equal(eb, es)
        assert np.allclose(ws, wb * s.objective_weights()[ts], rtol=1e-14)


def test_simple_objective_configuration():
    with pytest.raises(ValueError, match="unknown objective 'ddpm'"):
        simple_model(objective="ddpm")
    with pytest.raises(ValueError, match="objective 'simple' .* needs a fixed schedule"):
        ModelConfig(net=NetConfig(D=2, T=6), schedule=ScheduleConfig(T=6, learn=True), objective="simple")
    cfg = simple_model().cfg
    assert ModelConfig.from_dict(cfg.to_dict()).objective == "simple"
    old = {k: v for k, v in cfg.to_dict().items() if k != "objective"}   # a checkpoint from before the option
    assert ModelConfig.from_dict(old).objective == "bound"
