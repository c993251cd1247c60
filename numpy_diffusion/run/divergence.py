"""When a training run has diverged, and the error that says at which step.

A run has diverged when

- the loss or a gradient of a step is not finite;
- the parameters are not finite after an Adam step;
- the model finds that its parameters no longer describe a model: a learned
  schedule that leaves (0, 1) (:class:`~numpy_diffusion.validation.ScheduleError`);
- the loss stays far beyond its running best (:func:`far_beyond`).

"Far beyond" is more than ``EXPLOSION_FACTOR = 10`` times the loss's scale
``|L_1| + |best|`` above the best loss, where ``L_1`` is the first step's loss.
The untrained model starts at the forward kernel, so ``L_1`` is about
``-L_null``: the problem's size in nats per example.  Minibatch losses are
heavy-tailed (a few examples at small ``t``, weighted ``T - 1``, can lift one
batch's loss tenfold) but independent from step to step, so a minibatch loss
counts only when ``EXPLOSION_STEPS = 5`` losses running are all far beyond
the best before them: a healthy run does not repeat such a spike five times,
a diverged one does not come back.  A held-out loss (``-K`` summed over every
``t``, with little noise) counts alone, against the best minibatch loss.

Measured on healthy runs (the swiss roll's default, 16,000 steps, and 3,000
steps at batch 1, 8 and 64; the heartbeat's default, 24,000 steps, and 3,000
steps at batch 8 and 128; a dead-leaves image model, 30,000 steps at batch 32),
the smallest of five losses running never came above the best before them by
more than 1.9 times the scale (one loss alone: 24 times, on the images), nor a
held-out loss (swiss roll, heartbeat) above the best minibatch loss by more
than 1.0 times.  With ``t`` drawn log-uniformly (the dead-leaves default since),
30,000 steps: 0.22 times for five running, 0.41 for one loss alone.  Runs that
diverge pass it by orders of magnitude (``--fixed-beta --lr 1e6`` on the swiss
roll: 7 x 10^9 times at step 2).
"""
import math

from ..validation import ScheduleError

EXPLOSION_FACTOR = 10
EXPLOSION_STEPS = 5


class TrainingDiverged(RuntimeError):
    """Training diverged; the message names the step (also kept as ``step``)."""

    def __init__(self, step, why):
        super().__init__(f"training diverged at step {step}: {why}")
        self.step = step


def far_beyond(losses, first, best):
    """Whether every one of ``losses`` (nats per example) lies more than
    ``EXPLOSION_FACTOR (|first| + |best|)`` above ``best``; never before a best exists."""
    if not math.isfinite(best):
        return False
    return min(losses) - best > EXPLOSION_FACTOR * (abs(first) + abs(best))


def explosion(step, what, losses, first, best, stayed=""):
    """The :class:`TrainingDiverged` of ``losses`` far beyond ``best``."""
    scale = abs(first) + abs(best)
    return TrainingDiverged(step, f"{what} went far beyond its best ({best:.4g} nats per example){stayed}: "
                                  f"{', '.join(f'{l:.3g}' for l in losses)}, more than {EXPLOSION_FACTOR} "
                                  f"x {scale:.3g} above it; lower --lr")


def check_minibatch(step, loss, grad_finite, recent, first, best):
    """Raise :class:`TrainingDiverged` for step ``step``'s ``loss`` if it or its gradient is not
    finite, or if it and the ``recent`` losses before it (``EXPLOSION_STEPS - 1`` of them) are
    all far beyond ``best``, the best loss before them (the error names the first of them)."""
    if not (math.isfinite(loss) and grad_finite):
        what = "loss" if not math.isfinite(loss) else "gradient"
        raise TrainingDiverged(step, f"the {what} is not finite (loss {loss}); lower --lr or check the data")
    window = list(recent) + [loss]
    if len(window) == EXPLOSION_STEPS and far_beyond(window, first, best):
        raise explosion(step - EXPLOSION_STEPS + 1, "the minibatch loss", window, first, best,
                        " and stayed there")


def check_held_out(step, loss, first, best, what="the held-out loss"):
    """Raise :class:`TrainingDiverged` if ``loss`` is not finite or far beyond ``best``."""
    if not math.isfinite(loss):
        raise TrainingDiverged(step, f"{what} is not finite ({loss}); lower --lr")
    if far_beyond([loss], first, best):
        raise explosion(step, what, [loss], first, best)


def probe_loss(step, name, loss_fn):
    """``loss_fn()``, the loss of a small batch at parameters called ``name``; raises
    :class:`TrainingDiverged` if they no longer make a model or give a non-finite loss."""
    try:
        loss = float(loss_fn())
    except ScheduleError as err:
        raise TrainingDiverged(step, f"with these {name} the learned schedule leaves (0, 1) ({err})") from err
    if not math.isfinite(loss):
        raise TrainingDiverged(step, f"the {name} give a non-finite loss")
    return loss
