"""demos/walkthrough.py runs top to bottom as a script, headless, and shows what it promises."""
import os
import re
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def test_walkthrough_runs_and_the_bound_rises(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "WALKTHROUGH_OUT": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, os.path.join(ROOT, "demos", "walkthrough.py")], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    for promise in ("model.net.forward gives the same z", "pair by pair, the same as model.net.backward",
                    "equal to model.loss_and_grads", "equal to learned.loss_and_grads"):
        assert promise in out, promise
    errors = [float(e) for e in re.findall(r"relative error ([0-9.e+-]+)", out)]
    assert len(errors) == 5 and max(errors) < 1e-4                    # round-off ~1e-6; a wrong gradient ~1
    K = [float(k) for k in re.findall(r"step +\d+: held-out K = ([+-][0-9.]+)", out)]
    assert len(K) == 4 and K[-1] > K[0] + 1                            # measured: -2.21 -> +0.28 bits
    assert (tmp_path / "figure1.png").is_file()
