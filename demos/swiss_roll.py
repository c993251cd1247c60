"""Train the paper's swiss-roll model (§3.1.1), report the bound beside Table 1, draw Figure 1.

    python demos/swiss_roll.py                     # defaults: a good model in a few minutes
    python demos/swiss_roll.py --net rbf --param paper --steps 20000   # the paper's own network
    python demos/swiss_roll.py --resume            # continue the run in --out

Writes to ``--out`` (default ``runs/swiss_roll/``): figure1.png, training.png,
bound_by_t.png, samples.npy, metrics.json, checkpoint.npz (+ checkpoint.json).
"""
import argparse
import io
import math
import os
import sys
import time
from dataclasses import asdict

import numpy

from numpy_diffusion import plots
from numpy_diffusion.backend import BackendError, get_backend, to_host
from numpy_diffusion.checkpoint import CheckpointError, atomic_write, save_json
from numpy_diffusion.datasets import swiss_roll
from numpy_diffusion.forward_process import q_sample
from numpy_diffusion.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.network import NetConfig
from numpy_diffusion.schedule import ScheduleConfig
from numpy_diffusion.training import TrainConfig, Trainer, TrainingDiverged

PAPER = {"K_bits": 2.35, "K_minus_L_null_bits": 6.45}      # Table 1, swiss roll row
HELD_OUT_SEED_OFFSET = 1_000_003                            # held-out data: another seed


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags and options whose default is "not given"."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--steps", type=int, default=16000, help="Adam steps")
    p.add_argument("--batch-size", type=int, default=512, help="examples per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--seed", type=int, default=0, help="the one seed of the run")
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
    p.add_argument("--basis", choices=("bump", "identity"), default="bump",
                   help="temporal readout basis: Gaussian bumps (eq. 63) or one readout per step")
    p.add_argument("--n-bumps", type=int, default=10, help="number of temporal bumps")
    p.add_argument("--fourier", type=int, default=128,
                   help="random Fourier features of x_t fed to the MLP (0: none)")
    p.add_argument("--fourier-scale", type=float, default=10.0, help="std of the Fourier frequencies")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="network and optimizer precision (the bound is always float64)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: $NUMPY_DIFFUSION_BACKEND or numpy)")
    p.add_argument("--out", default=os.path.join("runs", "swiss_roll"), help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.npz, up to --steps")
    p.add_argument("--eval-every", type=int, default=1000,
                   help="held-out evaluation (and checkpoint) interval, in steps")
    p.add_argument("--eval-size", type=int, default=20000, help="held-out points, final evaluation")
    p.add_argument("--n-samples", type=int, default=5000, help="reverse samples to save")
    return p.parse_args(argv)


def model_config(args):
    """The default model: see the README's study for what each choice is worth."""
    if args.net == "rbf":                                   # the paper's network, App. D.1.1
        net = NetConfig(D=2, T=40, net="rbf", hidden=(16,), basis=args.basis, n_bumps=args.n_bumps)
    else:
        net = NetConfig(D=2, T=40, net="mlp", hidden=(128, 128), activation="tanh", basis=args.basis,
                        n_bumps=args.n_bumps, fourier=args.fourier, fourier_scale=args.fourier_scale)
    sched = ScheduleConfig(T=40, beta_1=args.beta_1, baseline="logsnr", log_snr_T=-4.0,
                           learn=args.learn_beta, learned_form="decrements")
    return ModelConfig(net=net, schedule=sched, param=args.param)


class Progress:
    """Prints one progress line every few seconds and evaluates on held-out data at intervals."""

    def __init__(self, model, x_val, args, history, start_step):
        self.model, self.x_val, self.args, self.history = model, x_val, args, history
        self.start_step, self.t0, self.last_print = start_step, time.perf_counter(), 0.0

    def __call__(self, trainer):
        step, now = trainer.step, time.perf_counter()
        if step % self.args.eval_every == 0 or step == trainer.cfg.steps:
            res = self.model.evaluate(trainer.eval_params, self.x_val, numpy.random.default_rng(step))
            self.history.append([step, res["K_bits"], res["K_bits_stderr"]])
            trainer.save(os.path.join(self.args.out, "checkpoint.npz"), extra={"eval_history": self.history})
            print(f"  step {step:>6}: held-out K = {res['K_bits']:+.3f} ± {res['K_bits_stderr']:.3f} bits"
                  f" ({len(self.x_val)} points); checkpoint saved", flush=True)
        if now - self.last_print > 5 or step == trainer.cfg.steps:
            self.last_print = now
            recent = [l for _, l in trainer.losses[-100:]]
            elapsed = now - self.t0
            rate = (step - self.start_step) / max(elapsed, 1e-9)
            eta = (trainer.cfg.steps - step) / max(rate, 1e-9)
            print(f"step {step:>6}/{trainer.cfg.steps}  minibatch K ≈ {-numpy.mean(recent) / math.log(2):+.2f}"
                  f" bits  lr {trainer.cfg.lr_at(step - 1):.2e}  {rate:.0f} steps/s  eta {eta:.0f} s",
                  flush=True)


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


def report(res, seconds, steps):
    """Print the bound beside the paper's Table 1."""
    print()
    print("                      this run (held-out)           paper, Table 1")
    print(f"  K          (bits)   {res['K_bits']:+7.3f} ± {res['K_bits_stderr']:.3f}"
          f"              {PAPER['K_bits']:+7.2f}")
    print(f"  K - L_null (bits)   {res['K_minus_L_null_bits']:+7.3f} ± {res['K_minus_L_null_bits_stderr']:.3f}"
          f"              {PAPER['K_minus_L_null_bits']:+7.2f}")
    print(f"  L_null     (bits)   {res['L_null_bits']:+7.3f}                     "
          f"{PAPER['K_bits'] - PAPER['K_minus_L_null_bits']:+7.2f}")
    print(f"  ({steps} steps in {seconds:.0f} s)")


def save_array(path, a):
    buf = io.BytesIO()
    numpy.save(buf, a)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def main(argv=None):
    args = parse_args(argv)
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        sys.exit(f"error: {err}")
    ck_path = os.path.join(args.out, "checkpoint.npz")
    data_fn = lambda n, rng: swiss_roll(n, rng)
    history = []
    try:
        if args.resume:
            trainer, config = Trainer.resume(ck_path, lambda d: GaussianDiffusion(ModelConfig.from_dict(d)),
                                             data_fn, xp, steps=args.steps)
            history = config.get("eval_history", [])
            print(f"resumed {ck_path} at step {trainer.step}")
        else:
            cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              dtype=args.dtype)
            trainer = Trainer(GaussianDiffusion(model_config(args)), data_fn, cfg, xp)
    except (CheckpointError, ValueError) as err:
        sys.exit(f"error: {err}")
    model, seed = trainer.model, trainer.cfg.seed
    x_val = swiss_roll(args.eval_size, numpy.random.default_rng(seed + HELD_OUT_SEED_OFFSET))
    print(f"training {model.cfg.net.net} network, {trainer.params.flat.size} parameters, "
          f"{model.cfg.param} parameterization, {'learned' if model.cfg.schedule.learn else 'fixed'} beta, "
          f"batch {trainer.cfg.batch_size}, {trainer.cfg.steps} steps on {xp.__name__}", flush=True)
    t0 = time.perf_counter()
    progress = Progress(model, x_val[:2000], args, history, trainer.step)
    try:
        trainer.run(callback=progress, every=10)
    except TrainingDiverged as err:
        sys.exit(f"error: {err}\nthe last good checkpoint is {ck_path} (see its step in checkpoint.json)")
    seconds = time.perf_counter() - t0
    params = trainer.eval_params
    res = model.evaluate(params, x_val, numpy.random.default_rng(seed + 1))
    report(res, seconds, trainer.step)
    rng = numpy.random.default_rng(seed + 2)
    samples, traj = model.sample(params, args.n_samples, rng, trajectory=True)
    T = model.cfg.net.T
    save_array(os.path.join(args.out, "samples.npy"), to_host(samples))
    times = (0, T // 2, T)
    x0 = swiss_roll(args.n_samples, numpy.random.default_rng(seed + 3))
    tables = model.tables(params)[0]
    eps = rng.standard_normal(x0.shape)
    q = {t: x0 if t == 0 else to_host(q_sample(xp.asarray(x0), xp.full(len(x0), t), xp.asarray(eps), tables))
         for t in times}
    p = {t: to_host(traj[t]) for t in times}
    plots.figure1(times, q, p, drift_on_grid(model, params, times), os.path.join(args.out, "figure1.png"))
    if history:
        h = numpy.array(history)
        loss = numpy.array(trainer.losses)
        plots.training_curve(h[:, 0], h[:, 1], h[:, 2], os.path.join(args.out, "training.png"),
                             target=PAPER["K_bits"], minibatch=(loss[:, 0], -loss[:, 1] / math.log(2)))
    kl = res["kl_bits_by_t"][2:]
    plots.bound_by_t(kl, {"H_q(X_T|X_0)": res["H_q_T_bits"], "-H_q(X_1|X_0)": -res["H_q_1_bits"],
                          "-H_p(X_T)": -res["H_p_T_bits"]}, os.path.join(args.out, "bound_by_t.png"))
    metrics = {k: res[k] for k in ("K_bits", "K_bits_stderr", "K_minus_L_null_bits",
                                   "K_minus_L_null_bits_stderr", "L_null_bits")}
    metrics.update({"kl_bits_by_t": {int(t): float(v) for t, v in enumerate(res["kl_bits_by_t"]) if t >= 2},
                    "entropy_bits": {"H_q_T": res["H_q_T_bits"], "H_q_1": res["H_q_1_bits"],
                                     "H_p_T": res["H_p_T_bits"]},
                    "steps": trainer.step, "seconds": seconds, "seed": seed, "held_out_points": len(x_val),
                    "paper": PAPER, "model": model.cfg.to_dict(), "train": asdict(trainer.cfg),
                    "backend": xp.__name__})
    save_json(os.path.join(args.out, "metrics.json"), metrics)
    print(f"wrote figure1.png, training.png, bound_by_t.png, samples.npy, metrics.json, checkpoint.npz "
          f"to {args.out}/")


if __name__ == "__main__":
    main()
