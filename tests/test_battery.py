"""Misuse of the demos, refused before any work.

One table per demo holds bad values for every option it has (zero, negative,
NaN, infinite, the wrong type, an unknown choice, out of range); each is tried
as ``--option=value`` against an output folder holding a finished run, and must
exit with code 2 and one line, ``error: argument --option: ...`` naming the
value, print nothing else, and leave every file in the folder as it was.  Then
the same for what is wrong between options, with the output folder, and with a
checkpoint (another model's, a corrupt one, one that would be overwritten).
"""
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import sys

import numpy as np
import pytest

from numpy_diffusion.run import folder
from numpy_diffusion.run.checkpoint import load_checkpoint, save_checkpoint

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "demos"))
import dead_leaves  # noqa: E402
import heartbeat  # noqa: E402
import swiss_roll  # noqa: E402
import swiss_roll_posterior  # noqa: E402

COMMON = {
    "--seed": ["-1", "1.5", "x", "nan", str(2 ** 63)],
    "--dtype": ["float16", "int8", ""],
    "--backend": ["tensorflow", ""],
    "--shards": ["-1", "257", "1.5", "nan", "x"],
    "--eval-every": ["0", "-1", "1.5", "nan", "inf", "x", "10000001"],
    "--eval-size": ["0", "1", "-5", "2.5", "x", "10000001"],
    "--n-samples": ["0", "-1", "x", "1000001"],
    "--steps": ["0", "-1", "1.5", "1e3", "nan", "inf", "x", "10000001"],
    "--batch-size": ["0", "-1", "2.5", "nan", "x", "65537"],
    "--lr": ["0", "-0.001", "nan", "inf", "-inf", "x", ""],
}
BAD = {
    "swiss_roll": {**COMMON,
                   "--net": ["cnn", "MLP", ""],
                   "--param": ["ddpm", ""],
                   "--beta-1": ["0", "-1e-7", "1e-15", "1", "0.99", "nan", "inf", "x"],
                   "--basis": ["fourier", ""],
                   "--n-bumps": ["0", "-1", "41", "2.5", "nan"],
                   "--fourier": ["-1", "1025", "1.5", "nan"],
                   "--fourier-scale": ["0", "-1", "nan", "inf", "1e5", "x"]},
    "heartbeat": {**COMMON,
                  "--basis": ["fourier", ""],
                  "--n-bumps": ["0", "-3", "2001", "1.5"],
                  "--t-sampling": ["random", ""],
                  "--ema": ["-0.1", "1", "1.5", "nan", "inf", "x"]},
    "dead_leaves": {**COMMON,
                    "--size": ["0", "-1", "129", "2.5", "nan", "x"],
                    "--r-min": ["0", "-1", "0.4", "nan", "inf", "x"],
                    "--r-max": ["0", "-1", "0.49", "nan", "inf", "1e5", "x"],
                    "--n-train": ["0", "1", "-1", "1.5", "x", "10000001"],
                    "--T": ["0", "1", "-1", "1.5", "nan", "100001"],
                    "--param": ["ddpm", ""],
                    "--beta-1": ["0", "-1e-3", "1e-15", "1", "nan", "inf", "x"],
                    "--net": ["cnn", "UNET", ""],
                    "--objective": ["elbo", "Simple", ""],
                    "--schedule": ["cosine", ""],
                    "--beta-T": ["0", "1", "-0.1", "nan", "inf", "x"],
                    "--widths": ["0", "8,a", "", "8,,8", "1,2,3,4,5,6,7,8,9", "1025", "nan"],
                    "--blocks": ["0", "-1", "17", "1.5", "x"],
                    "--emb-dim": ["0", "-1", "4097", "nan"],
                    "--groups": ["0", "-1", "1025", "x"],
                    "--scales": ["0", "-1", "9", "1.5"],
                    "--conv-layers": ["-1", "65", "1.5", "x"],
                    "--conv-width": ["0", "-1", "1025", "x"],
                    "--pixel-layers": ["-1", "65", "nan"],
                    "--pixel-width": ["0", "-1", "1025", "inf"],
                    "--dense-layers": ["-1", "65", "2.5"],
                    "--dense-width": ["0", "100001", "x"],
                    "--dense-channels": ["0", "1025", "nan"],
                    "--n-bumps": ["0", "-1", "1.5", "x", "100001"],
                    "--bump-spacing": ["exp", "LOG", ""],
                    "--time-embedding": ["-1", "4097", "1.5", "x"],
                    "--t-sampling": ["stratified", "1/t", ""],
                    "--strata": ["0", "-1", "1.5", "nan"],
                    "--ema": ["-0.1", "1", "1.5", "nan", "inf", "x"],
                    "--n-posterior": ["0", "-1", "x", "10001"],
                    "--particles": ["0", "-1", "1.5", "x", "100001"],
                    "--n-samples": ["0", "-1", "x", "10001"]},
    "swiss_roll_posterior": {"--seed": COMMON["--seed"],
                             "--particles": ["0", "-1", "1.5", "x", "100001"],
                             "--samples": ["0", "-1", "nan", "100001"],
                             "--denoise-points": ["0", "-2", "x", "10001"],
                             "--denoise-particles": ["0", "-2", "inf", "100001"]},
}
DEMOS = {"swiss_roll": swiss_roll, "heartbeat": heartbeat, "dead_leaves": dead_leaves,
         "swiss_roll_posterior": swiss_roll_posterior}
