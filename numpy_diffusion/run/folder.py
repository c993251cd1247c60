"""A run's output folder, for the demos' command line: checked before any work, locked while
the run works, its checkpoint continued or replaced only when asked; progress, the exit on
divergence, the Table 1 report.

Like :mod:`cli`, this module belongs to the command line the demos share: it prints and
exits on their behalf (the rest of the package never does).

What a training demo promises here, before any work starts: the folder can be
written (a file, a path under a file or a read-only folder is refused); no other
run is writing to it; a checkpoint already in it is continued only with
``--resume`` and replaced only with ``--overwrite``; ``--resume`` refuses a
checkpoint of another model, fewer steps than it holds, and settings other than
its own.  A new run saves its step-0 checkpoint at once, so a run that diverges
always stops naming a checkpoint of its own, which it leaves as it was.
"""
import contextlib
import io
import math
import os
import tempfile
import time

try:
    import fcntl
except ImportError:                                         # no flock (Windows): no folder lock
    fcntl = None

import numpy

from .checkpoint import (TMP_PREFIX, CheckpointError, atomic_write, load_checkpoint, model_class_of,
                         remove_stale_temporaries)
from .cli import CHECKPOINT, fail, refuse
from .divergence import check_held_out
from .training import TrainingDiverged

HELD_OUT_SEED_OFFSET = 1_000_003                            # held-out data: another seed
RESUME_MAY_CHANGE = {"steps", "lr", "out", "resume", "overwrite", "backend", "eval_every",
                     "eval_size", "n_samples"}              # everything else comes from the checkpoint


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
        with contextlib.suppress(FileNotFoundError):        # removed as stale by another process
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
        refuse(parser, option, f"{path!r} holds {_a(found)} model; this demo needs {_a(model_class)} model")
    return arrays, config


def _a(name):
    """``name`` with its indefinite article."""
    return ("an " if name[:1] in "AEIOU" else "a ") + name


def check_resume(parser, args, given, config, saved, may_change=()):
    """Refuse ``--resume`` settings that contradict checkpoint ``config``: fewer steps than
    it holds, or an option whose value differs from ``saved`` (dest -> the checkpoint's value),
    but those of :data:`RESUME_MAY_CHANGE` and ``may_change`` (dests)."""
    step = int(config.get("step", 0))
    if args.steps is not None and args.steps < step:
        refuse(parser, "--steps", f"invalid value {args.steps}: the checkpoint is at step {step:,} and "
                                  f"--steps counts the whole run: allowed: {step:,} or more")
    for dest in sorted(given - RESUME_MAY_CHANGE - set(may_change)):
        value, option = getattr(args, dest), "--" + dest.replace("_", "-")
        if dest == "shards" and value == 0:                 # automatic: whatever the run has
            continue
        if dest not in saved or value != saved[dest]:
            had = f"the checkpoint's {saved[dest]}" if dest in saved else "what the checkpoint holds"
            refuse(parser, option, f"{value} differs from {had}; a resumed run keeps its settings "
                                   "(leave the option out, or start over with --overwrite)")


