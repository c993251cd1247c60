"""Binomial diffusion (§2.4.1, Table App.1, App. B, App. D.1.2): identities and gradients.

Brute force here means enumerating the two states of one bit with 2 x 2
transition matrices; everything is float64.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_diffusion.binomial.kernel import (bound_all_t, bound_backward, bound_forward, edge_terms,
                                             entropy_terms, kernel_logit, kl_backward, kl_forward, p_sample_loop,
                                             q_posterior, q_sample)
from numpy_diffusion.binomial.schedule import binary_entropy, binomial_tables, heartbeat_beta
from numpy_diffusion.binomial.model import BinomialDiffusion, heartbeat_model
from numpy_diffusion.datasets import exact_heartbeat_fraction, heartbeat
from numpy_diffusion.bits import standard_error
from numpy_diffusion.gradcheck import check_gradient
from numpy_diffusion.nn.layers import sigmoid

from strategies import rng_from, seeds

rates = st.floats(0.02, 0.98)
small_T = st.integers(2, 12)


@st.composite
def schedules(draw):
    """``(T, pi, beta)``: a random schedule in (0, 1], sometimes the heartbeat one."""
    T, pi = draw(small_T), draw(rates)
    if draw(st.booleans()):
        return T, pi, heartbeat_beta(T)
    beta = np.concatenate([[0.0], rng_from(draw(seeds)).uniform(0.01, 1.0, T)])
    return T, pi, beta


def kernel(beta, pi):
    """2 x 2 forward kernel, ``M[a, b] = q(x_t = b | x_{t-1} = a)`` (Table App.1)."""
    r = np.array([pi * beta, 1 - beta + pi * beta])                  # rate of x_t = 1 from a = 0, 1
    return np.stack([1 - r, r], 1)


def marginal(x0, t, beta, pi):
    """``q(x_t | x_0)`` over the two states by iterating the kernel."""
    p = np.eye(2)[x0]
    for s in range(1, t + 1):
        p = p @ kernel(beta[s], pi)
    return p


def test_heartbeat_schedule_erases_linearly():
    # alpha_bar_t = prod (T - s)/(T - s + 1) = (T - t)/T; 1e-13: round-off of 2000 products
    s = binomial_tables(2000, 0.2)
    t = np.arange(2001)
    assert np.allclose(s["alpha_bar"], (2000 - t) / 2000, rtol=0, atol=1e-13)
    assert s["beta"][0] == 0 and s["beta"][-1] == 1 and np.isclose(s["beta"][1], 1 / 2000)
    # L_null of Table 1: 20 bits of Bernoulli(0.2) is -14.438 bits for 4 ones, 16 zeros
    assert np.isclose((4 * s["log_pi_state"][1] + 16 * s["log_pi_state"][0]) / np.log(2), -14.4386, atol=1e-4)


@given(schedules(), st.data())
@settings(max_examples=30)
def test_marginal_matches_iterated_kernel(sched_args, data):
    T, pi, beta = sched_args
    s = binomial_tables(T, pi, beta)
    for t in range(T + 1):
        for x0 in (0, 1):
            # 1e-12: a dozen 2 x 2 products against a closed form, float64
            assert abs(s["rate_marginal"][t, x0] - marginal(x0, t, beta, pi)[1]) < 1e-12
            if t >= 1:
                assert abs(sigmoid(s["logit_marginal"][t, x0]) - s["rate_marginal"][t, x0]) < 1e-12


@given(schedules(), st.data())
@settings(max_examples=30)
def test_posterior_is_bayes_rule(sched_args, data):
    T, pi, beta = sched_args
    s = binomial_tables(T, pi, beta)
    t = data.draw(st.integers(2, T))
    x0, xt = (np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([[0.0, 1.0, 0.0, 1.0]]))
    logit_q = q_posterior(x0, xt, np.array([t]), s)[0]
    for d in range(4):
        a, b = int(x0[0, d]), int(xt[0, d])
        joint = marginal(a, t - 1, beta, pi) * kernel(beta[t], pi)[:, b]   # q(x_{t-1}, x_t = b | x_0)
        post = joint / joint.sum()                                         # Bayes' rule
        mine = np.array([sigmoid(-logit_q[d]), sigmoid(logit_q[d])])
        # 1e-12: both sides are float64 closed forms of a dozen operations
        assert abs(mine.sum() - 1) < 1e-12 and np.abs(mine - post).max() < 1e-12


@given(seeds, st.floats(0.5, 30.0))
@settings(max_examples=30)
def test_bernoulli_kl_nonnegative_and_zero_for_equal_rates(seed, scale):
    rng = rng_from(seed)
    a, b = rng.uniform(-scale, scale, (2, 50))
    kl = kl_forward(a, b)[0]
    # -1e-13: KL is a difference of O(scale) softplus terms, rounded in float64
    assert (kl >= -1e-13 * scale).all() and (kl_forward(a, a)[0] == 0).all()
    p, q = sigmoid(b), sigmoid(a)
    keep = np.abs(a).max() < 20 and np.abs(b).max() < 20           # direct formula still accurate
    if keep:
        direct = q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))
        assert np.allclose(kl, direct, rtol=1e-8, atol=1e-12)       # 1e-8: logs of rates near 1


def exact_K_forward_kernel(x0, s):
    """Eq. (14) with ``p`` = the forward kernel reversed, its expectation over ``x_t`` summed exactly
    (each bit's terms depend on that bit alone): per-bit ``K`` for ``x0`` in (0, 1)."""
    K = s["H_q_T"] - s["H_q_1"] - s["H_p_T"]
    for t in range(2, s["T"] + 1):
        for xt in (0.0, 1.0):
            x, y, tt = np.array([[float(x0)]]), np.array([[xt]]), np.array([t])
            w = s["rate_marginal"][t, x0] if xt else 1 - s["rate_marginal"][t, x0]
            K = K - w * kl_forward(q_posterior(x, y, tt, s), kernel_logit(y, tt, s))[0][0, 0]
    return K


@given(schedules())
@settings(max_examples=25)
def test_forward_kernel_network_gives_L_null(sched_args):
    T, pi, beta = sched_args
    s = binomial_tables(T, pi, beta)
    K = np.array([exact_K_forward_kernel(x0, s)[x0] for x0 in (0, 1)])    # (2,) per bit
    logit_pi, abar = np.log(pi / (1 - pi)), s["alpha_bar"]
    # Data from pi itself: E_pi K = E_pi log pi(x0) = L_null.  1e-10: a sum of ~2T O(1) terms
    assert abs((1 - pi) * K[0] + pi * K[1] - ((1 - pi) * s["log_pi_state"][0] + pi * s["log_pi_state"][1])) < 1e-10
    # Per x0, eq. (14) differs from log pi(x0) by the edge terms its derivation averages away
    gap = (1 - abar[1] + abar[T]) * logit_pi * (np.array([0.0, 1.0]) - pi)
    assert np.allclose(K, s["log_pi_state"] - gap, atol=1e-10)
    assert np.allclose(edge_terms(np.array([[0.0], [1.0]]), s), gap, rtol=0, atol=1e-12)   # float64 closed forms


def test_bound_all_t_estimates_the_exact_expectation():
    # Monte Carlo over the noise only; 5 standard errors, so a false failure is a 1-in-10^6 event
    s = binomial_tables(6, 0.3)
    x0 = np.array([[0.0, 1.0]]).repeat(4000, 0)
    res = bound_all_t(lambda xt, t: kernel_logit(xt, t, s), x0, s, rng_from(1))
    K, kl_by_t = res["K"], res["kl_by_t"]
    exact = exact_K_forward_kernel(0, s)[0] + exact_K_forward_kernel(1, s)[1]
    assert abs(K.mean() - exact) < 5 * standard_error(K)
    assert kl_by_t.shape == (7,) and (kl_by_t[:2] == 0).all() and (kl_by_t >= 0).all()
    # the entropies are eq. (14)'s, per example; K is their sum less the KL terms (float64 sums)
    H = entropy_terms(x0, s)
    assert all(res[k].shape == (4000,) and np.allclose(res[k], H[k]) for k in ("H_q_T", "H_q_1", "H_p_T"))
    assert np.isclose(K.mean(), -kl_by_t.sum() + (H["H_q_T"] - H["H_q_1"] - H["H_p_T"]).mean(),
                      rtol=0, atol=1e-12)
    # With p the forward kernel reversed, p(x0) = pi(x0) and the exact bound is log pi(x0) itself
    # (p(x_{0:T}) = pi(x0) q(x_{1:T}|x0) by detailed balance), up to the same Monte Carlo error
    log_pi = (s["log_pi_state"][1] + s["log_pi_state"][0]) * np.ones(4000)             # x0 = (0, 1)
    assert abs(res["K_exact"].mean() - log_pi.mean()) < 5 * standard_error(K)
    assert np.allclose(res["K_exact"] - K, edge_terms(x0, s), rtol=0, atol=1e-12)


@given(seeds)
@settings(max_examples=20)
def test_loss_gradient_wrt_logits(seed):
    rng = rng_from(seed)
    s = binomial_tables(9, float(rng.uniform(0.05, 0.95)))
    N, D = 5, 3
    x0, u = (rng.random((N, D)) < 0.5).astype(float), rng.random((N, D))
    t = rng.integers(2, 10, N)
    xt, w = q_sample(x0, t, u, s), rng.uniform(0.5, 8.0, N)
    logit_p = rng.uniform(-4, 4, (N, D))
    loss = lambda z: float(bound_forward(z, x0, xt, t, w, s)[0])
    dlogit_p = bound_backward(1.0, bound_forward(logit_p, x0, xt, t, w, s)[1])
    assert check_gradient(loss, logit_p, dlogit_p) < 1e-6            # float64 central differences: ~1e-8



@given(seeds, st.floats(0.5, 12.0))
@settings(max_examples=20)
def test_kl_gradient_wrt_both_logits(seed, scale):
    rng = rng_from(seed)
    logit_q, logit_p, dKL = rng.uniform(-scale, scale, (3, 4, 3))
    dlogit_q, dlogit_p = kl_backward(dKL, kl_forward(logit_q, logit_p)[1])
    f_q = lambda a: float((dKL * kl_forward(a, logit_p)[0]).sum())
    f_p = lambda a: float((dKL * kl_forward(logit_q, a)[0]).sum())
    # float64 central differences of O(scale) softplus terms: ~1e-8; a wrong derivative reads O(1)
    assert check_gradient(f_q, logit_q, dlogit_q) < 1e-6
    assert check_gradient(f_p, logit_p, dlogit_p) < 1e-6

def small_model(basis="identity", t_sampling="uniform"):
    return BinomialDiffusion(D=4, T=10, pi=0.25, hidden=(5, 3), basis=basis, n_bumps=4,
                             t_sampling=t_sampling)


@pytest.mark.parametrize("basis", ["identity", "bump"])
@given(seed=seeds)
@settings(max_examples=8)
def test_end_to_end_gradient_through_sigmoid_mlp(basis, seed):
    rng = rng_from(seed)
    m = small_model(basis)
    params = m.init_params(rng)
    params = {k: v + rng.uniform(-0.5, 0.5, v.shape) for k, v in params.items()}  # readout off zero
    N = 6
    x0, u = (rng.random((N, 4)) < 0.3).astype(float), rng.random((N, 4))
    t, w = rng.integers(2, 11, N), np.full(N, 9.0)
    _, grads = m.loss_and_grads(params, x0, t, u, w)
    for name, value in params.items():
        f = lambda v: m.loss_and_grads({**params, name: v}, x0, t, u, w)[0]
        # 1e-5: the loss is O(10) nats, so central differences carry ~|loss| eps / h ~ 1e-8
        # absolute error, ~1e-5 relative on the smallest entries (~1e-4); a wrong gradient reads O(1)
        assert check_gradient(f, value, grads[name]) < 1e-5, name


def test_random_draws_match_frozen_loss_and_dtype():
    m = small_model()
    params = m.init_params(rng_from(0))
    x0 = (rng_from(1).random((7, 4)) < 0.3).astype(float)
    loss, grads = m.loss_and_grads_random(params, x0, rng_from(2))
    r = rng_from(2)
    t, u = r.integers(2, 11, 7), r.random((7, 4))
    assert loss == m.loss_and_grads(params, x0, t, u, np.full(7, 9.0))[0]
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    _, g32 = m.loss_and_grads_random(p32, x0, rng_from(2))
    assert all(g32[k].dtype == np.float32 and g32[k].shape == p32[k].shape for k in p32)


def test_sampling_shape_binary_and_deterministic():
    m = small_model()
    params = m.init_params(rng_from(0))
    a, b = m.sample(params, 9, rng_from(3)), m.sample(params, 9, rng_from(3))
    assert a.shape == (9, 4) and set(np.unique(a)) <= {0.0, 1.0} and (a == b).all()
    s = binomial_tables(5, 0.5)
    fwd = lambda xt, t: kernel_logit(xt, t, s)
    x = p_sample_loop(fwd, 20000, 2, s, rng_from(4))
    # The forward kernel keeps pi stationary: mean 0.5, binomial std 0.0025 -> 5 sigma
    assert abs(x.mean() - 0.5) < 0.0125



def test_sampler_never_asks_the_network_at_t_1():
    s = binomial_tables(6, 0.3)
    seen = []

    def fwd(xt, t):
        seen.extend(np.unique(t).tolist())
        return kernel_logit(xt, t, s)
    p_sample_loop(fwd, 5, 3, s, rng_from(0))
    assert sorted(seen) == [2, 3, 4, 5, 6]                             # t = 1 is eq. (44)'s fixed step


def test_sampler_takes_the_fixed_last_step_of_eq_44():
    # The learned kernel says x_1 = 1 surely (logit +30 at t = 2..T) and x_0 = 0 surely
    # (logit -30 at t = 1). The fixed last step T_pi(x_0 | x_1 = 1; beta_1) instead keeps
    # each bit with rate 1 - beta_1 (1 - pi) = 0.925 for T = 10, pi = 0.25.
    m = small_model()
    params = m.init_params(rng_from(0))
    b = np.full_like(params["readout.b"], 30.0)                         # rows t - 1 = 0..T-1  (T, D)
    b[0] = -30.0                                                        # the readout of t = 1
    x = m.sample({**params, "readout.b": b}, 4000, rng_from(1))
    rate = 1 - m.host_tables["beta"][1] * (1 - m.pi)
    # binomial std sqrt(0.925 0.075 / 16000) = 0.002 -> 5 sigma is 0.01
    assert abs(x.mean() - rate) < 0.0105


def test_heartbeat_model_is_the_demos_default():
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demos"))
    import heartbeat
    args = heartbeat.parse_args([])
    cfg = heartbeat_model().config()
    assert cfg == {"kind": "binomial", "D": 20, "T": 2000, "pi": 0.2, "hidden": [50, 50, 50],
                   "activation": "sigmoid", "basis": args.basis, "n_bumps": args.n_bumps,
                   "t_sampling": args.t_sampling}
    assert cfg == BinomialDiffusion().config()                          # the default is one model
    assert heartbeat_model(basis="identity").config()["basis"] == "identity"

def test_evaluate_and_config():
    m = small_model()
    params = m.init_params(rng_from(0))
    x0 = (rng_from(1).random((50, 4)) < 0.25).astype(float)
    r = m.evaluate(params, x0, rng_from(2))
    assert set(r) == {"K_nats", "K_bits", "K_bits_stderr", "L_null_bits", "K_minus_L_null_bits",
                      "K_minus_L_null_bits_stderr", "kl_bits_by_t", "H_q_T_bits", "H_q_1_bits",
                      "H_p_T_bits", "K_exact_bits", "K_per_example_nats", "n_eps"}
    kl = r["kl_bits_by_t"]                                             # indexed by the paper's t
    assert isinstance(kl, np.ndarray) and kl.shape == (11,) and (kl[:2] == 0).all() and (kl[2:] > 0).all()
    assert all(isinstance(r[k], float) for k in ("K_nats", "K_bits", "K_bits_stderr", "L_null_bits",
                                                 "H_q_T_bits", "H_q_1_bits", "H_p_T_bits"))
    assert np.isclose(r["K_minus_L_null_bits"], r["K_bits"] - r["L_null_bits"])
    # eq. (14) in bits, from its parts; float64 sums of a dozen terms
    parts = -kl.sum() + r["H_q_T_bits"] - r["H_q_1_bits"] - r["H_p_T_bits"]
    assert np.isclose(r["K_bits"], parts, rtol=0, atol=1e-12)
    assert np.isclose(r["K_bits"], r["K_nats"] / np.log(2)) and r["n_eps"] == 1
    assert r["K_per_example_nats"].shape == (50,) and np.isclose(r["K_per_example_nats"].mean(), r["K_nats"])
    m2 = BinomialDiffusion.from_config(json.loads(json.dumps(m.config())))
    assert m2.config() == m.config()


def test_entropies_are_binary_entropies():
    s = binomial_tables(7, 0.2)
    h = lambda r: -r * np.log(r) - (1 - r) * np.log(1 - r)
    assert np.allclose(s["H_q_1"], h(s["rate_marginal"][1]), atol=1e-14)          # float64 closed forms
    assert np.isclose(s["H_p_T"], h(0.2)) and np.allclose(binary_entropy(np.array([0.0])), np.log(2))


@pytest.mark.parametrize("pi", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_pi_outside_unit_interval_is_a_clear_error(pi):
    with pytest.raises(ValueError, match="pi"):
        BinomialDiffusion(D=4, T=10, pi=pi)


@pytest.mark.parametrize("T", [1, 0])
def test_short_chain_is_a_clear_error(T):
    with pytest.raises(ValueError, match="T"):
        BinomialDiffusion(D=4, T=T)


@pytest.mark.parametrize("bad, match", [(0.5, "binary"), (2.0, "binary"), (float("nan"), "NaN")])
def test_non_binary_data_is_a_clear_error(bad, match):
    m = small_model()
    params = m.init_params(rng_from(0))
    x0 = np.zeros((3, 4))
    x0[1, 2] = bad
    with pytest.raises(ValueError, match=match):
        m.loss_and_grads_random(params, x0, rng_from(1))
    with pytest.raises(ValueError, match=match):
        m.evaluate(params, x0, rng_from(1))


def test_wrong_width_or_steps_is_a_clear_error():
    m = small_model()
    params = m.init_params(rng_from(0))
    with pytest.raises(ValueError, match="shape"):
        m.loss_and_grads_random(params, np.zeros((3, 5)), rng_from(1))
    with pytest.raises(ValueError, match="2..10"):
        m.loss_and_grads(params, np.zeros((2, 4)), np.array([1, 3]), np.zeros((2, 4)),
                       np.ones(2))


def test_bump_readout_written_per_step_gives_the_same_logits():
    m = small_model("bump")
    rng = rng_from(0)
    params = {k: v + rng.uniform(-0.5, 0.5, v.shape) for k, v in m.init_params(rng).items()}
    x, t = (rng.random((40, 4)) < 0.3).astype(float), rng.integers(2, 11, 40)
    step, net = m.per_step_params(params)
    assert net.cfg.basis == "identity" and step["readout.W"].shape == (3, 10, 4)
    # the same sums in another order: float64 round-off, ~1e-16
    assert np.allclose(m.p_logit_forward(x, t, params)[0], m.p_logit_forward(x, t, step, net=net)[0],
                       atol=1e-12, rtol=0)


def test_stratified_t_puts_each_step_equally_often_in_a_batch():
    m = small_model(t_sampling="stratified")
    t = m.draw_t(rng_from(0), 2 * 9)                                  # N = 2 (T - 1): each t twice
    assert (np.sort(t) == np.repeat(np.arange(2, 11), 2)).all()
    t = m.draw_t(rng_from(1), 1000)
    assert t.min() >= 2 and t.max() <= 10
    m2 = BinomialDiffusion.from_config(json.loads(json.dumps(m.config())))
    assert m2.config() == m.config() and m2.t_sampling == "stratified"
    with pytest.raises(ValueError, match="t_sampling"):
        small_model(t_sampling="sorted")


def test_exact_heartbeat_fraction():
    x = heartbeat(50, rng_from(0))
    assert exact_heartbeat_fraction(x) == 1.0
    x[:10, 3] = 1 - x[:10, 3]                                          # one bit flipped in 10 rows
    assert exact_heartbeat_fraction(x) == 0.8
    assert exact_heartbeat_fraction(np.zeros((4, 20))) == 0.0
    with pytest.raises(ValueError, match="shape"):
        exact_heartbeat_fraction(np.zeros(20))
