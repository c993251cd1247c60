"""What the demos share: argparse conventions, progress lines, the Table 1 report, saving.

The library never prints; these helpers are the demos' own.
"""
import argparse
import io
import math
import os
import sys
import time

import numpy

from numpy_diffusion.backend import BackendError, get_backend
from numpy_diffusion.run.checkpoint import atomic_write
from numpy_diffusion.run.training import TrainingDiverged

HELD_OUT_SEED_OFFSET = 1_000_003                            # held-out data: another seed


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags and options whose default is "not given"."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_common_options(p, out, eval_every, eval_size, n_samples):
    """The options every training demo has, with this demo's defaults."""
    p.add_argument("--seed", type=int, default=0, help="the one seed of the run")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="network and optimizer precision (the bound's tables are always float64)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: $NUMPY_DIFFUSION_BACKEND or numpy)")
    p.add_argument("--shards", type=int, default=0,
                   help="threads a training step splits its batch over; 0: one per core, each shard "
                        "at least 1,024 examples (the count is saved with the run: a seed and a shard "
                        "count reproduce it exactly)")
    p.add_argument("--out", default=out, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz, up to --steps")
    p.add_argument("--eval-every", type=int, default=eval_every,
                   help="held-out evaluation (and checkpoint) interval, in steps")
    p.add_argument("--eval-size", type=int, default=eval_size, help="held-out examples, final evaluation")
    p.add_argument("--n-samples", type=int, default=n_samples, help="reverse samples to save")


def backend_or_exit(name):
    """The array module for ``--backend``, or exit with the backend's own clear message."""
    try:
        return get_backend(name)
    except BackendError as err:
        sys.exit(f"error: {err}")


class Progress:
    """Prints one progress line every few seconds; at ``eval_every`` steps evaluates on
    held-out data, saves the checkpoint and records ``[step, K, stderr]`` in ``history``."""

    def __init__(self, model, x_val, args, history, start_step, unit="bits"):
        self.model, self.x_val, self.args, self.history, self.unit = model, x_val, args, history, unit
        self.start_step, self.t0, self.last_print = start_step, time.perf_counter(), 0.0

    def __call__(self, trainer):
        step, now = trainer.step, time.perf_counter()
        if step % self.args.eval_every == 0 or step == trainer.cfg.steps:
            res = self.model.evaluate(trainer.eval_params, self.x_val, numpy.random.default_rng(step))
            self.history.append([step, res["K_bits"], res["K_bits_stderr"]])
            trainer.save(os.path.join(self.args.out, "checkpoint.npz"), extra={"eval_history": self.history})
            print(f"  step {step:>6}: held-out K = {res['K_bits']:+.3f} ± {res['K_bits_stderr']:.3f} "
                  f"{self.unit} ({len(self.x_val)} examples); checkpoint saved", flush=True)
        if now - self.last_print > 5 or step == trainer.cfg.steps:
            self.last_print = now
            recent = [l for _, l in trainer.losses[-100:]]
            rate = (step - self.start_step) / max(now - self.t0, 1e-9)
            eta = (trainer.cfg.steps - step) / max(rate, 1e-9)
            print(f"step {step:>6}/{trainer.cfg.steps}  minibatch K ≈ {-numpy.mean(recent) / math.log(2):+.2f}"
                  f" {self.unit}  lr {trainer.cfg.lr_at(step - 1):.2e}  {rate:.0f} steps/s  eta {eta:.0f} s",
                  flush=True)


def train_or_exit(trainer, progress, ck_path):
    """Run the trainer to its last step; on divergence, exit naming the step and the kept checkpoint.
    Returns the seconds spent."""
    t0 = time.perf_counter()
    try:
        trainer.run(callback=progress, every=10)
    except TrainingDiverged as err:
        sys.exit(f"error: {err}\nthe last good checkpoint is {ck_path} (its step is in checkpoint.json)")
    return time.perf_counter() - t0


def report(res, paper, seconds, steps, unit="bits"):
    """Print the held-out bound beside the paper's Table 1 row."""
    print()
    print("                      this run (held-out)           paper, Table 1")
    print(f"  K          ({unit})   {res['K_bits']:+7.3f} ± {res['K_bits_stderr']:.3f}"
          f"              {paper['K_bits']:+7.3f}")
    print(f"  K - L_null ({unit})   {res['K_minus_L_null_bits']:+7.3f} ± "
          f"{res['K_minus_L_null_bits_stderr']:.3f}              {paper['K_minus_L_null_bits']:+7.3f}")
    print(f"  L_null     ({unit})   {res['L_null_bits']:+7.3f}                     "
          f"{paper['K_bits'] - paper['K_minus_L_null_bits']:+7.3f}")
    print(f"  ({steps} steps in {seconds:.0f} s)")


def save_array(path, a):
    """``numpy.save`` to ``path``, atomically."""
    buf = io.BytesIO()
    numpy.save(buf, a)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
