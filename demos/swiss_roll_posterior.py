"""Condition a trained swiss-roll model (§2.5, App. C): denoising, inpainting, a smooth r.

    python demos/swiss_roll_posterior.py                      # uses runs/swiss_roll/checkpoint.npz
    python demos/swiss_roll_posterior.py --checkpoint /tmp/ck/checkpoint.npz --particles 2000

Compares the paper's modified reverse chain (eq. 22 with eq. 23's r_t, and r^{(T-t)/T})
with the sequential Monte Carlo sampler (numpy_diffusion.posterior.smc).  Trains the
default model with demos/swiss_roll.py if the checkpoint does not exist.  Writes to
``--out`` (default ``runs/swiss_roll_posterior/``): posterior.png, posterior_metrics.json.
"""
import math
import os
import subprocess
import sys
import time

import numpy

import numpy_diffusion
from numpy_diffusion.backend import to_host
from numpy_diffusion.datasets import (SWISS_ROLL_MEAN, SWISS_ROLL_STD, U_HIGH, U_LOW, swiss_roll,
                                      swiss_roll_angle_to_point)
from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.gaussian.schedule import ScheduleConfig
from numpy_diffusion.nn.network import NetConfig
from numpy_diffusion.posterior.paper import denoise_sample, forward_kernel_chain_moments, inpaint_sample, smooth_sample
from numpy_diffusion.posterior.smc import draw_one, smc_denoise, smc_inpaint
from numpy_diffusion.run import plots
from numpy_diffusion.run.checkpoint import load_checkpoint, save_json
from numpy_diffusion.run.cli import CHECKPOINT, MAX_SEED, ArgumentParser, HelpFormatter, fail, integer, refuse
from numpy_diffusion.run.folder import check_out_folder, guarded, hold_folder, make_out_folder, read_checkpoint

PAPER = ("constant", "annealed")                         # eq. (23) and r^{(T-t)/T}
INPAINT_AT = (-1.0, 0.0, 0.8)                            # x[0] = a, standardized units
ON_ROLL = 0.1                                            # standardized units
SIGMA_D = 0.3                                            # denoising noise, standardized units
HALF_PLANE = (0.5, 4.0)                                  # r(x) = sigmoid(k (x[0] - b)): b, k


OUTPUTS = ("posterior.png", "posterior_metrics.json")


def make_parser():
    """The options, each checked against its range by argparse."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", default=os.path.join("runs", "swiss_roll", CHECKPOINT),
                   help="a trained swiss-roll checkpoint (trained with the defaults if missing)")
    p.add_argument("--out", default=os.path.join("runs", "swiss_roll_posterior"), help="output folder")
    p.add_argument("--seed", type=integer(0, MAX_SEED), default=0, help="the one seed of the run")
    p.add_argument("--particles", type=integer(1, 100_000), default=2000,
                   help="SMC particles per observation (inpainting)")
    p.add_argument("--samples", type=integer(1, 100_000), default=2000,
                   help="paper's-method samples per inpainting value")
    p.add_argument("--denoise-points", type=integer(1, 10_000), default=100, help="noisy observations to denoise")
    p.add_argument("--denoise-particles", type=integer(1, 100_000), default=300,
                   help="SMC particles / samples per observation")
    return p


def parse_args(argv=None):
    """The options' values (see :func:`check_args`)."""
    return check_args(make_parser(), argv)


def check_args(p, argv=None):
    """The options' values; refuses sizes that together would not fit in memory."""
    args = p.parse_args(argv)
    if args.denoise_points * args.denoise_particles > 1_000_000:
        refuse(p, "--denoise-particles", f"invalid value {args.denoise_particles}: with --denoise-points "
                                         f"{args.denoise_points}, allowed: at most {1_000_000 // args.denoise_points:,} "
                                         "(points x particles <= 1,000,000)")
    return args


def check_checkpoint(parser, path):
    """Refuse a ``--checkpoint`` this demo cannot use, before any work: another model, a model
    of another dimension, a folder; a missing one only where the default training can write it.
    Returns whether it is missing (and will be trained)."""
    if os.path.isdir(path):
        refuse(parser, "--checkpoint", f"{path!r} is a folder; give the {CHECKPOINT} file in it")
    if not os.path.lexists(path):
        if os.path.basename(path) != CHECKPOINT:
            refuse(parser, "--checkpoint", f"{path!r} does not exist (a missing checkpoint is trained only "
                                           f"when it is named {CHECKPOINT}, as demos/swiss_roll.py writes it)")
        check_out_folder(parser, os.path.dirname(path) or ".", (CHECKPOINT, "checkpoint.json"),
                         option="--checkpoint")
        return True
    config = read_checkpoint(parser, path, "GaussianDiffusion", "--checkpoint")[1]
    try:
        D = ModelConfig.from_dict(config["model"]).net.D
    except (KeyError, TypeError, ValueError) as err:
        refuse(parser, "--checkpoint", f"{path!r} carries a model configuration this demo cannot read ({err!r})")
    if D != 2:
        refuse(parser, "--checkpoint", f"{path!r} holds a model of {D}-dimensional data; this demo "
                                       "needs the 2-dimensional swiss roll's")
    return False