def prepare_run(parser, args, given, outputs, model_class, saved_settings, may_change=()):
    """Check ``--out``, ``--resume`` and ``--overwrite``; only then create the folder.

    Returns the checkpoint's ``config`` to resume from, or ``None`` for a new run
    (after removing the previous run's files when ``--overwrite`` asks for it).
    ``saved_settings(config)`` gives the options a checkpoint fixes, by dest;
    ``may_change`` names more options a resumed run may change (those only evaluation uses).
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
            refuse(parser, "--out", f"{ck!r} carries settings this demo cannot read (no {err}): another version "
                                    "of the demo wrote it; start over with --overwrite, or choose another --out")
        check_resume(parser, args, given, config, saved, may_change)
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


def start_or_resume(parser, args, given, config, new_trainer, resume_trainer, extra=None):
    """The trainer of this run, with its checkpoint in ``--out`` (a new run saves step 0
    at once, with ``extra``), and the history of held-out evaluations.  ``new_trainer()``
    makes a new trainer, ``resume_trainer(path, **overrides)`` resumes one; a checkpoint that
    does not make a trainer whose parameters make a model is refused."""
    ck = os.path.join(args.out, CHECKPOINT)
    if config is None:
        trainer = new_trainer()
        trainer.save(ck, extra={"eval_history": [], **(extra or {})})
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


def held_out_bound(model, params, x_val, rng):
    """``(K, stderr)``: the bound on ``x_val`` in bits per example (``model.evaluate``)."""
    res = model.evaluate(params, x_val, rng)
    return res["K_bits"], res["K_bits_stderr"]


class Progress:
    """Prints one progress line every few seconds; at ``eval_every`` steps evaluates on
    held-out data, checks the run has not diverged, saves the checkpoint (with ``extra``)
    and records ``[step, K, stderr]`` in ``history``.

    ``evaluate(model, params, x_val, rng) -> (K, stderr)`` gives the bound in ``unit``,
    which is bits per example divided by ``per`` (e.g. ``per = D`` for bits per pixel).
    """

    def __init__(self, model, x_val, args, history, trainer, unit="bits", per=1, evaluate=held_out_bound,
                 extra=None):
        self.model, self.x_val, self.args, self.history, self.unit = model, x_val, args, history, unit
        self.per, self.evaluate, self.extra = per, evaluate, extra or {}
        self.start_step, self.t0, self.last_print = trainer.step, time.perf_counter(), 0.0
        self.saved_step = trainer.step                      # the checkpoint in --out holds this step

    def __call__(self, trainer):
        step, now = trainer.step, time.perf_counter()
        if step % self.args.eval_every == 0 or step == trainer.cfg.steps:
            trainer.check_params()
            K, se = self.evaluate(self.model, trainer.eval_params, self.x_val, numpy.random.default_rng(step))
            self.check_held_out(trainer, K)
            self.history.append([step, K, se])
            trainer.save(os.path.join(self.args.out, CHECKPOINT), extra={"eval_history": self.history, **self.extra})
            self.saved_step = step
            print(f"  step {step:>6}: held-out K = {K:+.3f} ± {se:.3f} {self.unit} ({len(self.x_val)} examples); "
                  "checkpoint saved", flush=True)
        if now - self.last_print > 5 or step == trainer.cfg.steps:
            self.last_print = now
            recent = [l for _, l in trainer.losses[-100:]]
            rate = (step - self.start_step) / max(now - self.t0, 1e-9)
            eta = (trainer.cfg.steps - step) / max(rate, 1e-9)
            shown = (f"minibatch K ≈ {-numpy.mean(recent) / (math.log(2) * self.per):+.2f} {self.unit}" if self.on_bound
                     else f"minibatch objective ≈ {numpy.mean(recent):.4g} nats")
            print(f"step {step:>6}/{trainer.cfg.steps}  {shown}  lr {trainer.cfg.lr_at(step - 1):.2e}  "
                  f"{rate:.0f} steps/s  eta {eta:.0f} s", flush=True)

    @property
    def on_bound(self):
        """Whether training minimizes ``-K`` itself (the Gaussian model's ``objective``), so that a
        minibatch loss is an estimate of the bound."""
        return getattr(getattr(self.model, "cfg", None), "objective", "bound") == "bound"

    def check_held_out(self, trainer, K):
        """Stop a diverged run (:mod:`~numpy_diffusion.run.divergence`): the held-out ``-K`` against the
        best minibatch loss when training minimizes ``-K``; against the best earlier held-out ``-K``
        when it minimizes another objective, whose minibatch losses are on another scale."""
        loss = -K * self.per * math.log(2)                            # nats per example
        if self.on_bound:
            trainer.check_loss(loss)
            return
        earlier = [-k * self.per * math.log(2) for _, k, _ in self.history]
        check_held_out(trainer.step, loss, earlier[0] if earlier else loss, min(earlier, default=math.inf))


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
