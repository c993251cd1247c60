# %% [markdown]
# # One training step, cell by cell
#
# Sohl-Dickstein, Weiss, Maheswaranathan & Ganguli, *Deep Unsupervised Learning using
# Nonequilibrium Thermodynamics*, ICML 2015 (arXiv:1503.03585): the swiss roll of §3.1.1,
# through one step of training, forward and back, with the library's own functions.
# Every array's shape is printed; every gradient is composed by hand from the
# forward/backward pairs and checked, then checked again by finite differences.
# Sections 1-11 keep the diffusion rates `β_t` fixed; section 12 learns them (§2.4.1),
# as the swiss-roll demo does by default.
#
#     python demos/walkthrough.py            # 10-15 s on a busy 2-core machine
#
# (It opens as a notebook in VS Code as it is, and in Jupyter through jupytext.)
# Figure 1 goes to `$WALKTHROUGH_OUT` (default `runs/walkthrough/`).

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # this model's matrices are small: BLAS threads cost more than they gain

import math                                                                      # noqa: E402

import numpy                                                                     # noqa: E402

from numpy_diffusion.datasets import on_roll_fraction, swiss_roll                # noqa: E402
from numpy_diffusion.gaussian.bound import (bound_backward, bound_forward, entropy_sum,  # noqa: E402
                                            entropy_terms, kl_forward, standard_normal_logpdf)
from numpy_diffusion.gaussian.forward import (q_posterior_forward, q_sample_backward,  # noqa: E402
                                              q_sample_forward)
from numpy_diffusion.gaussian.model import swiss_roll_model                      # noqa: E402
from numpy_diffusion.gaussian.reverse import p_mean_logvar_forward               # noqa: E402
from numpy_diffusion.gaussian.schedule import (baseline_beta, init_schedule_params, log_snr,  # noqa: E402
                                               schedule_backward, schedule_forward)
from numpy_diffusion.gaussian.tables import add_grads, tables_backward, tables_forward  # noqa: E402
from numpy_diffusion.gradcheck import check_gradient, directional_check         # noqa: E402
from numpy_diffusion.nn.layers import (fourier_forward, linear_backward, linear_forward,  # noqa: E402
                                       tanh_backward, tanh_forward)
from numpy_diffusion.nn.optim import Adam, ParamVector                          # noqa: E402
from numpy_diffusion.nn.readout import readout_backward, readout_forward         # noqa: E402
from numpy_diffusion.run.figure1 import draw_figure1                            # noqa: E402
from numpy_diffusion.run.loop import TrainConfig                                # noqa: E402

LN2 = math.log(2)
OUT = os.environ.get("WALKTHROUGH_OUT", os.path.join("runs", "walkthrough"))
rng = numpy.random.default_rng(0)                                                # the one seed
numpy.set_printoptions(precision=4, suppress=False, linewidth=100)


def show(name, a):
    """One line per array: its name, shape and a few numbers."""
    a = numpy.asarray(a)
    print(f"  {name:<28} {str(a.shape):<14} {a.ravel()[:3]}")


# %% [markdown]
# ## 1. The data (§3.1.1)
#
# Points on the swiss roll, `u ~ U(1.5π, 4.5π)`, `x_0 = (u cos u, u sin u)`, shifted and
# scaled by fixed constants to zero mean and unit variance per coordinate (Table 1's
# caption). `L_null` is the data's log likelihood under the noise distribution
# `π = N(0, I)` (eq. 4), Table 1's reference point.

# %%
N = 256
x0 = swiss_roll(N, rng)                                                          # (N, D)
D = x0.shape[1]
print(f"x0: shape {x0.shape}, mean {x0.mean(0).round(2)}, variance {x0.var(0).round(2)}")
print(f"L_null = mean log2 pi(x0) = {standard_normal_logpdf(x0).mean() / LN2:+.3f} bits per point")