def train_default(path):
    """Train the default model into ``path``'s folder with ``demos/swiss_roll.py``, run as a
    program of its own (one demo never imports another); exit if it does not finish."""
    print(f"no checkpoint at {path}; training the default model (demos/swiss_roll.py)", flush=True)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(numpy_diffusion.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    demo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swiss_roll.py")
    code = subprocess.run([sys.executable, demo, "--out", os.path.dirname(path) or "."], env=env).returncode
    if code != 0 or not os.path.isfile(path):
        fail(f"error: demos/swiss_roll.py did not write {path} (exit code {code}); see its message above")


def load_model(path):
    """The model and its parameters (the EMA if the checkpoint kept one)."""
    arrays, config = load_checkpoint(path)
    prefix = "ema/" if any(k.startswith("ema/") for k in arrays) else "param/"
    params = {k[len(prefix):]: arrays[k] for k in arrays if k.startswith(prefix)}
    return GaussianDiffusion(ModelConfig.from_dict(config["model"])), params, config.get("step")


def gaussian_check(rng):
    """The closed-form Gaussian case (``p(x0) = N(0, 1)``, a Gaussian ``r``; see
    :func:`numpy_diffusion.posterior.paper.forward_kernel_chain_moments`) beside both samplers' estimates."""
    T, y, s2 = 40, 1.0, 0.5
    net = NetConfig(D=1, T=T, net="mlp", hidden=(8,), basis="identity")
    sched = ScheduleConfig(T=T, beta_1=1e-5, baseline="reference")
    model = GaussianDiffusion(ModelConfig(net=net, schedule=sched, param="reference"))
    params = model.init_params(rng)                                        # zero readout: z = 0
    tables = model.tables(params)
    out = {"setting": "p(x0) = N(0, 1) (zero network, 'reference', reference schedule, T = 40, "
                      "beta_1 = 1e-5), y = 1, sigma_d^2 = 0.5",
           "exact_posterior": [y / (1 + s2), s2 / (1 + s2)]}
    for choice in PAPER + ("diffused",):
        x = to_host(denoise_sample(model, params, numpy.array([y]), math.sqrt(s2), 20000, rng, choice))[:, 0]
        closed = forward_kernel_chain_moments(tables, y, math.sqrt(s2), choice)
        out[f"paper_chain_{choice}"] = {"closed_form": closed,
                                        "sampled": [float(x.mean()), float(x.var())],
                                        "sampled_stderr": [float(x.std() / math.sqrt(x.size)),
                                                           float(x.var() * math.sqrt(2 / x.size))]}
    res = smc_denoise(model, params, numpy.full((20, 1), y), math.sqrt(s2), 2000, rng, "annealed")
    x, w = to_host(res["x0"])[..., 0], to_host(res["w"])
    m = (w * x).sum(1)
    v = (w * (x - m[:, None]) ** 2).sum(1)
    se = lambda a: float(a.std(ddof=1) / math.sqrt(a.size))            # noqa: E731  over 20 systems
    log_Z = to_host(res["log_Z"])
    out["smc_annealed_20x2000"] = {"mean": float(m.mean()), "mean_stderr": se(m),
                                   "var": float(v.mean()), "var_stderr": se(v),
                                   "log_Z": float(log_Z.mean()), "log_Z_stderr": se(log_Z),
                                   "log_p_y_exact": -0.5 * math.log(2 * math.pi * (1 + s2))
                                   - y * y / (2 * (1 + s2)),
                                   "min_ess_fraction": float(to_host(res["ess"]).min() / 2000)}
    return out


def crossings(a):
    """Where the roll crosses ``x[0] = a`` (standardized): ``(x1 (K,), weight (K,))``, the weight
    of each crossing ∝ 1 / |dx0/du| (the data density there, u ~ U(U_LOW, U_HIGH))."""
    u = numpy.linspace(U_LOW, U_HIGH, 200001)
    f = (u * numpy.cos(u) - SWISS_ROLL_MEAN[0]) / SWISS_ROLL_STD[0] - a
    i = numpy.flatnonzero(numpy.sign(f[:-1]) != numpy.sign(f[1:]))
    uc = u[i] - f[i] * (u[i + 1] - u[i]) / (f[i + 1] - f[i])             # linear interpolation
    dx0 = numpy.abs(numpy.cos(uc) - uc * numpy.sin(uc)) / SWISS_ROLL_STD[0]
    return swiss_roll_angle_to_point(uc)[:, 1], (1 / dx0) / (1 / dx0).sum()


def crossing_metrics(x1, w, a):
    """``inpaint_on_roll_fraction`` and ``inpaint_crossing_tv`` for samples ``x1`` (M,) weighted ``w``.

    Each sample within ON_ROLL of a crossing counts for the nearest one; the rest fall in an
    'off the roll' bin of true weight 0; TV = (sum_k |mass_k - weight_k| + off-roll mass) / 2.
    """
    xc, wc = crossings(a)
    d = numpy.abs(x1[:, None] - xc[None, :])
    near, on = d.argmin(1), d.min(1) < ON_ROLL
    mass = numpy.bincount(near[on], weights=w[on], minlength=len(xc))
    return {"inpaint_on_roll_fraction": float(mass.sum()),
            "inpaint_crossing_tv": float(0.5 * (numpy.abs(mass - wc).sum() + (1 - mass.sum()))),
            "crossings_x1": xc.tolist(), "true_weights": wc.tolist(), "mass_per_crossing": mass.tolist()}


def inpaint(model, params, args, rng):
    ys, mask = numpy.array([[a, 0.0] for a in INPAINT_AT]), numpy.array([True, False])
    res = {c: to_host(inpaint_sample(model, params, ys, mask, args.samples, rng, c)) for c in PAPER}
    smc = smc_inpaint(model, params, ys, mask, args.particles, rng)
    res["smc"] = (to_host(smc["x0"]), to_host(smc["w"]))
    metrics, data = {}, swiss_roll(400000, numpy.random.default_rng(args.seed + 1))
    for i, a in enumerate(INPAINT_AT):
        equal = numpy.full(args.samples, 1 / args.samples)
        row = {c: crossing_metrics(res[c][i, :, 1], equal, a) for c in PAPER}
        row["smc"] = crossing_metrics(res["smc"][0][i, :, 1], res["smc"][1][i], a)
        ess = to_host(smc["ess"])[i] / args.particles
        row["smc"].update({"ess_fraction_min": float(ess.min()), "ess_fraction_final": float(ess[0])})
        near = data[numpy.abs(data[:, 0] - a) < 0.005, 1]                # reference: data near x[0] = a
        row["data_within_0.005"] = crossing_metrics(near, numpy.full(len(near), 1 / len(near)), a)
        metrics[f"a={a:+.2f}"] = row
    return res, metrics, int(smc["n_resampled"])


def denoise(model, params, args, rng):
    B, N = args.denoise_points, args.denoise_particles
    x = swiss_roll(B, rng)
    y = x + SIGMA_D * rng.standard_normal(x.shape)
    err = lambda m: float(numpy.sqrt(((m - x) ** 2).sum(1).mean()))    # noqa: E731  RMS distance
    out = {"sigma_d": SIGMA_D, "points": B, "observation_rms_error": err(y)}
    means = {c: to_host(denoise_sample(model, params, y, SIGMA_D, N, rng, c)).mean(1) for c in PAPER}
    res = smc_denoise(model, params, y, SIGMA_D, N, rng, "annealed")
    xs, w = to_host(res["x0"]), to_host(res["w"])
    means["smc"] = (w[..., None] * xs).sum(1)
    out.update({f"posterior_mean_rms_error_{k}": err(m) for k, m in means.items()})
    ess = to_host(res["ess"]) / N
    out["smc_ess_fraction"] = {"min": float(ess.min()), "final_mean": float(ess[:, 0].mean())}
    one = xs[numpy.arange(B), to_host(draw_one(res["w"], rng))]               # one draw per point
    return x, y, means, one, out


def half_plane(model, params, args, rng):
    b, k = HALF_PLANE
    grad = lambda x: numpy.stack([k / (1 + numpy.exp(k * (x[:, 0] - b))), 0 * x[:, 1]], 1)  # noqa: E731
    res = {c: to_host(smooth_sample(model, params, grad, args.samples, rng, c)) for c in PAPER}
    x = to_host(model.sample(params, 20 * args.samples, rng))            # exact: p samples weighted by r
    log_r = -numpy.logaddexp(0, -k * (x[:, 0] - b))
    w = numpy.exp(log_r - log_r.max())
    pick = numpy.random.default_rng(args.seed + 7).choice(len(x), args.samples, p=w / w.sum())
    res["exact (p weighted by r)"] = x[pick]
    frac = {c: float((v[:, 0] > b).mean()) for c, v in res.items()}
    return res, {"r": f"sigmoid({k} (x[0] - {b}))", "fraction_x0_above_b": frac,
                 "fraction_x0_above_b_unconditional": float((x[:, 0] > b).mean())}


def figure(path, dn, inp, hp):
    plt = plots.pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(16, 5.2))
    roll = swiss_roll_angle_to_point(numpy.linspace(U_LOW, U_HIGH, 800))
    for a_ in ax:
        a_.plot(roll[:, 0], roll[:, 1], color="0.8", lw=1, zorder=0)
        a_.set_aspect("equal")
    x, y, means, one, _ = dn
    ax[0].scatter(*y.T, s=8, c="tab:red", label="noisy y")
    ax[0].scatter(*means["constant"].T, s=8, c="tab:orange", label="paper eq. 23 (mean)")
    ax[0].scatter(*one.T, s=8, c="tab:blue", label="SMC (one draw)")
    ax[0].scatter(*x.T, s=8, c="k", label="clean")
    ax[0].set_title("(a) denoising, sigma_d = %.1f" % SIGMA_D)
    for i, a in enumerate(INPAINT_AT):
        for off, (c, col) in zip((-0.06, 0.0), (("constant", "tab:orange"), ("annealed", "tab:green"))):
            ax[1].scatter(inp[c][i, :300, 0] + off, inp[c][i, :300, 1], s=3, c=col, alpha=.4,
                          label=f"paper, {c}" if i == 0 else None)
        xs, w = inp["smc"][0][i], inp["smc"][1][i]
        pick = numpy.random.default_rng(i).choice(len(w), 300, p=w / w.sum())
        ax[1].scatter(xs[pick, 0] + 0.06, xs[pick, 1], s=3, c="tab:blue", alpha=.4,
                      label="SMC" if i == 0 else None)
        xc, wc = crossings(a)
        ax[1].scatter(numpy.full(len(xc), a), xc, s=300 * wc, facecolors="none", edgecolors="k",
                      label="crossings (area ∝ weight)" if i == 0 else None)
    ax[1].set_title("(b) inpainting x[0] = a")
    for (c, v), col in zip(hp.items(), ("tab:orange", "tab:green", "tab:blue")):
        ax[2].scatter(v[:600, 0], v[:600, 1], s=3, alpha=.5, c=col, label=c)
    ax[2].axvline(HALF_PLANE[0], color="k", ls="--", lw=1)
    ax[2].set_title("(c) smooth r: sigmoid(%g (x[0] - %g))" % HALF_PLANE[::-1])
    for a_ in ax:
        a_.legend(fontsize=7, loc="lower left")
    plots.save_figure(fig, path, plt)


