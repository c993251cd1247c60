"""The demos run end to end on a tiny budget and write what they promise."""
import ast
import json
import os
import subprocess
import sys

import numpy as np

DEMOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos")
sys.path.insert(0, DEMOS)
import swiss_roll  # noqa: E402


def test_demos_import_the_package_and_nothing_else_of_the_project():
    """No demo changes ``sys.path`` or imports another demo: what they share (the command
    line, the run folder, the figures) lives in ``numpy_diffusion.run``."""
    names = {f[:-3] for f in os.listdir(DEMOS) if f.endswith(".py")}
    for name in sorted(names):
        with open(os.path.join(DEMOS, name + ".py"), encoding="utf-8") as f:
            source = f.read()
        assert "sys.path" not in source, name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            assert not {m.split(".")[0] for m in modules} & names, f"{name} imports {modules}"


def test_swiss_roll_demo_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--steps", "30", "--batch-size", "64", "--eval-every", "11", "--eval-size", "300",
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
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["steps"] == 40 and resumed["seconds"] > metrics["seconds"]   # the whole run's time
    history = json.loads((out / "checkpoint.json").read_text())["eval_history"]
    assert [h[0] for h in history] == [11, 22, 30, 33, 40]          # every 11 steps, and each run's end


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


def test_posterior_demo_on_a_tiny_checkpoint(tmp_path, capsys):
    import swiss_roll_posterior
    ck = tmp_path / "roll"
    swiss_roll.main(["--steps", "20", "--batch-size", "64", "--eval-every", "20", "--eval-size", "200",
                     "--n-samples", "100", "--out", str(ck)])
    out = tmp_path / "post"
    swiss_roll_posterior.main(["--checkpoint", str(ck / "checkpoint.npz"), "--out", str(out),
                               "--particles", "50", "--samples", "50", "--denoise-points", "5",
                               "--denoise-particles", "20"])
    assert (out / "posterior.png").is_file()
    metrics = json.loads((out / "posterior_metrics.json").read_text())
    for key in ("gaussian_model", "inpainting", "denoising"):
        assert key in metrics, key
    a = next(iter(metrics["inpainting"].values()))
    assert 0 <= a["smc"]["inpaint_on_roll_fraction"] <= 1 and 0 <= a["smc"]["inpaint_crossing_tv"] <= 1


def test_posterior_demo_trains_a_missing_checkpoint_with_the_swiss_roll_demo(tmp_path, monkeypatch, capsys):
    """A missing checkpoint is trained by ``demos/swiss_roll.py`` run as a program of its own
    (here shortened to 20 steps), from another folder and without ``$PYTHONPATH``."""
    import swiss_roll_posterior
    commands, run = [], subprocess.run

    def short(command, **kwargs):
        commands.append(command)
        return run(command + ["--steps", "20", "--batch-size", "64", "--eval-size", "200", "--n-samples", "50"],
                   cwd=tmp_path, **kwargs)
    monkeypatch.setattr(swiss_roll_posterior.subprocess, "run", short)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    ck = tmp_path / "roll" / "checkpoint.npz"
    swiss_roll_posterior.main(["--checkpoint", str(ck), "--out", str(tmp_path / "post"), "--particles", "20",
                               "--samples", "20", "--denoise-points", "2", "--denoise-particles", "10"])
    assert len(commands) == 1 and commands[0][1].endswith(os.path.join("demos", "swiss_roll.py"))
    assert ck.is_file() and (tmp_path / "post" / "posterior.png").is_file()
    assert "training the default model" in capsys.readouterr().out


