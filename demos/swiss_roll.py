"""Train the paper's swiss-roll model (§3.1.1), report the bound beside Table 1, draw Figure 1.

    python demos/swiss_roll.py                     # defaults: K ≈ 5.1 bits in a few minutes
    python demos/swiss_roll.py --net rbf --param paper   # the paper's own network and kernel
    python demos/swiss_roll.py --resume                                  # continue the run in --out

Writes to ``--out`` (default ``runs/swiss_roll/``): figure1.png, training.png,
bound_by_t.png, samples.npy, metrics.json, checkpoint.npz (+ checkpoint.json).
What each option is worth is measured in the README ("What gets the swiss roll
above the paper").
"""
import math
import os
from dataclasses import asdict

import numpy

from numpy_diffusion.backend import to_host
from numpy_diffusion.bits import standard_error
from numpy_diffusion.datasets import on_roll_fraction, swiss_roll
from numpy_diffusion.gaussian.likelihood import grouped_estimate, trajectory_log_weights
from numpy_diffusion.gaussian.model import GaussianDiffusion, swiss_roll_model
from numpy_diffusion.run import plots
from numpy_diffusion.run.figure1 import draw_figure1
from numpy_diffusion.run.checkpoint import save_json
from numpy_diffusion.run.cli import (ArgumentParser, HelpFormatter, add_common_options, check_backend,
                                     check_shards, given_options, integer, real, refuse_unused)
from numpy_diffusion.run.folder import (HELD_OUT_SEED_OFFSET, Progress, guarded, prepare_run, report,
                                        save_array, start_or_resume, train_or_exit)
from numpy_diffusion.run.loop import TrainConfig
from numpy_diffusion.run.training import Trainer

PAPER = {"K_bits": 2.35, "K_minus_L_null_bits": 6.45}      # Table 1, swiss roll row
DEFAULT = swiss_roll_model().cfg                            # T = 40 (App. D.1.1), the schedule's ends
T, LOG_SNR_T = DEFAULT.net.T, DEFAULT.schedule.log_snr_T
STEPS = 16000
OUTPUTS = ("figure1.png", "training.png", "bound_by_t.png", "samples.npy", "metrics.json")


def make_parser():
    """The options, each checked against its range by argparse."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--steps", type=integer(1, 10_000_000), default=None,
                   help=f"Adam steps of the whole run (default: {STEPS:,}; with --resume: the checkpoint's)")
    p.add_argument("--batch-size", type=integer(1, 65_536), default=512, help="examples per step")
    p.add_argument("--lr", type=real(0, None), default=1e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--net", choices=("mlp", "rbf"), default="mlp",
                   help="mlp: the project's network; rbf: the paper's 16-unit normalized RBF")
    p.add_argument("--param", choices=("paper", "reference", "bounded"), default="bounded",
                   help="reverse-kernel parameterization (see the README)")
    beta = p.add_mutually_exclusive_group()
    beta.add_argument("--learn-beta", dest="learn_beta", action="store_true", default=True,
                      help="learn beta_2..T by gradient ascent on K (§2.4.1; the default)")
    beta.add_argument("--fixed-beta", dest="learn_beta", action="store_false",
                      help="keep the log-SNR-linear schedule fixed")
    # below about float32's eps^2 a float32 network cannot resolve the first step's noise, sqrt(beta_1),
    # on unit-scale data (the bound degrades to nonsense near 1e-30); log SNR at t = 1 must lie above LOG_SNR_T
    beta_1_max = 1 / (1 + math.exp(LOG_SNR_T))
    p.add_argument("--beta-1", type=real(1e-14, round(beta_1_max, 3), lo_open=False, hi_open=True),
                   default=1e-7, help="the fixed first diffusion rate")
    p.add_argument("--basis", choices=("bump", "identity"), default=None,
                   help="temporal readout basis: Gaussian bumps (eq. 63) or one readout per step "
                        "(default: bump for mlp, identity for rbf, as the paper's network)")
    p.add_argument("--n-bumps", type=integer(1, T), default=10, help="number of temporal bumps")
    p.add_argument("--fourier", type=integer(0, 1024), default=128,
                   help="random Fourier features of x_t fed to the MLP (0: none)")
    p.add_argument("--fourier-scale", type=real(0, 1e4), default=10.0,
                   help="std of the Fourier frequencies")
    add_common_options(p, out=os.path.join("runs", "swiss_roll"), eval_every=1000, eval_size=20000,
                       n_samples=5000)
    return p


def parse_args(argv=None):
    """The options' values (see :func:`check_args`)."""
    return check_args(make_parser(), argv)[0]


