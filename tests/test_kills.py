"""Kills at any moment, resumed: the run ends bit for bit where an uninterrupted one ends.

A demo runs as a child process and is killed (SIGKILL) again and again: at
random moments (while it starts, trains, evaluates or writes its outputs), and
while it writes a file, caught by watching its folder for a temporary file and
stopping the child (SIGSTOP) before killing it, so the file is known to be
half-written.  After every kill the checkpoint, once the run has written its
first, loads; each restart (with ``--resume`` once there is a checkpoint)
removes the temporary files the kill left.  The finished run's checkpoint
(every array but the seconds spent), samples, figures and metrics (but the
seconds) equal those of a run never interrupted.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from numpy_diffusion.run.checkpoint import TMP_PREFIX, load_checkpoint

DEMOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos")
TINY = {"swiss_roll": ["--steps", "24", "--batch-size", "32", "--eval-every", "4", "--eval-size", "20",
                       "--n-samples", "20", "--shards", "1"],
        "heartbeat": ["--steps", "24", "--batch-size", "32", "--eval-every", "4", "--eval-size", "20",
                      "--n-samples", "20", "--n-bumps", "5", "--shards", "1"],
        "dead_leaves": ["--steps", "24", "--batch-size", "16", "--eval-every", "4", "--eval-size", "12",
                        "--n-samples", "8", "--shards", "1", "--net", "paper", "--size", "4", "--T", "6", "--scales", "2",
                        "--conv-layers", "1", "--conv-width", "3", "--pixel-width", "3", "--n-bumps", "2",
                        "--n-train", "64", "--n-posterior", "2", "--particles", "3", "--strata", "3"]}


def start(name, out, resume, stderr=subprocess.DEVNULL):
    argv = [sys.executable, os.path.join(DEMOS, f"{name}.py"), *TINY[name], "--out", str(out)]
    return subprocess.Popen(argv + (["--resume"] if resume else []), stdout=subprocess.DEVNULL,
                            stderr=stderr, env={**os.environ, "MPLBACKEND": "Agg"})


def temporaries(out):
    try:
        return {n for n in os.listdir(out) if n.startswith(TMP_PREFIX) and not n.endswith("-write-test")}
    except FileNotFoundError:
        return set()


def kill_while_writing(proc, out):
    """Stop the child as soon as a temporary file appears in ``out``, then kill it; whether
    the file was still there (the kill came mid-write).  False if the child ended first."""
    while proc.poll() is None:
        if temporaries(out):
            proc.send_signal(signal.SIGSTOP)
            caught = bool(temporaries(out))
            proc.kill()
            proc.wait()
            return caught
    return False


def kill_after(proc, seconds):
    """Kill the child ``seconds`` after its start (if it is still running)."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def finish(name, out, resume):
    proc = start(name, out, resume, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()


def same_run(a, b):
    """The two finished runs agree bit for bit (but the seconds they took)."""
    (x, cx), (y, cy) = load_checkpoint(a / "checkpoint.npz"), load_checkpoint(b / "checkpoint.npz")
    assert cx == cy
    assert set(x) == set(y)
    for k in x:
        assert k == "seconds" or np.array_equal(x[k], y[k]), k
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    for name in os.listdir(a):
        if name == "metrics.json":
            ma, mb = (json.loads((d / name).read_text()) for d in (a, b))
            assert ma.pop("seconds") > 0 and mb.pop("seconds") > 0 and ma == mb
        elif name != "checkpoint.npz":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def kill_and_resume(name, tmp_path, kills, seed):
    """Kill a run ``kills`` times, alternating a random moment and mid-write, finish it, and
    compare with an uninterrupted run; returns how many kills came mid-write."""
    rng = np.random.default_rng(seed)
    ref, out = tmp_path / "uninterrupted", tmp_path / "killed"
    t0 = time.perf_counter()
    finish(name, ref, resume=False)
    duration = time.perf_counter() - t0
    left, mid_write = set(), 0
    for k in range(kills):
        for attempt in range(1 + 4 * (k % 2)):              # a mid-write kill: up to five tries
            proc = start(name, out, resume=(out / "checkpoint.npz").exists())
            if k % 2 == 0:
                kill_after(proc, rng.uniform(0, duration))
            elif kill_while_writing(proc, out):
                mid_write += 1
                break
        if (out / "checkpoint.npz").exists():
            arrays, config = load_checkpoint(out / "checkpoint.npz")
            assert int(arrays["step"]) == config["step"] and np.isfinite(arrays["losses"]).all()
        left |= temporaries(out)
    finish(name, out, resume=(out / "checkpoint.npz").exists())
    assert not temporaries(out) and not any((out / n).exists() for n in left)
    same_run(ref, out)
    print(f"{name}: {kills} kills, {mid_write} mid-write; an uninterrupted run takes {duration:.1f} s")
    return mid_write


def test_kills_at_any_moment_leave_a_run_that_resumes_bit_for_bit(tmp_path):
    assert kill_and_resume("swiss_roll", tmp_path, kills=4, seed=0) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_thirty_kills_half_of_them_mid_write(name, tmp_path):
    assert kill_and_resume(name, tmp_path, kills=30, seed=1) == 15