def test_benchmark_quick_prints_json_lines(capsys):
    import benchmark
    benchmark.main(["--quick", "--batches", "256", "--steps", "2", "--n-samples", "200",
                    "--image-batches", "4", "8"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    steps = [r for r in rows if r["what"] == "train_step"]
    keys = ("batch", "ms_per_step", "samples_per_s", "peak_rss_mb", "dtype", "backend", "gemm_fraction",
            "shards", "page_faults_per_step")
    assert steps and all(k in steps[0] for k in keys)
    assert any(r["what"] == "sample" for r in rows)
    images = [r for r in rows if r["what"] == "image_train_step"]
    assert [r["batch"] for r in images] == [4, 8] and all(k in images[0] for k in keys + ("gemm_flops_per_example",))


def test_benchmark_image_gemm_count_by_hand():
    """The default image network's count, written out layer by layer (16 x 16, 3 scales:
    256 + 64 + 16 = 336 pixels; 3 x 3 kernels; widths 20; J = 10; a fixed schedule)."""
    import benchmark
    cfg = benchmark.make_image_trainer(4, np).model.cfg
    conv_first, conv = 336 * 9 * 1 * 20, 336 * 9 * 20 * 20        # 1 -> 20, then 20 -> 20 (three times)
    pixel, coef, readout = 256 * 20 * 20, 256 * 20 * 20, 256 * 2 * 10
    forward = conv_first + 3 * conv + pixel + coef + readout
    backward = (conv_first + 3 * conv + pixel + coef) + (3 * conv + pixel + coef) + readout   # dW; dx but the first's
    assert benchmark.image_gemm_flops_per_example(cfg) == 2 * (forward + backward)


def test_benchmark_image_gemm_count_with_the_dense_pathway():
    """A network without convolutions, written out: 4 x 4 grey images; the dense pathway
    16 -> 5 -> 16 pixels x 2 channels, joined to the image's one; one 1 x 1 layer 3 -> 6; J = 2.
    Only the dense pathway's first layer reads x_t alone, so only its dx is skipped (the 1 x 1
    layer's dx feeds the dense pathway)."""
    import benchmark
    from numpy_diffusion.image.model import image_model
    from numpy_diffusion.image.network import ImageNetConfig
    cfg = image_model(ImageNetConfig(size=4, T=10, n_layers_conv=0, n_layers_dense=1, n_hidden_dense=5,
                                     n_dense_channels=2, n_hidden_pixel=6, n_temporal_basis=2)).cfg
    g0, g1 = 16 * 5, 5 * 32                                          # 16 -> 5, 5 -> 16 pixels x 2 channels
    pixel, coef, readout = 16 * 3 * 6, 16 * 6 * 4, 16 * 2 * 2       # 1 x 1: 3 -> 6; 6 -> 2 C J = 4
    forward = g0 + g1 + pixel + coef + readout
    backward = (g0 + g1 + pixel + coef) + (g1 + pixel + coef) + readout
    assert benchmark.image_gemm_flops_per_example(cfg) == 2 * (forward + backward)


def test_benchmark_image_gemm_count_of_the_1x1_layers_alone():
    """Without convolutions or dense pathway the first 1 x 1 layer reads the image: no dx for
    it (4 x 4 grey images, 1 -> 6, then 6 -> 2 C J = 4); with a learned schedule it has one."""
    import benchmark
    from numpy_diffusion.image.model import image_model
    from numpy_diffusion.image.network import ImageNetConfig
    net = ImageNetConfig(size=4, T=10, n_layers_conv=0, n_hidden_pixel=6, n_temporal_basis=2)
    pixel, coef, readout = 16 * 1 * 6, 16 * 6 * 4, 16 * 2 * 2
    forward = pixel + coef + readout
    backward = (pixel + coef) + coef + readout
    assert benchmark.image_gemm_flops_per_example(image_model(net).cfg) == 2 * (forward + backward)
    learned = image_model(net, learn_beta=True).cfg
    assert benchmark.image_gemm_flops_per_example(learned) == 2 * (forward + backward + pixel)


def test_benchmark_times_the_dead_leaves_demos_default_model():
    import benchmark
    import dead_leaves
    demo = dead_leaves.new_model(dead_leaves.check_args(dead_leaves.make_parser(), ["--net", "paper"])[0])
    assert benchmark.make_image_trainer(4, np).model.config() == demo.config()
