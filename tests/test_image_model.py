"""The image network inside the Gaussian diffusion: a training step, the model's gradient
end to end, and the stratified held-out bound against the all-t bound."""
import numpy as np
from hypothesis import given, strategies as st

from numpy_diffusion.gradcheck import roundoff_floor
from numpy_diffusion.image.model import ImageDiffusion, bound_stratified, image_model, strata
from numpy_diffusion.image.network import ImageNetConfig
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
    net = ImageNetConfig(size=4, T=T, n_scales=2, n_hidden_conv=3, n_layers_conv=2, n_hidden_dense=3,
                         n_temporal_basis=3)
    return image_model(net, beta_1=1e-2, param=param, learn_beta=learn_beta)


def random_params(model, rng):
    params = model.init_params(rng)
    return {k: v + 0.3 * rng.normal(size=v.shape) for k, v in params.items()}


@given(T=st.integers(2, 2000), n=st.integers(1, 100))
def test_strata_cover_every_step_once(T, n):
    e = strata(T, n)
    assert e[0] == 2 and e[-1] == T + 1 and (np.diff(e) > 0).all() and e.size - 1 <= n


@given(seed=seeds, param=st.sampled_from(["paper", "reference", "bounded"]), learn=st.booleans())
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


def test_config_round_trip():
    model = small_model(learn_beta=True)
    again = ImageDiffusion.from_config(model.config())
    assert again.cfg.net == model.cfg.net and again.cfg.schedule == model.cfg.schedule
    assert type(again.net).__name__ == "ImageNetwork"


def test_samples_have_the_data_shape():
    model = small_model(T=5)
    x = model.sample(model.init_params(np.random.default_rng(0)), 3, np.random.default_rng(1))
    assert x.shape == (3, model.D) and np.isfinite(x).all()