NOT_VALUES = {"-h", "--help", "--resume", "--overwrite", "--learn-beta", "--fixed-beta", "--no-attention", "--out",
              "--checkpoint"}
TINY = {"swiss_roll": ["--steps", "2", "--batch-size", "16", "--eval-size", "50", "--n-samples", "20"],
        "heartbeat": ["--steps", "2", "--batch-size", "16", "--eval-size", "20", "--n-samples", "20",
                      "--n-bumps", "5"],
        "dead_leaves": ["--steps", "2", "--batch-size", "16", "--eval-size", "12", "--n-samples", "8",
                        "--net", "paper", "--size", "4", "--T", "6", "--scales", "2", "--conv-layers", "1", "--conv-width", "3",
                        "--pixel-width", "3", "--n-bumps", "2", "--n-train", "64", "--n-posterior", "2",
                        "--particles", "3", "--strata", "3"]}
MODEL = {"swiss_roll": "a GaussianDiffusion", "heartbeat": "a BinomialDiffusion", "dead_leaves": "an ImageDiffusion"}


def options_of(demo):
    """Every option string of a demo's parser."""
    return {s for a in demo.make_parser()._actions for s in a.option_strings if s.startswith("--") or s == "-h"}


def snapshot(folder):
    """Every file below ``folder``, by relative path, with its bytes' hash."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run of each training demo (its folder is only ever read)."""
    runs = {}
    for name in TINY:
        out = tmp_path_factory.mktemp(name) / "run"
        DEMOS[name].main(TINY[name] + ["--out", str(out)])
        runs[name] = out
    return runs


