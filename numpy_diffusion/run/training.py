"""The trainer: the loop of :func:`.loop.train_plain`, made fit for long runs.

It takes the same model (the interface in :mod:`loop`), the same
:class:`~.loop.TrainConfig` and the same random stream: with one shard and no EMA
it gives the plain loop's parameters bit for bit (tested).  What it adds:

- checkpoints and exact resume: the generator's state is saved with the
  parameters and Adam's moments, so a resumed run continues exactly as if
  uninterrupted;
- divergence checks: a run that diverges stops with
  :class:`~.divergence.TrainingDiverged`, naming the step, before the step's
  update is applied and before anything diverged is saved (:mod:`divergence`
  says when a run has diverged);
- speed, outside the models' formulas (:mod:`speed`): on the CPU a step may run
  its batch as several shards in threads (the shard count is part of the config,
  so it too is fixed for a run), and the process keeps freed memory for the next
  step instead of returning it to the operating system;
- an exponential moving average of the parameters, for evaluation.

The library never prints: pass ``callback`` to see progress.
"""
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace

import numpy

from .checkpoint import CheckpointError, check_model_class, load_checkpoint, save_checkpoint
from .divergence import (EXPLOSION_STEPS, TrainingDiverged, check_held_out, check_minibatch,
                         probe_loss)
from ..nn.optim import Adam, ParamVector
from ..validation import ScheduleError
from .loop import TrainConfig
from .speed import auto_shards, blas_threads, raise_malloc_thresholds, shard_slices


