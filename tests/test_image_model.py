"""The image network inside the Gaussian diffusion: a training step, the model's gradient
end to end, and the stratified held-out bound against the all-t bound."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.gradcheck import roundoff_floor
from numpy_diffusion.image.model import ImageDiffusion, bound_stratified, image_model, strata
from numpy_diffusion.image.network import ImageNetConfig
from numpy_diffusion.nn.readout import bump_basis
from strategies import rng_from, seeds


def directional_error(loss, theta, grad, rng, delta=1e-6):
    """Relative error of ``grad . d`` against the central difference along a random unit ``d``
    (two loss evaluations, any number of parameters), with differences below the round-off
    floor of ``loss`` (``roundoff_floor``, as ``check_gradient`` uses it) compared in absolute terms.
    (The loss is a mean of per-image bounds that do not cancel: its value sets the floor.)"""
    d = rng.standard_normal(theta.shape)
    d /= np.linalg.norm(d)
    numeric = (loss(theta + delta * d) - loss(theta - delta * d)) / (2 * delta)
    analytic = float(grad @ d)
    return abs(analytic - numeric) / max(abs(analytic) + abs(numeric), roundoff_floor(loss(theta), delta))


def small_model(param="paper", learn_beta=False, T=8):
    net = ImageNetConfig(size=4, T=T, n_scales=2, n_hidden_conv=3, n_layers_conv=2, n_hidden_pixel=3,
                         n_temporal_basis=3)
    return image_model(net, beta_1=1e-2, param=param, learn_beta=learn_beta)


def random_params(model, rng):
    params = model.init_params(rng)
    return {k: v + 0.3 * rng.normal(size=v.shape) for k, v in params.items()}


@given(T=st.integers(2, 2000), n=st.integers(1, 100))
def test_strata_cover_every_step_once(T, n):
    e = strata(T, n)
    assert e[0] == 2 and e[-1] == T + 1 and (np.diff(e) > 0).all() and e.size - 1 <= n
    if n >= T - 1:                                                   # every step a stratum: exact in t
        np.testing.assert_array_equal(e, np.arange(2, T + 2))


def test_t_minus_one_strata_are_every_step_even_at_large_T():
    """Rounding a geometric spacing would merge the late steps (453 runs for 999 at T = 1000)."""
    assert strata(1000, 999).size == 1000 and strata(1000, 5000).size == 1000
    assert strata(1000, 30).size - 1 == 29                           # rounding merges two early ones


@given(seed=seeds, param=st.sampled_from(["paper", "reference", "bounded", "eps"]), learn=st.booleans())
def test_loss_gradient_end_to_end(seed, param, learn):
    """The whole model, bound and network and (learned) schedule, along random directions."""
    model, rng = small_model(param, learn), rng_from(seed)
    params = random_params(model, rng)
    x0 = rng.normal(size=(3, model.D))
    t, eps, w = model.draw(rng, 3)
    _, grads = model.loss_and_grads(params, x0, t, eps, w)
    names = sorted(params)
    theta = np.concatenate([params[k].ravel() for k in names])
    grad = np.concatenate([grads[k].ravel() for k in names])

    def loss(th):
        p, i = {}, 0
        for k in names:
            p[k] = th[i:i + params[k].size].reshape(params[k].shape)
            i += params[k].size
        return model.loss_and_grads(p, x0, t, eps, w)[0]

    for _ in range(2):
        assert directional_error(loss, theta, grad, rng) < 1e-5


def test_stratified_bound_agrees_with_all_t():
    """Both estimate the same per-image bound; over many noise draws their means agree
    within their Monte Carlo error (a wrong stratum weight would be off by O(1))."""
    model = small_model(T=12)
    rng = np.random.default_rng(0)
    params = random_params(model, rng)
    x0 = np.repeat(rng.normal(size=(1, model.D)), 400, axis=0)       # one image, 400 draws
    strat = bound_stratified(model, params, x0, np.random.default_rng(1), n_strata=3)["K"]
    exact = model.evaluate(params, x0, np.random.default_rng(2))["K_per_example_nats"]
    se = np.hypot(strat.std(), exact.std()) / np.sqrt(x0.shape[0])
    assert abs(strat.mean() - exact.mean()) < 4 * se
    assert strat.std() > exact.std()                                 # sampling t costs variance


def test_log_uniform_steps_are_drawn_as_stated_and_weighted_by_one_over_p():
    """``P(t) ∝ 1 / t`` on ``2..T``; the draw's frequencies match it within binomial error
    and every weight is ``1 / P(t)``, so ``E[w(t) f(t)] = sum_t f(t)`` for any ``f``."""
    model = image_model(ImageNetConfig(size=4, T=50, n_scales=1, n_temporal_basis=3), t_sampling="log-uniform")
    P = model.t_probabilities()
    assert P[:2].tolist() == [0, 0] and abs(P.sum() - 1) < 1e-12
    np.testing.assert_allclose(P[2:] * np.arange(2, 51), P[2] * 2, rtol=1e-12)
    n = 200_000
    t, eps, w = model.draw(np.random.default_rng(0), n)
    assert t.min() >= 2 and t.max() <= 50 and eps.shape == (n, model.D)
    np.testing.assert_array_equal(w, 1 / P[t])
    freq = np.bincount(t, minlength=51) / n
    assert (np.abs(freq - P) <= 5 * np.sqrt(P * (1 - P) / n) + 1e-12).all()


def test_log_uniform_and_uniform_training_losses_estimate_the_same_bound():
    """Both draws estimate the same expected loss (the negative bound); over many minibatches
    their means agree within their Monte Carlo error (a wrong weight would be off by far more)."""
    uniform = small_model(T=30)
    log_uniform = ImageDiffusion.from_config({**uniform.config(), "t_sampling": "log-uniform"})
    rng = np.random.default_rng(0)
    params = random_params(uniform, rng)
    x0 = rng.normal(size=(1, uniform.D))

    def losses(model, seed, weight=None, n=3000):
        r, out = np.random.default_rng(seed), []
        for _ in range(n):
            t, eps, w = model.draw(r, 1)
            out.append(model.loss_and_grads(params, x0, t, eps, w if weight is None else weight)[0])
        return np.array(out)

    a, b = losses(uniform, 1), losses(log_uniform, 2)
    se = np.hypot(a.std(), b.std()) / np.sqrt(a.size)
    assert abs(a.mean() - b.mean()) < 4 * se
    wrong = losses(log_uniform, 2, weight=np.full(1, 29.0))          # the uniform weight on these draws
    assert abs(a.mean() - wrong.mean()) > 10 * se                    # is told apart


def test_config_round_trip():
    model = small_model(learn_beta=True)
    again = ImageDiffusion.from_config(model.config())
    assert again.cfg.net == model.cfg.net and again.cfg.schedule == model.cfg.schedule
    assert type(again.net).__name__ == "ImageNetwork"
    net = ImageNetConfig(size=4, T=8, n_scales=1, n_temporal_basis=3, bump_spacing="log")
    model = image_model(net, t_sampling="log-uniform")
    again = ImageDiffusion.from_config(model.config())
    assert again.cfg == model.cfg
    np.testing.assert_array_equal(again.net.basis(np, np.float64), bump_basis(8, 3, spacing="log"))


def test_a_network_configuration_with_other_fields_is_refused_not_defaulted():
    """The image network's configuration must name every field as :meth:`to_dict` does: one
    with a field missing is refused, never filled with a default that could mean another model."""
    d = small_model().config()
    del d["net"]["bump_spacing"]
    with pytest.raises(ValueError, match=r"missing \['bump_spacing'\]"):
        ImageDiffusion.from_config(d)


def test_samples_have_the_data_shape():
    model = small_model(T=5)
    x = model.sample(model.init_params(np.random.default_rng(0)), 3, np.random.default_rng(1))
    assert x.shape == (3, model.D) and np.isfinite(x).all()


def test_the_stratified_bound_does_not_depend_on_the_chunk():
    """Steps are drawn for every image first and the noise image by image, so one image per
    network call and all images in one call give the same numbers."""
    model = small_model(T=12)
    rng = np.random.default_rng(0)
    params, x0 = random_params(model, rng), rng.normal(size=(5, model.D))
    one = bound_stratified(model, params, x0, np.random.default_rng(1), n_strata=3, chunk=3)
    every = bound_stratified(model, params, x0, np.random.default_rng(1), n_strata=3, chunk=10_000)
    np.testing.assert_array_equal(one["t"], every["t"])
    np.testing.assert_allclose(one["K"], every["K"], rtol=1e-12)