def check_args(p, argv=None):
    """``(args, given)``: the options' values, and the dests the command line gives; refuses
    combinations where an option given would go unused, as argparse refuses a bad value."""
    args, given = p.parse_args(argv), given_options(p, argv)
    basis = args.basis or ("identity" if args.net == "rbf" else "bump")
    refuse_unused(p, given, "--n-bumps", "n_bumps", basis == "identity", "with the identity basis")
    refuse_unused(p, given, "--fourier", "fourier", args.net == "rbf", "by --net rbf")
    refuse_unused(p, given, "--fourier-scale", "fourier_scale", args.net == "rbf" or args.fourier == 0,
                  "without Fourier features (--net mlp and --fourier > 0)")
    check_shards(p, args, given)
    return args, given


def saved_settings(config):
    """The options a checkpoint fixes, by dest, as this demo would have been given them."""
    net, sched, train = config["model"]["net"], config["model"]["schedule"], config["train"]
    return {"batch_size": train["batch_size"], "seed": train["seed"], "dtype": train["dtype"],
            "shards": train["shards"], "net": net["net"], "param": config["model"]["param"],
            "learn_beta": sched["learn"], "beta_1": sched["beta_1"], "basis": net["basis"],
            "n_bumps": net["n_bumps"], "fourier": net["fourier"], "fourier_scale": net["fourier_scale"]}


def demo_model(args):
    """The default model (:func:`swiss_roll_model`) with the choices the options make."""
    return swiss_roll_model(net=args.net, param=args.param, learn_beta=args.learn_beta, beta_1=args.beta_1,
                            basis=args.basis, n_bumps=args.n_bumps, fourier=args.fourier,
                            fourier_scale=args.fourier_scale)


def make_trainer(parser, args, given, config, xp, data_fn):
    """A new trainer from the arguments, or one resumed from ``config``'s checkpoint; and the eval history."""
    def new():
        cfg = TrainConfig(steps=args.steps or STEPS, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          dtype=args.dtype, shards=args.shards)
        return Trainer(demo_model(args), data_fn, cfg, xp)

    def resume(path, **overrides):
        return Trainer.resume(path, GaussianDiffusion.from_config, data_fn, xp, model_class=GaussianDiffusion,
                              **overrides)[0]
    return start_or_resume(parser, args, given, config, new, resume)