@guarded
def main(argv=None):
    parser = make_parser()
    args = check_args(parser, argv)
    check_out_folder(parser, args.out, OUTPUTS)
    missing = check_checkpoint(parser, args.checkpoint)
    make_out_folder(parser, args.out)
    if missing:                             # before holding --out: the training may write there too
        make_out_folder(parser, os.path.dirname(args.checkpoint) or ".", option="--checkpoint")
        train_default(args.checkpoint)
    hold_folder(parser, args.out)
    model, params, step = load_model(args.checkpoint)
    rng, t0 = numpy.random.default_rng(args.seed), time.perf_counter()
    stage = lambda s: print(f"[{time.perf_counter() - t0:5.0f} s] {s}", flush=True)   # noqa: E731
    stage("Gaussian-model check (closed forms and both samplers)")
    metrics = {"checkpoint": os.path.abspath(args.checkpoint), "checkpoint_step": step, "seed": args.seed,
               "gaussian_model": gaussian_check(rng)}
    stage(f"inpainting at x[0] in {INPAINT_AT}: {args.samples} samples, {args.particles} particles each")
    inp, metrics["inpainting"], metrics["inpainting_smc_resampling_steps"] = inpaint(model, params, args, rng)
    stage(f"denoising {args.denoise_points} points, {args.denoise_particles} samples/particles each")
    dn = denoise(model, params, args, rng)
    metrics["denoising"] = dn[-1]
    stage("smooth r: half-plane preference")
    hp, metrics["smooth_half_plane"] = half_plane(model, params, args, rng)
    figure(os.path.join(args.out, "posterior.png"), dn, inp, hp)
    metrics["seconds"] = time.perf_counter() - t0
    save_json(os.path.join(args.out, "posterior_metrics.json"), metrics)
    stage(f"wrote posterior.png, posterior_metrics.json to {args.out}/")
    for a, row in metrics["inpainting"].items():
        print(f"  {a}: " + "  ".join(f"{m}: on-roll {r['inpaint_on_roll_fraction']:.3f} "
                                     f"TV {r['inpaint_crossing_tv']:.3f}" for m, r in row.items()))
    d = metrics["denoising"]
    print(f"  denoising RMS error: observation {d['observation_rms_error']:.3f}, " + ", ".join(
        f"{k[25:]} {v:.3f}" for k, v in d.items() if k.startswith("posterior_mean_rms_error_")))


if __name__ == "__main__":
    main()
