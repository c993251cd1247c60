"""Training, plainly: the settings of a run and the loop itself, in a dozen lines.

A model is any object with

- ``init_params(rng, dtype) -> dict`` of host arrays,
- ``draw(rng, N) -> tuple`` of host arrays, each with ``N`` rows: the random
  part of a minibatch other than the data (time steps, noise, weights),
- ``loss_and_grads(params, x0, *drawn) -> (loss, grads)``:
  ``loss`` is the minibatch estimate of ``-K`` in nats per example (a mean over
  the rows), ``grads`` a dict keyed like ``params``,
- ``config() -> dict`` (JSON-able) and ``from_config(dict)`` (for checkpoints).

:func:`train_plain` is the whole algorithm: draw a minibatch, take the loss and its
gradient, take one Adam step on the flat parameter vector.  One seed makes one
``numpy.random.Generator``, which draws the initial parameters, then, each step,
the data, the time steps and the noise, in that order.  The trainer of
:mod:`training` runs the same loop, with the same random stream, and adds what a
long run needs: shards in threads, divergence checks, an EMA, checkpoints and
exact resume (tested equal to this loop with one shard).
"""
import math
from dataclasses import dataclass

import numpy

from ..nn.optim import Adam, ParamVector, cosine_lr
from ..validation import check_choice, check_positive_int


@dataclass
class TrainConfig:
    """Optimization settings.

    Attributes
    ----------
    steps : int              total Adam steps.
    batch_size : int         examples per step.
    lr : float               peak learning rate.
    lr_schedule : str        ``'cosine'`` (warm-up then cosine decay) or ``'constant'``.
    warmup : int             warm-up steps.
    final_lr_fraction : float  cosine floor, as a fraction of ``lr``.
    seed : int               the one seed of the run.
    dtype : str              ``'float32'`` or ``'float64'`` for the network and Adam.
    ema_decay : float        decay of an exponential moving average of the
                             parameters used for evaluation and sampling (0: off;
                             :class:`~.training.Trainer` only).
    shards : int             threads a step splits its batch over (:mod:`speed`);
                             0: chosen by the trainer (one per core on NumPy, 1 on CuPy).
    """
    steps: int = 20_000
    batch_size: int = 1024
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup: int = 200
    final_lr_fraction: float = 0.01
    seed: int = 0
    dtype: str = "float32"
    ema_decay: float = 0.0
    shards: int = 0

    def __post_init__(self):
        check_positive_int("steps", self.steps, 0)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("shards", self.shards, 0)
        if self.shards > self.batch_size:
            raise ValueError(f"shards ({self.shards}) must not exceed batch_size ({self.batch_size})")
        check_positive_int("warmup", self.warmup, 0)
        check_choice("lr_schedule", self.lr_schedule, ("cosine", "constant"))
        check_choice("dtype", self.dtype, ("float32", "float64"))
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")

    def lr_at(self, step):
        """Learning rate for 0-based ``step``."""
        if self.lr_schedule == "constant":
            return self.lr
        return cosine_lr(step, self.steps, self.lr, self.final_lr_fraction, self.warmup)


def train_plain(model, data_fn, cfg):
    """Train ``model`` for ``cfg.steps`` Adam steps on fresh minibatches of ``data_fn``.

    Parameters
    ----------
    model : object with the interface in the module docstring.
    data_fn : callable ``(n, rng) -> host ndarray (n, D)``, fresh training data.
    cfg : TrainConfig (``shards`` and ``ema_decay`` are the trainer's: unused here).

    Returns
    -------
    theta : ParamVector, the trained parameters (``theta.views`` is the dict a model reads).
    losses : list of float, the minibatch loss of every step (nats per example).
    """
    rng = numpy.random.default_rng(cfg.seed)                                # the one seed
    dtype = numpy.dtype(cfg.dtype)
    theta = ParamVector.from_arrays(model.init_params(rng, dtype), dtype=dtype)   # (P,), named views
    grad = theta.zeros_like()                                               # (P,), the same views
    adam, losses = Adam(theta.flat.size, cfg.lr, dtype=dtype), []
    for step in range(cfg.steps):
        x0 = data_fn(cfg.batch_size, rng)                                   # (N, D) fresh data
        loss, grads = model.loss_and_grads(theta.views, x0, *model.draw(rng, cfg.batch_size))  # t, eps, weights
        for name, g in grads.items():
            grad[name][...] = g                                             # into the flat gradient
        adam.step(theta.flat, grad.flat, cfg.lr_at(step))                   # theta -= lr m_hat / sqrt(v_hat)
        losses.append(loss)
    return theta, losses
