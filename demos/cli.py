"""What the demos share: option checks, the output folder, progress lines, the Table 1 report.

The library never prints; these helpers are the demos' own.  What a demo
promises, checked here before any work starts:

- a value outside its range is refused in one line, ``error: argument --x: ...``,
  exit code 2 (argparse's code), no traceback;
- the output folder is checked writable;
- a checkpoint already in ``--out`` is continued only with ``--resume`` and
  replaced only with ``--overwrite``; ``--resume`` refuses a checkpoint of another
  model, fewer steps than it holds, and settings other than its own;
- a run that diverges stops naming the step and the last good checkpoint of
  this run, which it leaves as it was.
"""
import argparse
import io
try:
    import fcntl
except ImportError:                                         # no flock (Windows): no folder lock
    fcntl = None
import math
import os
import re
import sys
import tempfile
import time

import numpy

from numpy_diffusion.backend import BackendError, get_backend
from numpy_diffusion.run.checkpoint import (TMP_PREFIX, CheckpointError, atomic_write, load_checkpoint,
                                            model_class_of, remove_stale_temporaries)
from numpy_diffusion.run.training import TrainingDiverged

HELD_OUT_SEED_OFFSET = 1_000_003                            # held-out data: another seed
MAX_SEED = 2 ** 63 - 1
CHECKPOINT = "checkpoint.npz"
RESUME_MAY_CHANGE = {"steps", "lr", "out", "resume", "overwrite", "backend", "eval_every",
                     "eval_size", "n_samples"}              # everything else comes from the checkpoint


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with every error on one line: ``error: argument --x: ...``, exit code 2; and
    ``--lr -1e-3`` or ``--lr -inf`` read as a value (refused by its range), not as an option."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$",
                                                   re.IGNORECASE)

    def error(self, message):
        self.exit(2, f"error: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows what each option allows, and its default (except for flags and options whose
    default is "not given")."""

    def _get_help_string(self, action):
        allowed = getattr(action.type, "allowed", None)
        text = action.help + (f" [{allowed}]" if allowed else "")
        if action.nargs == 0 or action.default is None:
            return text
        return text + " (default: %(default)s)"


def integer(lo, hi):
    """An argparse type: an integer in ``lo..hi``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: allowed: {parse.allowed}")
        return value
    parse.allowed = f"an integer from {lo:,} to {hi:,}"
    return parse


def real(lo, hi, lo_open=True, hi_open=False):
    """An argparse type: a finite number in the interval from ``lo`` to ``hi``
    (``None``: unbounded), ends open or closed as flagged."""
    left = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    right = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    allowed = "a finite number " + " and ".join(s for s in (left, right) if s)

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (lo is None or (value > lo if lo_open else value >= lo)) \
            and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: allowed: {allowed}")
        return value
    parse.allowed = allowed
    return parse


class _NotGiven:
    """Marks an option left out of the command line."""


def given_options(parser, argv):
    """The ``dest`` of every option the command line gives (its value may equal the default)."""
    marker = _NotGiven()
    ns = argparse.Namespace(**{a.dest: marker for a in parser._actions if a.dest != argparse.SUPPRESS})
    parser.parse_args(argv, namespace=ns)
    return {k for k, v in vars(ns).items() if v is not marker}


def refuse(parser, option, why):
    """Exit as argparse does for a bad value: one line naming ``option``, exit code 2."""
    parser.error(f"argument {option}: {why}")


def add_common_options(p, out, eval_every, eval_size, n_samples, max_samples=1_000_000):
    """The options every training demo has, with this demo's defaults."""
    p.add_argument("--seed", type=integer(0, MAX_SEED), default=0, help="the one seed of the run")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="network and optimizer precision (the bound's tables are always float64)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: $NUMPY_DIFFUSION_BACKEND or numpy)")
    p.add_argument("--shards", type=integer(0, 256), default=0,
                   help="threads a training step splits its batch over (at most the batch size); 0: one "
                        "per core, each shard at least 1,024 examples (the count is saved with the run: a "
                        "seed and a shard count reproduce it exactly)")
    p.add_argument("--out", default=out, help="output folder")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help=f"continue the run in OUT/{CHECKPOINT}, up to --steps (default: its own)")
    again.add_argument("--overwrite", action="store_true",
                       help=f"start over, replacing the run in OUT (its {CHECKPOINT} and outputs)")
    p.add_argument("--eval-every", type=integer(1, 10_000_000), default=eval_every,
                   help="held-out evaluation (and checkpoint) interval, in steps")
    p.add_argument("--eval-size", type=integer(2, 10_000_000), default=eval_size,
                   help="held-out examples, final evaluation (two at least: a standard error needs two)")
    p.add_argument("--n-samples", type=integer(1, max_samples), default=n_samples,
                   help="reverse samples to save")


def check_backend(parser, args, given):
    """The array module for ``--backend`` (or ``$NUMPY_DIFFUSION_BACKEND``), or refuse it."""
    try:
        return get_backend(args.backend)
    except BackendError as err:
        if "backend" in given:
            refuse(parser, "--backend", str(err))
        parser.error(str(err))