def likelihood_and_samples(model, params, samples, eval_size, seed, n_points=500, k=100):
    """How loose the bound is, and how good the samples are; prints two lines, returns them for metrics.json.

    The importance-weighted log likelihood ``L_k`` (:mod:`numpy_diffusion.gaussian.likelihood`) for
    ``k = 1, 10, 100``, each averaged over the groups of ``k`` in ``k`` trajectories per point
    (``L_1`` estimates the bound itself, ``K_exact``, to compare with ``K``), on the first
    ``eval_size / 40`` held-out points, at most ``n_points`` (a trajectory costs ``T`` network
    calls per point, the bound ``T - 1``: this is about 2.5 times the bound's evaluation); and the
    fraction of samples within 0.05 of the noiseless roll.
    """
    n = max(2, min(n_points, eval_size // 40))                  # a standard error needs two
    x = swiss_roll(eval_size, numpy.random.default_rng(seed + HELD_OUT_SEED_OFFSET))[:n]   # main's held-out set
    log_w = trajectory_log_weights(model, params, x, numpy.random.default_rng(seed + 4), k)
    iw = {j: grouped_estimate(log_w, j) / math.log(2) for j in (1, 10, 100) if j <= k}    # bits per point
    print(f"  log p, importance-weighted ({n} held-out points, {k} trajectories each; k = 1 is the bound): " +
          ", ".join(f"k = {j}: {v.mean():+.3f} ± {standard_error(v):.3f}" for j, v in iw.items()) + " bits")
    on_roll = on_roll_fraction(samples)
    print(f"  samples within 0.05 of the roll: {100 * on_roll:.1f} % of {len(samples)}")
    return {"iw_log_likelihood_bits": {j: float(v.mean()) for j, v in iw.items()},
            "iw_log_likelihood_bits_stderr": {j: standard_error(v) for j, v in iw.items()},
            "iw_points": n, "on_roll_fraction": on_roll}


def write_outputs(args, trainer, res, seconds, history):
    """samples.npy, figure1.png, training.png, bound_by_t.png and metrics.json in ``args.out``."""
    model, params, seed, out = trainer.model, trainer.eval_params, trainer.cfg.seed, args.out
    samples, traj = model.sample(params, args.n_samples, numpy.random.default_rng(seed + 2), trajectory=True)
    save_array(os.path.join(out, "samples.npy"), to_host(samples))
    t_mid = draw_figure1(model, params, traj, args.n_samples, seed, trainer.xp, os.path.join(out, "figure1.png"))
    if history:                                     # the run's last point is the final evaluation it reports
        h, loss = numpy.array(history), numpy.array(trainer.losses)
        h = h[h[:, 0] < trainer.step].reshape(-1, 3)
        plots.training_curve(h[:, 0], h[:, 1], h[:, 2], os.path.join(out, "training.png"),
                             target=PAPER["K_bits"], minibatch=(loss[:, 0], -loss[:, 1] / math.log(2)),
                             final=(trainer.step, res["K_bits"], res["K_bits_stderr"], args.eval_size))
    entropy = {"H_q_T": res["H_q_T_bits"], "H_q_1": res["H_q_1_bits"], "H_p_T": res["H_p_T_bits"]}
    plots.bound_by_t(res["kl_bits_by_t"][2:], {"H_q(X_T|X_0)": entropy["H_q_T"],
                                               "-H_q(X_1|X_0)": -entropy["H_q_1"],
                                               "-H_p(X_T)": -entropy["H_p_T"]},
                     os.path.join(out, "bound_by_t.png"))
    metrics = {k: res[k] for k in ("K_bits", "K_bits_stderr", "K_minus_L_null_bits",
                                   "K_minus_L_null_bits_stderr", "L_null_bits")}
    metrics.update({"kl_bits_by_t": {t: float(v) for t, v in enumerate(res["kl_bits_by_t"]) if t >= 2},
                    "entropy_bits": entropy, "steps": trainer.step, "seconds": seconds, "seed": seed,
                    "held_out_points": args.eval_size, "paper": PAPER, "model": model.cfg.to_dict(),
                    "train": asdict(trainer.cfg), "backend": trainer.xp.__name__, "figure1_middle_t": t_mid})
    metrics.update(likelihood_and_samples(model, params, to_host(samples), args.eval_size, seed))
    save_json(os.path.join(out, "metrics.json"), metrics)


@guarded
def main(argv=None):
    parser = make_parser()
    args, given = check_args(parser, argv)
    xp = check_backend(parser, args, given)
    config = prepare_run(parser, args, given, OUTPUTS, "GaussianDiffusion", saved_settings)
    trainer, history = make_trainer(parser, args, given, config, xp, lambda n, rng: swiss_roll(n, rng))
    model, seed = trainer.model, trainer.cfg.seed
    x_val = swiss_roll(args.eval_size, numpy.random.default_rng(seed + HELD_OUT_SEED_OFFSET))
    print(f"training {model.cfg.net.net} network, {trainer.params.flat.size} parameters, "
          f"{model.cfg.param} parameterization, {'learned' if model.cfg.schedule.learn else 'fixed'} beta, "
          f"batch {trainer.cfg.batch_size}, {trainer.cfg.steps} steps on {xp.__name__}", flush=True)
    train_or_exit(trainer, Progress(model, x_val[:2000], args, history, trainer))
    res = model.evaluate(trainer.eval_params, x_val, numpy.random.default_rng(seed + 1))
    report(res, PAPER, trainer.seconds, trainer.step)
    write_outputs(args, trainer, res, trainer.seconds, history)
    print(f"wrote {', '.join(OUTPUTS)}, checkpoint.npz to {args.out}/")


if __name__ == "__main__":
    main()
