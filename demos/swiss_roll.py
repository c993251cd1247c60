"""Train the paper's swiss-roll model (§3.1.1), report the bound beside Table 1, draw Figure 1.

    python demos/swiss_roll.py                     # defaults: K ≈ 5.1 bits in a few minutes
    python demos/swiss_roll.py --net rbf --param paper   # the paper's own network and kernel
    python demos/swiss_roll.py --resume                                  # continue the run in --out

Writes to ``--out`` (default ``runs/swiss_roll/``): figure1.png, training.png,
bound_by_t.png, samples.npy, metrics.json, checkpoint.npz (+ checkpoint.json).
What each option is worth is measured in the README ("What gets the swiss roll
above the paper").
"""
import argparse
import math
import os
import sys
from dataclasses import asdict

import numpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli import (HELD_OUT_SEED_OFFSET, HelpFormatter, Progress, add_common_options,  # noqa: E402
                 backend_or_exit, report, save_array, train_or_exit)

from numpy_diffusion.run import plots                                           # noqa: E402
from numpy_diffusion.backend import to_host                                 # noqa: E402
from numpy_diffusion.run.checkpoint import CheckpointError, save_json           # noqa: E402
from numpy_diffusion.datasets import swiss_roll                             # noqa: E402
from numpy_diffusion.gaussian.forward import q_sample_forward                # noqa: E402
from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig            # noqa: E402
from numpy_diffusion.nn.network import NetConfig                               # noqa: E402
from numpy_diffusion.gaussian.schedule import ScheduleConfig                         # noqa: E402
from numpy_diffusion.run.training import TrainConfig, Trainer                   # noqa: E402

PAPER = {"K_bits": 2.35, "K_minus_L_null_bits": 6.45}      # Table 1, swiss roll row


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--steps", type=int, default=16000, help="Adam steps")
    p.add_argument("--batch-size", type=int, default=512, help="examples per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--net", choices=("mlp", "rbf"), default="mlp",
                   help="mlp: the project's network; rbf: the paper's 16-unit normalized RBF")
    p.add_argument("--param", choices=("paper", "reference", "bounded"), default="bounded",
                   help="reverse-kernel parameterization (SPEC §2)")
    beta = p.add_mutually_exclusive_group()
    beta.add_argument("--learn-beta", dest="learn_beta", action="store_true", default=True,
                      help="learn beta_2..T by gradient ascent on K (§2.4.1; the default)")
    beta.add_argument("--fixed-beta", dest="learn_beta", action="store_false",
                      help="keep the log-SNR-linear schedule fixed")
    p.add_argument("--beta-1", type=float, default=1e-7, help="the fixed first diffusion rate")
    p.add_argument("--basis", choices=("bump", "identity"), default=None,
                   help="temporal readout basis: Gaussian bumps (eq. 63) or one readout per step "
                        "(default: bump for mlp, identity for rbf, as the paper's network)")
    p.add_argument("--n-bumps", type=int, default=10, help="number of temporal bumps")
    p.add_argument("--fourier", type=int, default=128,
                   help="random Fourier features of x_t fed to the MLP (0: none)")
    p.add_argument("--fourier-scale", type=float, default=10.0, help="std of the Fourier frequencies")
    add_common_options(p, out=os.path.join("runs", "swiss_roll"), eval_every=1000, eval_size=20000,
                       n_samples=5000)
    return p.parse_args(argv)


def model_config(args):
    """The default model: see the README's study for what each choice is worth."""
    if args.net == "rbf":                                   # the paper's network, App. D.1.1
        net = NetConfig(D=2, T=40, net="rbf", hidden=(16,), basis=args.basis or "identity",
                        n_bumps=args.n_bumps)
    else:
        net = NetConfig(D=2, T=40, net="mlp", hidden=(128, 128), activation="tanh",
                        basis=args.basis or "bump", n_bumps=args.n_bumps, fourier=args.fourier,
                        fourier_scale=args.fourier_scale)
    sched = ScheduleConfig(T=40, beta_1=args.beta_1, baseline="logsnr", log_snr_T=-4.0,
                           learn=args.learn_beta, learned_form="decrements")
    return ModelConfig(net=net, schedule=sched, param=args.param)