class Trainer:
    """State of one training run: parameters, Adam, EMA, step, RNG.

    Parameters
    ----------
    model : object with the interface in :mod:`loop`'s docstring.
    data_fn : callable ``(n, rng) -> host ndarray (n, D)``, fresh training data.
    cfg : TrainConfig
    xp : array module (NumPy or CuPy) from :mod:`backend`.
    """

    def __init__(self, model, data_fn, cfg, xp=numpy):
        if cfg.shards == 0:
            cfg = replace(cfg, shards=auto_shards(cfg.batch_size) if xp is numpy else 1)
        self.model, self.data_fn, self.cfg, self.xp = model, data_fn, cfg, xp
        self._pool = None
        raise_malloc_thresholds()
        self.rng = numpy.random.default_rng(cfg.seed)
        dtype = numpy.dtype(cfg.dtype)
        self.params = ParamVector.from_arrays(model.init_params(self.rng, dtype), xp, dtype)
        self.grads = self.params.zeros_like()
        self.opt = Adam(self.params.flat.shape[0], cfg.lr, xp=xp, dtype=dtype)
        self.ema = self.params.copy() if cfg.ema_decay else None
        self.step = 0
        self.losses = []                                   # (step, loss) of every step
        self.seconds = 0.0                                 # time spent in run(), over every resume
        self._best = math.inf                              # best loss before the next check's window
        self._probe = None                                 # two examples of the last minibatch

    @property
    def eval_params(self):
        """The parameters to evaluate and sample with: the EMA if kept, else the live ones."""
        return (self.ema or self.params).views

    def train_step(self):
        """One Adam step on a fresh minibatch; returns the minibatch loss (nats per example).

        Raises :class:`TrainingDiverged` (:mod:`divergence`); the step's update
        is applied only when its loss and gradient are sound.
        """
        N, step = self.cfg.batch_size, self.step + 1
        x0 = self.data_fn(N, self.rng)
        batch = tuple(self.xp.asarray(a) for a in (x0, *self.model.draw(self.rng, N)))
        self._probe = tuple(a[:2].copy() for a in batch)             # for check_params
        try:
            loss = self.loss_and_grads(batch)
        except ScheduleError as err:
            raise TrainingDiverged(step, f"the learned schedule left (0, 1) ({err}); lower --lr") from err
        recent = [l for _, l in self.losses[-(EXPLOSION_STEPS - 1):]]
        check_minibatch(step, loss, bool(self.xp.isfinite(self.grads.flat).all()), recent,
                        self.losses[0][1] if self.losses else loss, self._best)
        self._update(step)
        self.step = step
        self.losses.append((step, loss))
        if len(self.losses) >= EXPLOSION_STEPS:                      # the next window starts after it
            self._best = min(self._best, self.losses[-EXPLOSION_STEPS][1])
        return loss

    def _update(self, step):
        """The Adam step (and the EMA) from the gradient in ``self.grads``."""
        lr = self.cfg.lr_at(step - 1)
        with numpy.errstate(over="ignore", invalid="ignore"):        # checked next
            self.opt.step(self.params.flat, self.grads.flat, lr)
        if not bool(self.xp.isfinite(self.params.flat).all()):
            raise TrainingDiverged(step, f"the parameters are not finite after the Adam step "
                                         f"(learning rate {lr:.3g}); lower --lr")
        if self.ema is not None:
            d = self.cfg.ema_decay
            self.ema.flat *= d
            self.ema.flat += (1 - d) * self.params.flat

    def check_loss(self, loss, what="the held-out loss"):
        """Raise :class:`TrainingDiverged` if ``loss`` (nats per example: ``-K`` on held-out
        data at the current step) is not finite or far beyond the best minibatch loss so far."""
        best = min((l for _, l in self.losses), default=math.inf)
        check_held_out(self.step, loss, self.losses[0][1] if self.losses else loss, best, what)

    def check_params(self):
        """Raise :class:`TrainingDiverged` unless the parameters (and the EMA) are finite
        and still make a model: each gives a finite loss on two examples of the last
        minibatch (before the first step: drawn from a generator of their own, so the
        run's random stream is untouched)."""
        probe = self._probe
        if probe is None:
            rng = numpy.random.default_rng([self.cfg.seed, self.step])
            probe = tuple(self.xp.asarray(a) for a in (self.data_fn(2, rng), *self.model.draw(rng, 2)))
        for name, vec in (("parameters", self.params), ("EMA of the parameters", self.ema)):
            if vec is None:
                continue
            if not bool(self.xp.isfinite(vec.flat).all()):
                raise TrainingDiverged(self.step, f"the {name} are not finite")
            with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
                probe_loss(self.step, name, lambda: self.model.loss_and_grads(vec.views, *probe)[0])

    def loss_and_grads(self, batch):
        """The loss of ``batch = (x0, *model.draw(rng, N))`` at the current parameters;
        its gradient goes into ``self.grads``.  With several shards, each runs in a
        thread of its own and the results are weighted by shard size (:mod:`speed`)."""
        slices = shard_slices(len(batch[0]), self.cfg.shards)
        parts = [tuple(a[s] for a in batch) for s in slices]
        if len(parts) == 1:
            results = [self._shard_loss(parts[0])]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(parts), thread_name_prefix="numpy_diffusion-shard")
            with blas_threads(1):
                results = list(self._pool.map(self._shard_loss, parts))
        loss = 0.0
        for k, ((shard_loss, grads), s) in enumerate(zip(results, slices)):
            w = (s.stop - s.start) / len(batch[0])                  # the loss is a mean over rows
            loss += w * shard_loss
            for name, g in grads.items():
                into = self.grads[name]
                if k == 0:
                    into[...] = g if len(parts) == 1 else w * g
                else:
                    into += w * g
        return loss

    def _shard_loss(self, part):
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):   # checked by train_step
            loss, grads = self.model.loss_and_grads(self.params.views, *part)
        return float(loss), grads

    def run(self, until=None, callback=None, every=100):
        """Train up to step ``until`` (default ``cfg.steps``), calling ``callback(self)``
        every ``every`` steps and at the end; returns seconds spent in this call
        (``seconds`` adds them up over the whole run, resumes included)."""
        until = self.cfg.steps if until is None else until
        start = last = time.perf_counter()
        while self.step < until:
            self.train_step()
            if callback is not None and (self.step % every == 0 or self.step == until):
                callback(self)
            now = time.perf_counter()
            self.seconds, last = self.seconds + (now - last), now
        return time.perf_counter() - start

    # ---- checkpoints -------------------------------------------------------------

    def state_arrays(self):
        """Everything needed to resume, as host arrays."""
        arrays = {f"param/{k}": v for k, v in self.params.to_host_dict().items()}
        if self.ema is not None:
            arrays.update({f"ema/{k}": v for k, v in self.ema.to_host_dict().items()})
        arrays.update({f"adam/{k}": v for k, v in self.opt.state_dict().items()})
        arrays["step"] = numpy.int64(self.step)
        arrays["rng_state"] = numpy.array(json.dumps(self.rng.bit_generator.state))
        arrays["losses"] = numpy.array(self.losses, dtype=numpy.float64).reshape(-1, 2)
        arrays["seconds"] = numpy.float64(self.seconds)
        return arrays

    def save(self, path, extra=None):
        """Write the checkpoint ``path`` (.npz) and its JSON config, atomically.

        Raises :class:`TrainingDiverged` instead of saving parameters that fail
        :meth:`check_params`: a checkpoint already at ``path`` is kept as it was.
        """
        self.check_params()
        config = {"step": self.step, "model": self.model.config(), "train": asdict(self.cfg),
                  "model_class": type(self.model).__name__, **(extra or {})}
        save_checkpoint(path, self.state_arrays(), config)

    def load_state(self, arrays):
        """Restore parameters, EMA, optimizer, step and RNG from checkpoint arrays."""
        for vec, prefix in ((self.params, "param/"), (self.ema, "ema/")):
            if vec is None:
                continue
            for name in vec.keys():
                key = prefix + name
                if key not in arrays or arrays[key].shape != vec[name].shape:
                    raise CheckpointError(f"checkpoint has no {key!r} of shape {vec[name].shape}; "
                                          "it was written for another model")
                vec[name][...] = self.xp.asarray(arrays[key])
        self.opt.load_state_dict({k[5:]: v for k, v in arrays.items() if k.startswith("adam/")})
        self.step = int(arrays["step"])
        self.rng.bit_generator.state = json.loads(str(arrays["rng_state"]))
        self.losses = [(int(s), float(l)) for s, l in arrays["losses"]]
        self.seconds = float(arrays.get("seconds", 0.0))   # older checkpoints did not keep it
        old = self.losses[:len(self.losses) - EXPLOSION_STEPS + 1]
        self._best = min(l for _, l in old) if old else math.inf

    @classmethod
    def resume(cls, path, model_from_config, data_fn, xp=numpy, model_class=None, **overrides):
        """A trainer restored from checkpoint ``path``.

        ``model_from_config(dict)`` rebuilds the model; ``model_class`` (a class
        or its name), when given, must be the class the checkpoint was written
        for; ``overrides`` change training settings (e.g. ``steps`` to train
        further: never below the checkpoint's step).
        """
        arrays, config = load_checkpoint(path)
        if model_class is not None:
            check_model_class(config, getattr(model_class, "__name__", model_class), path)
        cfg = TrainConfig(**{**config["train"], **overrides})
        if cfg.steps < int(arrays["step"]):
            raise ValueError(f"steps ({cfg.steps}) lies below the checkpoint's step ({int(arrays['step'])}); "
                             "steps counts the whole run, resumed or not")
        trainer = cls(model_from_config(config["model"]), data_fn, cfg, xp)
        trainer.load_state(arrays)
        return trainer, config
