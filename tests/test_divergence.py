"""Every way a run of the default swiss-roll model can diverge stops it the same way; so do
the dead-leaves image model's (on tiny images).

Each run below diverges in its own way; each must exit with code 1 and two
lines: ``error: training diverged at step N: <what>`` and the last good
checkpoint of this run, by path and step.  That checkpoint exists, holds this
run (its seed and learning rate), and is byte for byte what the run last saved;
nothing else was written after it, and no temporary file is left.
"""
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demos"))
import dead_leaves  # noqa: E402
import swiss_roll  # noqa: E402

from numpy_diffusion.run.checkpoint import TMP_PREFIX, load_checkpoint  # noqa: E402
from numpy_diffusion.run.training import Trainer  # noqa: E402

SMALL = ["--eval-size", "100", "--n-samples", "20"]
# The two --lr 1 runs blow up over tens of steps; the step where they cross the line depends on
# the last bits of every GEMM, so on the BLAS build and its thread count (29 with two OpenBLAS
# threads here, 25 with one): for them the step named must lie in a range.  Evaluating at every
# step, the held-out check (one value far beyond) fires before the minibatch one (five in a row).
WAYS = [  # (arguments, the step named or its range, what it says)
    (["--lr", "1e3"], 2, r"the learned schedule left \(0, 1\)"),                    # in a training step
    (["--lr", "1e3", "--eval-every", "1"], 1, r"with these parameters the learned schedule leaves \(0, 1\)"),
    (["--lr", "1"], range(10, 60), "the minibatch loss went far beyond its best .* and stayed there"),
    (["--lr", "1", "--eval-every", "1"], range(10, 60), "the held-out loss went far beyond its best"),
    (["--lr", "1e300"], 1, "the parameters are not finite after the Adam step"),
    (["--fixed-beta", "--lr", "1e30"], 2, "the gradient is not finite"),
    (["--fixed-beta", "--lr", "1e6"], 2, "the minibatch loss went far beyond its best"),   # finite, exploding
]


@pytest.fixture
def saves(monkeypatch):
    """The bytes of the checkpoint after every save, by step."""
    saved, save = {}, Trainer.save

    def recording(self, path, extra=None):
        save(self, path, extra)
        saved[self.step] = Path(path).read_bytes()
    monkeypatch.setattr(Trainer, "save", recording)
    return saved