# %% [markdown]
# ## 2. The model, a fixed schedule `β_t`, and its tables (eq. 2, Table App.1)
#
# `swiss_roll_model(learn_beta=False)` is the demo's default model with its schedule held
# fixed (`python demos/swiss_roll.py --fixed-beta`). Its parameters are one dict of named
# arrays. The readout's weights `W` start at zero, so the untrained network outputs
# `z = 0`, and every gradient behind the readout is zero as well: the features' gradient
# is `dh = dz Wᵀ`, zero while `W` is. We give `W` small random values here so that every
# gradient below is non-zero.
#
# The diffusion rates `β_1..T`: `β_1` is a small constant, and the log signal-to-noise
# ratio `log(ᾱ_t / (1 − ᾱ_t))` falls linearly from there to −4 at `t = T`
# (`baseline_beta`). Every coefficient the model reads is a table of length `T + 1`
# indexed by the paper's `t` (`tables_forward`): `α_t = 1 − β_t`, `ᾱ_t = Π_{s≤t} α_s`,
# and the posterior's `β̃_t` (DDPM's symbols, Ho et al. 2020).

# %%
model = swiss_roll_model(learn_beta=False)
T, param = model.T, model.cfg.param
params = model.init_params(rng, numpy.float64)                                  # host float64: finite differences need it
params["readout.W"] = 0.1 * rng.standard_normal(params["readout.W"].shape)
print(f"T = {T}, reverse kernel '{param}', {sum(v.size for v in params.values())} parameters:")
for name, v in params.items():
    print(f"  {name:<18} {v.shape}")

beta = baseline_beta(model.cfg.schedule)                                         # (T + 1,), beta[0] = 0
tables, _ = tables_forward(beta)                                                 # dict of (T + 1,) arrays
print(f"\n{len(tables)} tables, each of shape {tables['beta'].shape}: {', '.join(tables)}")
print("   t   beta_t      alpha_bar_t   log SNR_t")
for s, snr in zip(range(1, T + 1), log_snr(beta)):
    if s in (1, 2, 3, 10, 20, 30) or s > T - 6:
        print(f"  {s:>2}   {beta[s]:.3e}   {tables['alpha_bar'][s]:.6f}     {snr:+.2f}")
t_half = int(numpy.argmin(abs(tables["alpha_bar"] - 0.5)))
print(f"alpha_bar_t is nearest 1/2 at t = {t_half}: half the signal is gone only "
      f"{T - t_half} steps before the end (this schedule spends its noise late)")

# %% [markdown]
# ## 3. The forward process: `x_t` from `x_0` (eq. 2; the marginal is DDPM's eq. 4)
#
# Composing the one-step kernel `q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t I)` gives
# `x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε` (derived in `gaussian/forward.py`). Each example draws
# its own `t` uniformly from `2..T` (weight `T − 1`) and its own `ε`: the frozen noise of
# §2.4.1, passed in.

# %%
t, eps, weights = model.draw(rng, N)                                             # (N,), (N, D), (N,)
xt, _ = q_sample_forward(x0, t, eps, tables)                                     # (N, D)
show("t", t)
show("eps", eps)
show("weights (T - 1)", weights)
show("x_t", xt)
for s in (2, t_half, T):
    print(f"  t = {s:>2}: {int((t == s).sum())} examples, sqrt(alpha_bar_t) = {tables['sqrt_alpha_bar'][s]:.4f}, "
          f"sqrt(1 - alpha_bar_t) = {tables['sqrt_one_minus_alpha_bar'][s]:.2e}")

# %% [markdown]
# ## 4. The network `z = f(x_t, t)` (the readout is eqs. 62–63)
#
# Not the paper's network: App. D.1.1 gives the swiss roll a 16-unit normalized
# radial-basis-function layer (`nn/layers.py: rbf_forward`, `--net rbf`). This one is
# the project's, layer by layer with the pairs of `nn/layers.py` and `nn/readout.py`:
# Fourier features `[x, sin xB, cos xB]` (Tancik et al. 2020; fixed random frequencies
# `B`), two `tanh` layers (the trunk, shared over time), and a readout
# `z_n = Σ_j g_j(t_n) (h_n W_j + b_j)` over Gaussian bumps `g_j(t)` in time. The output
# is `z = [z_μ, z_Σ]`. Each forward returns a cache for its backward (section 7).
# `model.net.forward` runs the same layers (checked equal).