def make_trainer(args, xp, ck_path, data_fn):
    """A new trainer from the arguments, or one resumed from ``ck_path``; and the eval history."""
    if args.resume:
        trainer, config = Trainer.resume(ck_path, lambda d: GaussianDiffusion(ModelConfig.from_dict(d)),
                                         data_fn, xp, steps=args.steps)
        print(f"resumed {ck_path} at step {trainer.step}")
        return trainer, config.get("eval_history", [])
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      dtype=args.dtype, shards=args.shards)
    return Trainer(GaussianDiffusion(model_config(args)), data_fn, cfg, xp), []


def drift_on_grid(model, params, times, n=15, lim=2.0):
    """``f_mu(x_t, t) - x_t`` on an ``n x n`` grid (Figure 1, bottom row), keyed by ``times``.

    The step ``t = 0 <- 1`` is fixed (App. B.2), so the first column shows the
    first learned step, ``t = 2``.
    """
    g = numpy.linspace(-lim, lim, n)
    grid = numpy.stack(numpy.meshgrid(g, g), -1).reshape(-1, 2)
    drift = {}
    for t in times:
        mu, _ = model.p_mean_logvar(params, grid, max(t, 2))
        drift[t] = (grid, to_host(mu) - grid, max(t, 2))
    return drift


def draw_figure1(model, params, traj, n, seed, xp, path):
    """Forward samples ``q`` and reverse samples ``p`` at ``t = 0, T/2, T``, and the drift."""
    T = model.cfg.net.T
    times = (0, T // 2, T)
    rng = numpy.random.default_rng(seed + 3)
    x0 = swiss_roll(n, rng)
    eps, tables = xp.asarray(rng.standard_normal(x0.shape)), model.tables(params)
    q = {t: x0 if t == 0 else to_host(q_sample_forward(xp.asarray(x0), xp.full(n, t), eps, tables)[0]) for t in times}
    p = {t: to_host(traj[t]) for t in times}
    plots.figure1(times, q, p, drift_on_grid(model, params, times), path)


def write_outputs(args, trainer, res, seconds, history):
    """samples.npy, figure1.png, training.png, bound_by_t.png and metrics.json in ``args.out``."""
    model, params, seed, out = trainer.model, trainer.eval_params, trainer.cfg.seed, args.out
    samples, traj = model.sample(params, args.n_samples, numpy.random.default_rng(seed + 2), trajectory=True)
    save_array(os.path.join(out, "samples.npy"), to_host(samples))
    draw_figure1(model, params, traj, args.n_samples, seed, trainer.xp, os.path.join(out, "figure1.png"))
    if history:
        h, loss = numpy.array(history), numpy.array(trainer.losses)
        plots.training_curve(h[:, 0], h[:, 1], h[:, 2], os.path.join(out, "training.png"),
                             target=PAPER["K_bits"], minibatch=(loss[:, 0], -loss[:, 1] / math.log(2)))
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
                    "train": asdict(trainer.cfg), "backend": trainer.xp.__name__})
    save_json(os.path.join(out, "metrics.json"), metrics)


def main(argv=None):
    args = parse_args(argv)
    xp = backend_or_exit(args.backend)
    ck_path = os.path.join(args.out, "checkpoint.npz")
    try:
        trainer, history = make_trainer(args, xp, ck_path, lambda n, rng: swiss_roll(n, rng))
    except (CheckpointError, ValueError) as err:
        sys.exit(f"error: {err}")
    model, seed = trainer.model, trainer.cfg.seed
    x_val = swiss_roll(args.eval_size, numpy.random.default_rng(seed + HELD_OUT_SEED_OFFSET))
    print(f"training {model.cfg.net.net} network, {trainer.params.flat.size} parameters, "
          f"{model.cfg.param} parameterization, {'learned' if model.cfg.schedule.learn else 'fixed'} beta, "
          f"batch {trainer.cfg.batch_size}, {trainer.cfg.steps} steps on {xp.__name__}", flush=True)
    progress = Progress(model, x_val[:2000], args, history, trainer.step)
    seconds = train_or_exit(trainer, progress, ck_path)
    res = model.evaluate(trainer.eval_params, x_val, numpy.random.default_rng(seed + 1))
    report(res, PAPER, seconds, trainer.step)
    write_outputs(args, trainer, res, seconds, history)
    print(f"wrote figure1.png, training.png, bound_by_t.png, samples.npy, metrics.json, checkpoint.npz "
          f"to {args.out}/")


if __name__ == "__main__":
    main()