def diverges(argv, out, capsys, main=swiss_roll.main):
    """Run the demo to its divergence; returns ``(step named, message, checkpoint step named)``."""
    with pytest.raises(SystemExit) as exit_:
        main(argv + ["--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err, err
    first, second = err.rstrip("\n").split("\n")
    m = re.fullmatch(r"error: training diverged at step (\d+): (.*)", first)
    k = re.fullmatch(rf"the last good checkpoint, {re.escape(str(out / 'checkpoint.npz'))} \(step (\d+)\), "
                     r"is kept as it was; continue from it with --resume and a lower --lr", second)
    assert m and k, err
    return int(m[1]), m[2], int(k[1])


def kept(out, saves, step, lr):
    """The checkpoint named is this run's, at ``step``, as last saved; nothing written after it."""
    arrays, config = load_checkpoint(out / "checkpoint.npz")
    assert config["step"] == step == max(saves) and config["train"]["lr"] == lr
    assert (out / "checkpoint.npz").read_bytes() == saves[step]
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith(("param/", "adam/")))
    assert sorted(os.listdir(out)) == ["checkpoint.json", "checkpoint.npz"]
    assert not [n for n in os.listdir(out) if n.startswith(TMP_PREFIX)]


@pytest.mark.parametrize("argv, step, what", WAYS, ids=[" ".join(w[0]) for w in WAYS])
def test_each_way_to_diverge_names_the_step_and_keeps_the_checkpoint(argv, step, what, tmp_path, capsys, saves):
    named, message, ck_step = diverges(argv + SMALL + ["--steps", "100"], tmp_path / "run", capsys)
    assert (named in step if isinstance(step, range) else named == step) and re.search(what, message), message
    kept(tmp_path / "run", saves, ck_step, float(argv[argv.index("--lr") + 1]))


def test_a_non_finite_loss_mid_run_keeps_the_checkpoint_of_the_step_before(tmp_path, capsys, saves, monkeypatch):
    """An example at 1e30 in step 13's data overflows the float32 network; checkpoints every 5 steps:
    the step-10 checkpoint stays."""
    data = swiss_roll.swiss_roll
    calls = []

    def poisoned(n, rng):
        x = data(n, rng)
        if n == 512:                                        # a training batch (the default size)
            calls.append(n)
            if len(calls) == 13:
                x[0, 0] = 1e30
        return x
    monkeypatch.setattr(swiss_roll, "swiss_roll", poisoned)
    named, message, ck_step = diverges(["--eval-every", "5", "--steps", "20", "--eval-size", "100"],
                                       tmp_path / "run", capsys)
    assert named == 13 and re.match("the (loss|gradient) is not finite", message) and ck_step == 10
    kept(tmp_path / "run", saves, 10, 1e-3)


def test_a_run_started_over_names_its_own_checkpoint(tmp_path, capsys, saves):
    """--overwrite replaces the previous run at once: a divergence names this run's step 0."""
    out = tmp_path / "run"
    swiss_roll.main(["--steps", "2", "--batch-size", "16"] + SMALL + ["--out", str(out)])
    assert (out / "metrics.json").exists()
    saves.clear()
    named, _, ck_step = diverges(["--overwrite", "--lr", "1e3", "--steps", "50"] + SMALL, out, capsys)
    assert (named, ck_step) == (2, 0)
    kept(out, saves, 0, 1e3)


def test_a_resumed_run_names_the_checkpoint_it_resumed(tmp_path, capsys, saves):
    out = tmp_path / "run"
    swiss_roll.main(["--steps", "4", "--batch-size", "16"] + SMALL + ["--out", str(out)])
    saves.clear()
    before = (out / "checkpoint.npz").read_bytes()
    named, _, ck_step = diverges(["--resume", "--steps", "50", "--lr", "1e300"], out, capsys)
    assert (named, ck_step) == (5, 4)
    assert (out / "checkpoint.npz").read_bytes() == before and not saves
    assert load_checkpoint(out / "checkpoint.npz")[1]["train"]["lr"] == 1e-3      # as it was saved


IMAGE = ["--net", "paper", "--size", "4", "--T", "6", "--scales", "2", "--conv-layers", "1", "--conv-width", "3", "--pixel-width", "3",
         "--n-bumps", "2", "--n-train", "64", "--batch-size", "16", "--eval-size", "12", "--n-samples", "8",
         "--n-posterior", "2", "--particles", "3", "--strata", "3"]
IMAGE_WAYS = [
    (["--lr", "1e300"], 1, "the parameters are not finite after the Adam step"),
    (["--lr", "1e30"], 2, "the gradient is not finite"),
    (["--lr", "1e6"], 2, "the minibatch loss went far beyond its best"),                # finite, exploding
]


@pytest.mark.parametrize("argv, step, what", IMAGE_WAYS, ids=[" ".join(w[0]) for w in IMAGE_WAYS])
def test_a_diverging_image_run_names_the_step_and_keeps_the_checkpoint(argv, step, what, tmp_path, capsys, saves):
    named, message, ck_step = diverges(argv + IMAGE + ["--steps", "50"], tmp_path / "run", capsys, dead_leaves.main)
    assert named == step and re.search(what, message) and ck_step == 0, message
    kept(tmp_path / "run", saves, 0, float(argv[1]))


def test_a_resumed_image_run_names_the_checkpoint_it_resumed(tmp_path, capsys, saves):
    out = tmp_path / "run"
    dead_leaves.main(IMAGE + ["--steps", "4", "--out", str(out)])
    saves.clear()
    before = (out / "checkpoint.npz").read_bytes()
    for name in dead_leaves.OUTPUTS:
        (out / name).unlink()
    named, _, ck_step = diverges(["--resume", "--steps", "50", "--lr", "1e300"], out, capsys, dead_leaves.main)
    assert (named, ck_step) == (5, 4) and not saves
    kept(out, {4: before}, 4, 3e-3)