def check_shards(parser, args, given):
    """``--shards`` may not exceed the batch size."""
    if "shards" in given and args.shards > args.batch_size:
        refuse(parser, "--shards", f"invalid value {args.shards}: allowed: 0 (automatic) to the batch size, "
                                   f"{args.batch_size}")


def refuse_unused(parser, given, option, dest, when, reason):
    """Refuse ``option`` given where ``when`` makes it unused (no silent no-ops)."""
    if dest in given and when:
        refuse(parser, option, f"not used {reason}")


def check_out_folder(parser, out, outputs, option="--out"):
    """Refuse an output folder that cannot be one, changing nothing: a file, a path under a
    file, or a folder where one of the ``outputs`` (file names) is something other than a file."""
    if not out.strip():
        refuse(parser, option, f"invalid value {out!r}: allowed: a folder name")
    if os.path.lexists(out) and not os.path.isdir(out):
        refuse(parser, option, f"{out!r} is {'a file' if os.path.isfile(out) else 'something'}, not a folder")
    up = os.path.abspath(out)
    while not os.path.lexists(up):
        up = os.path.dirname(up)
    if not os.path.isdir(up):
        refuse(parser, option, f"{out!r} lies under {up!r}, which is a file, not a folder")
    for name in outputs:
        path = os.path.join(out, name)
        if os.path.lexists(path) and not os.path.isfile(path):
            refuse(parser, option, f"{path!r} is not a file; this run writes a file of that name")


def make_out_folder(parser, out, option="--out"):
    """Create the output folder if missing and prove it writable, or refuse it; then remove
    the temporary files that killed writers left there."""
    try:
        os.makedirs(out, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix="-write-test")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        refuse(parser, option, f"cannot write to {out!r} ({err.strerror or err})")
    stale = remove_stale_temporaries(out)
    if stale:
        print(f"removed {len(stale)} temporary file(s) that interrupted writes left in {out}", flush=True)


_HELD = {}                                                  # folder -> descriptor holding its lock


def hold_folder(parser, out, option="--out"):
    """Lock folder ``out`` for this process until :func:`guarded`'s ``main`` returns, or refuse
    it if another run holds it: two runs never write one checkpoint.  A missing folder waits."""
    key = os.path.realpath(out)
    if key in _HELD or not os.path.isdir(out) or fcntl is None:
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        refuse(parser, option, f"another run is writing to {out!r} now; let it end, or choose another folder")
    _HELD[key] = fd


def read_checkpoint(parser, path, model_class, option):
    """``(arrays, config)`` of checkpoint ``path``, holding a ``model_class`` model; else refuse."""
    try:
        arrays, config = load_checkpoint(path)
    except CheckpointError as err:
        refuse(parser, option, str(err))
    found = model_class_of(config)
    if found != model_class:
        refuse(parser, option, f"{path!r} holds a {found} model; this demo needs a {model_class} model")
    return arrays, config


def check_resume(parser, args, given, config, saved):
    """Refuse ``--resume`` settings that contradict checkpoint ``config``: fewer steps than
    it holds, or an option whose value differs from ``saved`` (dest -> the checkpoint's value)."""
    step = int(config["step"])
    if args.steps is not None and args.steps < step:
        refuse(parser, "--steps", f"invalid value {args.steps}: the checkpoint is at step {step:,} and "
                                  f"--steps counts the whole run: allowed: {step:,} or more")
    for dest in sorted(given - RESUME_MAY_CHANGE):
        value, option = getattr(args, dest), "--" + dest.replace("_", "-")
        if dest == "shards" and value == 0:                 # automatic: whatever the run has
            continue
        if dest not in saved or value != saved[dest]:
            had = f"the checkpoint's {saved[dest]}" if dest in saved else "what the checkpoint holds"
            refuse(parser, option, f"{value} differs from {had}; a resumed run keeps its settings "
                                   "(leave the option out, or start over with --overwrite)")


def prepare_run(parser, args, given, outputs, model_class, saved_settings):
    """Check ``--out``, ``--resume`` and ``--overwrite``; only then create the folder.

    Returns the checkpoint's ``config`` to resume from, or ``None`` for a new run
    (after removing the previous run's files when ``--overwrite`` asks for it).
    ``saved_settings(config)`` gives the options a checkpoint fixes, by dest.
    """
    ck, files = os.path.join(args.out, CHECKPOINT), outputs + (CHECKPOINT, "checkpoint.json")
    check_out_folder(parser, args.out, files)
    hold_folder(parser, args.out)
    config = None
    if args.resume:
        if not os.path.lexists(ck):
            refuse(parser, "--resume", f"there is no checkpoint {ck!r} to resume; leave --resume out to "
                                       "start a new run")
        config = read_checkpoint(parser, ck, model_class, "--out")[1]
        try:
            saved = saved_settings(config)
        except (KeyError, TypeError) as err:
            refuse(parser, "--out", f"{ck!r} carries settings this demo cannot read (no {err})")
        check_resume(parser, args, given, config, saved)
    elif os.path.lexists(ck) and not args.overwrite:
        try:
            step = f" (step {load_checkpoint(ck)[1]['step']:,})"
        except (CheckpointError, KeyError):
            step = ""
        refuse(parser, "--out", f"{ck!r} already holds a run{step}; add --resume to continue it, or "
                                "--overwrite to start over and replace it")
    make_out_folder(parser, args.out)
    hold_folder(parser, args.out)
    if args.overwrite:
        for name in files:
            if os.path.isfile(os.path.join(args.out, name)):
                os.remove(os.path.join(args.out, name))
    return config


