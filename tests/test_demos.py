"""The demos run end to end on a tiny budget and write what they promise."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demos"))
import swiss_roll  # noqa: E402


def test_swiss_roll_demo_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--steps", "30", "--batch-size", "64", "--eval-every", "15", "--eval-size", "300",
            "--n-samples", "200", "--out", str(out)]
    swiss_roll.main(args)
    printed = capsys.readouterr().out
    assert "paper, Table 1" in printed and "+2.35" in printed
    for name in ("figure1.png", "training.png", "bound_by_t.png", "samples.npy", "metrics.json",
                 "checkpoint.npz", "checkpoint.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("K_bits", "K_bits_stderr", "K_minus_L_null_bits", "L_null_bits", "steps", "seconds",
                "seed", "kl_bits_by_t", "model", "train"):
        assert key in metrics, key
    assert metrics["steps"] == 30 and len(metrics["kl_bits_by_t"]) == 39
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (200, 2) and np.isfinite(samples).all()
    swiss_roll.main(args[:1] + ["40"] + args[2:] + ["--resume"])       # continue to step 40
    assert "resumed" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["steps"] == 40


def test_swiss_roll_demo_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        swiss_roll.main(["--resume", "--out", str(tmp_path / "nothing")])
    with pytest.raises(SystemExit) as err:
        swiss_roll.main(["--net", "cnn"])                               # argparse: exit code 2
    assert err.value.code == 2


import heartbeat  # noqa: E402


def test_heartbeat_demo_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "hb"
    args = ["--steps", "20", "--batch-size", "64", "--eval-every", "10", "--eval-size", "20",
            "--n-samples", "100", "--n-bumps", "10", "--out", str(out)]
    heartbeat.main(args)
    printed = capsys.readouterr().out
    assert "paper, Table 1" in printed and "-2.414" in printed and "-2.322" in printed
    for name in ("heartbeat.png", "training.png", "samples.npy", "metrics.json", "checkpoint.npz",
                 "checkpoint.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("K_bits", "K_bits_stderr", "K_minus_L_null_bits", "L_null_bits", "steps", "seconds",
                "seed", "exact_heartbeat_fraction", "model", "train"):
        assert key in metrics, key
    assert metrics["steps"] == 20 and len(metrics["kl_bits_by_t"]) == 1999
    assert np.isclose(metrics["L_null_bits"], 16 * np.log2(0.8) + 4 * np.log2(0.2))    # -14.438
    samples = np.load(out / "samples.npy", allow_pickle=False)
    assert samples.shape == (100, 20) and set(np.unique(samples)) <= {0, 1}
    heartbeat.main(args[:1] + ["30"] + args[2:] + ["--resume"])         # continue to step 30
    assert "resumed" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30