# %%
feats, c_fourier = fourier_forward(xt, params["trunk.fourier_B"])                # (N, D + 2F)
a0, c_lin0 = linear_forward(feats, params["trunk.W0"], params["trunk.b0"])      # (N, H)
h0, c_tanh0 = tanh_forward(a0)                                                   # (N, H)
a1, c_lin1 = linear_forward(h0, params["trunk.W1"], params["trunk.b1"])         # (N, H)
h1, c_tanh1 = tanh_forward(a1)                                                   # (N, H)
G = model.net.basis(numpy, numpy.float64)                                        # (T + 1, J): row t is g(t)
z, c_read = readout_forward(h1, t, params["readout.W"], params["readout.b"], G)  # (N, 2 D)
for name, v in (("x_t", xt), ("[x, sin xB, cos xB]", feats), ("x W0 + b0", a0), ("tanh", h0),
                ("h W1 + b1", a1), ("tanh: features h", h1), ("basis G", G), ("g(t_n)", G[t]),
                ("z = [z_mu, z_Sigma]", z)):
    show(name, v)
z_net, net_cache = model.net.forward(xt, t, params)
assert numpy.array_equal(z, z_net)
print("model.net.forward gives the same z")

# %% [markdown]
# ## 5. The reverse kernel `p(x_{t−1} | x_t) = N(μ_p, diag Σ)` (eq. 5)
#
# Written as a perturbation of the forward step: the mean `√α_t x_t + √β_t z_μ` (the
# reference code's), and here the bounded variance, `log Σ = v log β_t + (1 − v) log β̃_t`
# with `v = σ(z_Σ)`, which never falls below the posterior's `β̃_t` (§2.6 motivates the range).