def refused(capsys, main, argv, option):
    """Run ``main(argv)``; it must exit 2 with one line naming ``option`` and nothing on stdout."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, (argv, exit_.value.code, err)
    assert out == "", (argv, out)
    assert err.endswith("\n") and err.count("\n") == 1, (argv, err)
    assert err.startswith(f"error: argument {option}" if option else "error: "), (argv, err)
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("name", BAD)
def test_the_tables_cover_every_option(name):
    assert options_of(DEMOS[name]) - NOT_VALUES == set(BAD[name])


@pytest.mark.parametrize("name", BAD)
def test_every_bad_value_is_refused_in_one_line_before_any_work(name, finished, tmp_path, capsys):
    if name == "swiss_roll_posterior":
        out, extra = tmp_path / "post", ["--checkpoint", str(finished["swiss_roll"] / "checkpoint.npz")]
        shutil.copytree(finished["swiss_roll"], out)
    else:
        out, extra = finished[name], []
    before = snapshot(out)
    for option, values in BAD[name].items():
        for value in values:
            err = refused(capsys, DEMOS[name].main, extra + [f"{option}={value}", "--out", str(out)], option)
            assert repr(value) in err, (option, value, err)
            assert snapshot(out) == before, (option, value)


BETWEEN = {
    "swiss_roll": [(["--shards=513", "--batch-size=512"], "--shards"),
                   (["--net=rbf", "--fourier=64"], "--fourier"),
                   (["--net=rbf", "--fourier-scale=3"], "--fourier-scale"),
                   (["--fourier=0", "--fourier-scale=3"], "--fourier-scale"),
                   (["--basis=identity", "--n-bumps=5"], "--n-bumps"),
                   (["--net=rbf", "--n-bumps=5"], "--n-bumps"),
                   (["--resume", "--overwrite"], "--overwrite"),
                   (["--learn-beta", "--fixed-beta"], "--fixed-beta"),
                   (["--lr", "-inf"], "--lr"),
                   (["--steps"], "--steps"),
                   (["--bogus"], None),
                   (["extra"], None)],
    "heartbeat": [(["--shards=9", "--batch-size=8"], "--shards"),
                  (["--basis=identity", "--n-bumps=5"], "--n-bumps"),
                  (["--overwrite", "--resume"], "--resume"),
                  (["--ema"], "--ema")],
    "dead_leaves": [(["--size=6"], "--size"),                                  # U-Net, 3 levels: a multiple of 4
                    (["--net=paper", "--size=6"], "--size"),                   # --scales 3: a multiple of 4
                    (["--net=paper", "--size=8", "--scales=5"], "--scales"),
                    (["--net=paper", "--conv-layers=0", "--scales=2"], "--scales"),
                    (["--net=paper", "--conv-layers=0", "--conv-width=5"], "--conv-width"),
                    (["--net=paper", "--pixel-layers=0", "--pixel-width=5"], "--pixel-width"),
                    (["--net=paper", "--dense-width=50"], "--dense-width"),    # --dense-layers 0
                    (["--net=paper", "--dense-layers=0", "--dense-channels=3"], "--dense-channels"),
                    (["--scales=2"], "--scales"),                              # paper's options with the U-Net
                    (["--n-bumps=3"], "--n-bumps"),
                    (["--bump-spacing=linear"], "--bump-spacing"),
                    (["--time-embedding=8"], "--time-embedding"),
                    (["--net=paper", "--conv-layers=0", "--pixel-layers=0", "--time-embedding=8"], "--time-embedding"),
                    (["--net=paper", "--widths=8,8"], "--widths"),             # and the U-Net's with the paper's
                    (["--net=paper", "--no-attention"], "--no-attention"),
                    (["--net=paper", "--groups=4"], "--groups"),
                    (["--groups=5"], "--groups"),                              # widths 16, 32, 32
                    (["--widths=16,24", "--groups=16"], "--groups"),
                    (["--widths=8,8,8,8,8,8"], "--widths"),                    # 16 pixels: 5 levels at most
                    (["--schedule=reference", "--beta-T=0.1"], "--beta-T"),
                    (["--net=paper", "--beta-T=0.1"], "--beta-T"),             # its schedule is the reference one
                    (["--beta-1=0.05"], "--beta-1"),                           # above --beta-T 0.02
                    (["--objective=simple", "--learn-beta"], "--objective"),
                    (["--r-min=3", "--r-max=2"], "--r-max"),
                    (["--size=4", "--widths=4", "--groups=4", "--r-min=5"], "--r-min"),   # --r-max is --size
                    (["--n-train=256"], "--n-train"),                          # 16 x 16 pixels
                    (["--size=32", "--n-train=1000"], "--n-train"),
                    (["--net=paper", "--T=5"], "--T"),                         # --n-bumps 10
                    (["--net=paper", "--T=5", "--n-bumps=6"], "--n-bumps"),
                    (["--n-posterior=20", "--eval-size=10"], "--n-posterior"),
                    (["--eval-size=3"], "--eval-size"),                        # --n-posterior 4
                    (["--resume", "--eval-size=3"], "--eval-size"),
                    (["--shards=17", "--batch-size=16"], "--shards"),
                    (["--overwrite", "--resume"], "--resume"),
                    (["--r-max"], "--r-max")],
    "swiss_roll_posterior": [(["--denoise-points=10000", "--denoise-particles=101"], "--denoise-particles"),
                             (["--particles"], "--particles")],
}


@pytest.mark.parametrize("name", BETWEEN)
def test_options_that_contradict_each_other_are_refused(name, finished, capsys):
    out = finished.get(name, finished["swiss_roll"])
    before = snapshot(out)
    for argv, option in BETWEEN[name]:
        refused(capsys, DEMOS[name].main, argv + ["--out", str(out)], option)
        assert snapshot(out) == before, argv


@pytest.mark.parametrize("name", TINY)
def test_an_unusable_out_folder_is_refused_before_any_work(name, tmp_path, capsys, monkeypatch):
    main, tiny = DEMOS[name].main, TINY[name]
    (tmp_path / "file").write_text("keep me")
    err = refused(capsys, main, tiny + ["--out", str(tmp_path / "file")], "--out")
    assert "is a file, not a folder" in err
    err = refused(capsys, main, tiny + ["--out", str(tmp_path / "file" / "run")], "--out")
    assert "which is a file, not a folder" in err
    (tmp_path / "odd" / "metrics.json").mkdir(parents=True)
    err = refused(capsys, main, tiny + ["--out", str(tmp_path / "odd")], "--out")
    assert "metrics.json' is not a file" in err
    err = refused(capsys, main, tiny + ["--out="], "--out")
    assert "invalid value '': allowed: a folder name" in err
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o500)                                  # read-only to its owner
    else:                                                    # root writes anywhere: as if read-only
        def denied(*a, **k):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(folder.tempfile, "mkstemp", denied)
    err = refused(capsys, main, tiny + ["--out", str(locked)], "--out")
    assert "cannot write to" in err and "Permission denied" in err
    monkeypatch.undo()
    locked.chmod(0o700)
    assert sorted(os.listdir(tmp_path)) == ["file", "locked", "odd"] and os.listdir(locked) == []
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize("name", TINY)
def test_a_run_in_out_is_continued_or_replaced_only_when_asked(name, finished, tmp_path, capsys):
    main, tiny, out = DEMOS[name].main, TINY[name], finished[name]
    before = snapshot(out)
    err = refused(capsys, main, tiny + ["--out", str(out)], "--out")
    assert "already holds a run (step 2)" in err and "--resume" in err and "--overwrite" in err
    err = refused(capsys, main, tiny + ["--resume", "--steps", "1", "--out", str(out)], "--steps")
    assert "'1'" not in err and "invalid value 1: the checkpoint is at step 2" in err
    err = refused(capsys, main, tiny[:2] + ["--resume", "--batch-size", "7", "--out", str(out)], "--batch-size")
    assert "7 differs from the checkpoint's 16" in err
    err = refused(capsys, main, ["--resume", "--dtype", "float64", "--out", str(out)], "--dtype")
    assert "float64 differs from the checkpoint's float32" in err
    assert snapshot(out) == before
    err = refused(capsys, main, ["--resume", "--out", str(tmp_path / "none")], "--resume")
    assert "there is no checkpoint" in err and not (tmp_path / "none").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.npz").write_bytes(b"not a checkpoint")
    err = refused(capsys, main, ["--resume", "--out", str(tmp_path / "bad")], "--out")
    assert "is corrupt or not an .npz file" in err
    err = refused(capsys, main, tiny + ["--out", str(tmp_path / "bad")], "--out")
    assert "already holds a run; add --resume" in err
    assert (tmp_path / "bad" / "checkpoint.npz").read_bytes() == b"not a checkpoint"


@pytest.mark.parametrize("name, other", list(itertools.permutations(TINY, 2)))
def test_another_models_checkpoint_is_refused_naming_both(name, other, finished, capsys):
    out = finished[other]
    before = snapshot(out)
    err = refused(capsys, DEMOS[name].main, ["--resume", "--out", str(out)], "--out")
    assert f"holds {MODEL[other]} model; this demo needs {MODEL[name]} model" in err
    err = refused(capsys, DEMOS[name].main, TINY[name] + ["--out", str(out)], "--out")
    assert "already holds a run (step 2); add --resume to continue it, or --overwrite" in err
    assert snapshot(out) == before


def test_the_posterior_demo_refuses_checkpoints_it_cannot_use(finished, tmp_path, capsys):
    main = swiss_roll_posterior.main
    out = tmp_path / "post"
    for other in ("heartbeat", "dead_leaves"):
        err = refused(capsys, main, ["--checkpoint", str(finished[other] / "checkpoint.npz"),
                                     "--out", str(out)], "--checkpoint")
        assert f"holds {MODEL[other]} model; this demo needs a GaussianDiffusion model" in err
    err = refused(capsys, main, ["--checkpoint", str(finished["swiss_roll"]), "--out", str(out)], "--checkpoint")
    assert "is a folder" in err
    err = refused(capsys, main, ["--checkpoint", str(tmp_path / "ck.npz"), "--out", str(out)], "--checkpoint")
    assert "does not exist" in err
    (tmp_path / "file").write_text("")
    err = refused(capsys, main, ["--checkpoint", str(tmp_path / "file" / "checkpoint.npz"), "--out", str(out)],
                  "--checkpoint")
    assert "file' is a file, not a folder" in err
    err = refused(capsys, main, ["--checkpoint", str(finished["swiss_roll"] / "checkpoint.npz"),
                                 "--out", str(tmp_path / "file")], "--out")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_an_unusable_backend_is_refused(finished, capsys):
    try:
        from numpy_diffusion.backend import get_backend
        get_backend("cupy")
        pytest.skip("CuPy works here")
    except Exception:
        pass
    out = finished["swiss_roll"]
    before = snapshot(out)
    refused(capsys, swiss_roll.main, ["--backend", "cupy", "--out", str(out)], "--backend")
    assert snapshot(out) == before


@pytest.mark.parametrize("name", TINY)
def test_two_runs_never_write_one_folder(name, tmp_path, capsys):
    """While a run holds its folder (as every demo does while it works), another is refused."""
    out = tmp_path / "busy"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        err = refused(capsys, DEMOS[name].main, TINY[name] + ["--out", str(out)], "--out")
        assert "another run is writing to" in err
        err = refused(capsys, DEMOS[name].main, TINY[name] + ["--overwrite", "--out", str(out)], "--out")
    finally:
        os.close(fd)
    assert os.listdir(out) == []


def test_a_checkpoint_that_does_not_make_a_model_is_refused(finished, tmp_path, capsys):
    """A checkpoint whose configuration or parameters were damaged: refused, not resumed."""
    out = tmp_path / "run"
    shutil.copytree(finished["swiss_roll"], out)
    arrays, config = load_checkpoint(out / "checkpoint.npz")
    broken = {**arrays, "param/readout.W": np.full_like(arrays["param/readout.W"], np.nan)}
    save_checkpoint(out / "checkpoint.npz", broken, config)
    before = snapshot(out)
    err = refused(capsys, swiss_roll.main, ["--resume", "--steps", "4", "--out", str(out)], "--out")
    assert "cannot be resumed: training diverged at step 2: the parameters are not finite" in err
    del config["model"]["net"]
    save_checkpoint(out / "checkpoint.npz", arrays, config)
    err = refused(capsys, swiss_roll.main, ["--resume", "--out", str(out)], "--out")
    assert "carries settings this demo cannot read" in err
    err = refused(capsys, swiss_roll_posterior.main, ["--checkpoint", str(out / "checkpoint.npz"),
                                                      "--out", str(tmp_path / "post")], "--checkpoint")
    assert "carries a model configuration this demo cannot read" in err
    assert set(snapshot(out)) == set(before)


def test_a_dead_leaves_checkpoint_without_its_data_settings_is_refused(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished["dead_leaves"], out)
    arrays, config = load_checkpoint(out / "checkpoint.npz")
    del config["data"]
    save_checkpoint(out / "checkpoint.npz", arrays, config)
    before = snapshot(out)
    err = refused(capsys, dead_leaves.main, ["--resume", "--steps", "4", "--out", str(out)], "--out")
    assert "carries settings this demo cannot read (no 'data')" in err
    assert snapshot(out) == before


@pytest.mark.parametrize("pathway", [True, False], ids=["with-dense-pathway-fields", "before-them"])
def test_a_dead_leaves_checkpoint_with_the_layers_named_otherwise_is_refused(finished, tmp_path, capsys, pathway):
    """A checkpoint whose network calls the whole-image layers "global" and the 1 x 1 layers
    "dense" (another version's names): one line, nothing resumed or changed, never read with
    the 1 x 1 layers taken for a dense pathway."""
    out = tmp_path / "run"
    shutil.copytree(finished["dead_leaves"], out)
    arrays, config = load_checkpoint(out / "checkpoint.npz")
    net = config["model"]["net"]
    old = {"n_layers_dense": net.pop("n_layers_pixel"), "n_hidden_dense": net.pop("n_hidden_pixel")}
    pathway_fields = {k: net.pop(k) for k in ("n_layers_dense", "n_hidden_dense", "n_dense_channels")}
    if pathway:
        old.update(zip(("n_layers_global", "n_hidden_global", "n_global_channels"), pathway_fields.values()))
    net.update(old)
    renamed = {k.replace("/pixel", "/dense"): v for k, v in arrays.items()}
    save_checkpoint(out / "checkpoint.npz", renamed, config)
    before = snapshot(out)
    err = refused(capsys, dead_leaves.main, ["--resume", "--out", str(out)], "--out")
    assert "carries settings this demo cannot read (no 'n_layers_pixel')" in err and "--overwrite" in err
    assert snapshot(out) == before


def test_a_dead_leaves_run_resumed_ends_where_an_uninterrupted_one_ends(tmp_path, capsys):
    """Two steps, then two more with --resume (and the evaluation-only options changed back and
    forth): every array of the checkpoint but the seconds, every figure and every number equal."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    tiny = TINY["dead_leaves"][2:] + ["--eval-every", "2"]
    dead_leaves.main(tiny + ["--steps", "4", "--out", str(straight)])
    dead_leaves.main(tiny + ["--steps", "2", "--strata", "2", "--out", str(split)])
    dead_leaves.main(["--resume", "--steps", "4", "--eval-every", "2", "--eval-size", "12", "--n-samples", "8",
                      "--n-posterior", "2", "--particles", "3", "--strata", "3", "--out", str(split)])
    assert "resumed" in capsys.readouterr().out
    (a, ca), (b, cb) = (load_checkpoint(d / "checkpoint.npz") for d in (straight, split))
    assert ca == cb and ca["step"] == 4 and len(ca["eval_history"]) == 2 and set(a) == set(b)
    for k in set(a) - {"seconds"}:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert sorted(os.listdir(straight)) == sorted(os.listdir(split))
    for name in dead_leaves.OUTPUTS:
        if name == "metrics.json":
            ma, mb = (json.loads((d / name).read_text()) for d in (straight, split))
            assert ma.pop("seconds") > 0 and mb.pop("seconds") > 0 and ma == mb
        else:
            assert (straight / name).read_bytes() == (split / name).read_bytes(), name


@pytest.mark.parametrize("name", BAD)
def test_help_names_what_each_option_allows(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        DEMOS[name].main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    for option in BAD[name]:
        action = next(a for a in DEMOS[name].make_parser()._actions if option in a.option_strings)
        assert action.choices or f"[{action.type.allowed}]" in text, option