def start_or_resume(parser, args, given, config, new_trainer, resume_trainer):
    """The trainer of this run, with its checkpoint in ``--out`` (a new run saves step 0
    at once), and the history of held-out evaluations.  ``new_trainer()`` makes a new
    trainer, ``resume_trainer(path, **overrides)`` resumes one; a checkpoint that does not
    make a trainer whose parameters make a model is refused."""
    ck = os.path.join(args.out, CHECKPOINT)
    if config is None:
        trainer = new_trainer()
        trainer.save(ck, extra={"eval_history": []})
        return trainer, []
    overrides = {"steps": config["train"]["steps"] if args.steps is None else args.steps}
    if "lr" in given:
        overrides["lr"] = args.lr
    try:
        trainer = resume_trainer(ck, **overrides)
        trainer.check_params()
    except (CheckpointError, TrainingDiverged, KeyError, TypeError, ValueError) as err:
        refuse(parser, "--out", f"{ck!r} cannot be resumed: {err}")
    print(f"resumed {ck} at step {trainer.step:,} of {trainer.cfg.steps:,}"
          + (f", learning rate {trainer.cfg.lr:g} (it had {config['train']['lr']:g})"
             if trainer.cfg.lr != config["train"]["lr"] else ""), flush=True)
    return trainer, config.get("eval_history", [])


class Progress:
    """Prints one progress line every few seconds; at ``eval_every`` steps evaluates on
    held-out data, checks the run has not diverged, saves the checkpoint and records
    ``[step, K, stderr]`` in ``history``."""

    def __init__(self, model, x_val, args, history, trainer, unit="bits"):
        self.model, self.x_val, self.args, self.history, self.unit = model, x_val, args, history, unit
        self.start_step, self.t0, self.last_print = trainer.step, time.perf_counter(), 0.0
        self.saved_step = trainer.step                      # the checkpoint in --out holds this step

    def __call__(self, trainer):
        step, now = trainer.step, time.perf_counter()
        if step % self.args.eval_every == 0 or step == trainer.cfg.steps:
            trainer.check_params()
            res = self.model.evaluate(trainer.eval_params, self.x_val, numpy.random.default_rng(step))
            trainer.check_loss(-res["K_bits"] * math.log(2))
            self.history.append([step, res["K_bits"], res["K_bits_stderr"]])
            trainer.save(os.path.join(self.args.out, CHECKPOINT), extra={"eval_history": self.history})
            self.saved_step = step
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


def train_or_exit(trainer, progress):
    """Run the trainer to its last step, calling ``progress`` after every step.  On divergence,
    a failed write or Ctrl-C, exit with one message naming the step and the last good checkpoint."""
    def kept():
        ck = os.path.join(progress.args.out, CHECKPOINT)
        return f"the last good checkpoint, {ck} (step {progress.saved_step:,}), is kept as it was"
    if trainer.step == trainer.cfg.steps:
        print(f"the checkpoint is at its last step ({trainer.step:,}); nothing to train", flush=True)
    try:
        trainer.run(callback=progress, every=1)
    except TrainingDiverged as err:
        fail(f"error: {err}\n{kept()}; continue from it with --resume and a lower --lr")
    except OSError as err:
        fail(f"error: could not write the checkpoint at step {trainer.step:,} ({err}); {kept()}")
    except KeyboardInterrupt:
        fail(f"interrupted at step {trainer.step:,}; {kept()}; continue with --resume", code=130)


def fail(message, code=1):
    """Print ``message`` to stderr and exit with ``code``."""
    print(message, file=sys.stderr, flush=True)
    sys.exit(code)


def guarded(main):
    """``main`` with Ctrl-C, an exhausted memory or a failed write as one line each instead of a
    traceback; the folders it locked (:func:`hold_folder`) are released when it ends."""
    def run(argv=None):
        held = set(_HELD)
        try:
            return main(argv)
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except MemoryError:
            fail("error: out of memory; choose smaller sizes (--help lists them)")
        except OSError as err:                              # a full disk, a folder removed meanwhile
            fail(f"error: {err}")
        finally:
            for key in set(_HELD) - held:                   # the folders this call locked
                os.close(_HELD.pop(key))
    run.__doc__ = main.__doc__
    return run


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
    print(f"  ({steps} steps in {seconds:.0f} s of training, resumes included)")


def save_array(path, a):
    """``numpy.save`` to ``path``, atomically."""
    buf = io.BytesIO()
    numpy.save(buf, a)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