# %%
(mu_p, logvar_p), _ = p_mean_logvar_forward(z, xt, t, tables, param=param)      # (N, D), (N, D)
show("mu_p", mu_p)
show("logvar_p", logvar_p)
print("   t   log beta_tilde_t   log Sigma (both coordinates)   log beta_t")
for n in numpy.argsort(t)[::N // 6]:
    print(f"  {t[n]:>2}   {tables['log_beta_tilde'][t[n]]:+8.3f}          {logvar_p[n].round(3)}"
          f"         {tables['log_beta'][t[n]]:+8.3f}")

# %% [markdown]
# ## 6. The bound `K` (eq. 14)
#
# `K = − Σ_{t=2..T} E_q KL(q(x_{t−1} | x_t, x_0) ‖ p(x_{t−1} | x_t)) + H_q(X_T|X_0) − H_q(X_1|X_0) − H_p(X_T)`.
# The posterior `q(x_{t−1} | x_t, x_0) = N(μ_q, β̃_t I)` (Gaussian conjugacy, DDPM's
# eqs. 6–7); the KL of two diagonal Gaussians; the three entropies, which depend on the
# schedule only. One `t` per example with weight `T − 1` makes the batch mean an
# unbiased estimate of `K`: `bound_forward` returns `−mean K̂`, the loss.

# %%
(mu_q, logvar_q), _ = q_posterior_forward(x0, xt, t, tables)                     # (N, D), (N, 1)
KL, _ = kl_forward(mu_q, logvar_q, mu_p, logvar_p)                               # (N, D) nats
KL_n = KL.sum(axis=1)                                                            # (N,)
print("KL(q || p) of this batch, bits, mean over the examples drawn at each t:")
cells = [f"t={s:>2}: {KL_n[t == s].mean() / LN2:.3f}" for s in range(2, T + 1) if (t == s).any()]
for i in range(0, len(cells), 7):
    print("  " + "   ".join(cells[i:i + 7]))
H = entropy_terms(tables, D)
print(f"H_q(X_T|X_0) = {H['H_q_T'] / LN2:+.3f} bits   -H_q(X_1|X_0) = {-H['H_q_1'] / LN2:+.3f} bits   "
      f"-H_p(X_T) = {-H['H_p_T'] / LN2:+.3f} bits")
K_hat = entropy_sum(H) - weights * KL_n                                          # (N,) eq. (14), one t each
print(f"K (this batch) = {entropy_sum(H) / LN2:+.3f} - {(weights * KL_n).mean() / LN2:.3f} "
      f"= {K_hat.mean() / LN2:+.3f} bits per point")
loss, b_cache = bound_forward(z, x0, xt, t, weights, tables, param=param)
assert numpy.isclose(-loss, K_hat.mean(), rtol=1e-12)
print(f"bound_forward: loss = -mean K_hat = {float(loss):.4f} nats")
held_out = swiss_roll(1000, numpy.random.default_rng(1))
res = model.evaluate(params, held_out, numpy.random.default_rng(2))
print(f"held-out, every t summed: K = {res['K_bits']:+.3f} ± {res['K_bits_stderr']:.3f} bits "
      f"(exact per-point bound {res['K_exact_bits']:+.3f}); the largest KL at "
      f"t = {int(numpy.argmax(res['kl_bits_by_t']))} ({res['kl_bits_by_t'].max():.2f} bits)")

# %% [markdown]
# ## 7. The backward pass, pair by pair
#
# Each `_backward` takes the upstream gradient and the cache its `_forward` returned,
# in the reverse order of section 4. `bound_backward` gives the gradient with respect
# to the network's output `z` (and, for section 12, with respect to `x_t` and the
# tables: with a fixed `β` neither leads to a parameter). Then the readout, the second
# `tanh` layer, the first; the Fourier frequencies `B` are fixed and `x_t` is data here,
# so the chain stops at `W0` (`need_dx=False`). The result is checked equal to the
# network's own backward, `model.net.backward`, and to `GaussianDiffusion.loss_and_grads`.

# %%
dz, _, _ = bound_backward(1.0, b_cache)                                          # (N, 2 D)
dh1, dW_read, db_read = readout_backward(dz, c_read)                             # (N, H), (H, J, 2 D), (J, 2 D)
da1 = tanh_backward(dh1, c_tanh1)                                                # (N, H)
dh0, dW1, db1 = linear_backward(da1, c_lin1)                                     # (N, H), (H, H), (H,)
da0 = tanh_backward(dh0, c_tanh0)                                                # (N, H)
_, dW0, db0 = linear_backward(da0, c_lin0, need_dx=False)                        # (D + 2F, H), (H,)
grads = {"trunk.W0": dW0, "trunk.b0": db0, "trunk.W1": dW1, "trunk.b1": db1,
         "trunk.fourier_B": numpy.zeros_like(params["trunk.fourier_B"]),        # fixed: no gradient
         "readout.W": dW_read, "readout.b": db_read}
print("gradient of the loss -K (nats) with respect to each parameter array:")
for name in params:
    print(f"  {name:<18} {str(grads[name].shape):<14} |grad| = {numpy.linalg.norm(grads[name]):.3e}")

_, grads_net = model.net.backward(dz, net_cache, need_dxt=False)
assert all(numpy.array_equal(grads[k], grads_net[k]) for k in params)
print("pair by pair, the same as model.net.backward")
loss_model, grads_model = model.loss_and_grads(params, x0, t, eps, weights)
assert loss_model == float(loss)
assert all(numpy.array_equal(grads[k], grads_model[k]) for k in params)
print("equal to model.loss_and_grads")

# %% [markdown]
# ## 8. Finite differences (`numpy_diffusion.gradcheck`)
#
# Central differences in float64: the loss at `θ_i ± δ` for each entry of three
# parameter arrays, against the hand-written gradient. A correct gradient gives a
# relative error near 1e-6 (the round-off of the terms at `β_t ≈ 1e−7`), a wrong one
# about 1. Then the whole model along one random direction: two loss evaluations for all
# the trained parameters at once.

# %%
def loss_at(params, model=model):
    return model.loss_and_grads(params, x0, t, eps, weights)[0]


for name in ("readout.b", "trunk.b1", "trunk.b0"):
    err = check_gradient(lambda _: loss_at(params), params[name], grads[name], delta=1e-5)  # perturbs in place
    print(f"  {name:<12} {params[name].size:>4} entries: relative error {err:.1e}")

trained = ParamVector.from_arrays({k: v for k, v in params.items() if k != "trunk.fourier_B"})
grad_flat = numpy.concatenate([grads[k].ravel() for k in trained.keys()])        # same layout


def loss_along(flat):
    return loss_at({**params, **ParamVector(trained.layout, flat).views})


err = directional_check(loss_along, trained.flat, grad_flat, numpy.random.default_rng(3), delta=1e-5)
print(f"  all {trained.flat.size} trained parameters along one random direction: relative error {err:.1e}")

# %% [markdown]
# ## 9. One Adam step (Kingma & Ba 2015, Algorithm 1)
#
# All parameters live in one flat vector (`ParamVector`: named views into it), so the
# update is a handful of whole-vector operations. On its first step Adam moves every
# parameter with a non-zero gradient by the learning rate, against its gradient's sign
# (`m̂ / √v̂ = g / |g|`; a little less where `|g|` is near Adam's `ε`).

# %%
theta = ParamVector.from_arrays(params)                                          # (P,) with named views
g = theta.zeros_like()                                                           # (P,), the same views
for name, v in grads.items():
    g[name][...] = v
opt = Adam(theta.flat.size, lr=1e-3)
before = theta.flat.copy()
opt.step(theta.flat, g.flat)
moved = abs(theta.flat - before)
print(f"{theta.flat.size} parameters; {int((moved > 0).sum())} moved, each by "
      f"{moved[moved > 0].min():.2e} to {moved.max():.2e}")
print(f"loss on the same batch: {loss_model:.4f} -> {loss_at(theta.views):.4f} nats")

# %% [markdown]
# ## 10. Training: the plain loop (`run/loop.py: train_plain`)
#
# A fresh batch, fresh `t` and `ε` each step, the loss and its gradient, one Adam step;
# the learning rate warms up, then decays (cosine). These are `train_plain`'s lines, with
# a held-out evaluation every 100 steps; `run/training.py`'s `Trainer` runs the same loop
# with shards, divergence checks and checkpoints (and gives the same parameters with one
# shard). The held-out bound, every `t` summed, rises.

# %%
cfg = TrainConfig(steps=400, batch_size=256, lr=3e-3, warmup=20, final_lr_fraction=0.05)   # lr_at: warm-up, cosine
for step in range(cfg.steps):
    x_batch = swiss_roll(cfg.batch_size, rng)                                    # (N, D) fresh data
    loss, grads = model.loss_and_grads(theta.views, x_batch, *model.draw(rng, cfg.batch_size))  # t, eps, weights
    for name, v in grads.items():
        g[name][...] = v                                                         # into the flat gradient
    opt.step(theta.flat, g.flat, cfg.lr_at(step))
    if (step + 1) % 100 == 0:
        res = model.evaluate(theta.views, held_out, numpy.random.default_rng(2))
        print(f"  step {step + 1:>4}: held-out K = {res['K_bits']:+.3f} ± {res['K_bits_stderr']:.3f} bits")
params = theta.views

# %% [markdown]
# ## 11. Sampling, and Figure 1 (eqs. 4, 5, 44)
#
# `x_T ~ π = N(0, I)`, then the learned kernel for `t = T..2`, then the fixed last step
# `p(x_0 | x_1) = N(√α_1 x_1, β_1 I)` (App. B.2, eq. 44). The trajectory is indexed by
# `t`: `traj[t]` is `x_t`, `traj[T]` the start and `traj[0]` the sample. After a few
# hundred steps the samples lie near the roll, still blurred; `python demos/swiss_roll.py`
# trains 16,000. Figure 1's middle column is where `ᾱ_t` is nearest 0.9 (noise of
# standard deviation 0.3, half the distance between the roll's arms).

# %%
samples, traj = model.sample(params, 2000, numpy.random.default_rng(4), trajectory=True)   # (n, D), (T + 1, n, D)
show("samples x_0", samples)
show("trajectory x_t, t = 0..T", traj)
print(f"{100 * on_roll_fraction(samples):.0f} % of the samples lie within 0.05 of the roll "
      f"(the default run's: 99 %)")
os.makedirs(OUT, exist_ok=True)
path = os.path.join(OUT, "figure1.png")
t_mid = draw_figure1(model, params, traj, 2000, 0, numpy, path)
print(f"wrote {path}: q and p at t = 0, {t_mid} (alpha_bar_t nearest 0.9) and {T}, and the drift")

# %% [markdown]
# ## 12. A learned schedule (§2.4.1)
#
# The paper learns `β_2..T` too, by gradient ascent on `K` through the frozen noise; so
# does the demo's default model, `swiss_roll_model()`. Here `β` comes from learned
# coefficients `schedule.w` (`schedule_forward`; this form keeps both ends of the log
# SNR fixed and learns how the `T − 1` steps between them are spent; its initial `w` gives
# the fixed schedule above). Now `x_t`, the posterior, the reverse kernel and the
# entropies all depend on `β`, so the backward pass of section 7 gains three steps, each
# the backward of one forward: the tables' gradient from the bound and from `q_sample`
# (fed by the bound's direct `dx_t` and the network's input gradient), `tables_backward`
# to `dβ` (its docstring derives it), `schedule_backward` to `dw`.

# %%
learned = swiss_roll_model()
params_l = {**params, "schedule.w": init_schedule_params(learned.cfg.schedule)}  # the trained network
beta_l, s_cache = schedule_forward(learned.cfg.schedule, params_l["schedule.w"])  # (T + 1,)
print(f"schedule.w {params_l['schedule.w'].shape}: beta from w equals the fixed beta to "
      f"{numpy.max(abs(beta_l[1:] / beta[1:] - 1)):.0e} (relative)")
tables_l, t_cache = tables_forward(beta_l)                                       # dict of (T + 1,) arrays
xt_l, q_cache = q_sample_forward(x0, t, eps, tables_l)                           # (N, D)
z_l, net_cache_l = learned.net.forward(xt_l, t, params_l)                        # (N, 2 D)
loss_l, b_cache_l = bound_forward(z_l, x0, xt_l, t, weights, tables_l, param=param)
dz, dxt, dtables = bound_backward(1.0, b_cache_l)                                # (N, 2 D), (N, D), dict
dxt_net, grads_l = learned.net.backward(dz, net_cache_l, need_dxt=True)          # section 7, now with dx_t
dtables = add_grads(dtables, q_sample_backward(dxt + dxt_net, q_cache))          # x_t = sqrt(abar) x0 + ...
dbeta = tables_backward(dtables, t_cache)                                        # (T + 1,)
grads_l["schedule.w"] = schedule_backward(dbeta, s_cache)                        # (T - 1,)
print(f"tables read: {', '.join(sorted(dtables))}")
show("d loss / d beta", dbeta)
show("d loss / d schedule.w", grads_l["schedule.w"])
loss_lm, grads_lm = learned.loss_and_grads(params_l, x0, t, eps, weights)
assert loss_lm == float(loss_l)
assert all(numpy.allclose(grads_l[k], grads_lm[k], rtol=1e-12, atol=0) for k in params_l)
print("equal to learned.loss_and_grads")
err = check_gradient(lambda _: loss_at(params_l, learned), params_l["schedule.w"], grads_l["schedule.w"],
                     delta=1e-5)
print(f"  {'schedule.w':<12} {params_l['schedule.w'].size:>4} entries: relative error {err:.1e}")
