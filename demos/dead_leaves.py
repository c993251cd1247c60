"""Train the paper's image model (App. D.2.1) on dead leaves; report the held-out bound beside
Table 1 and beside a full-covariance Gaussian on the same images; samples, inpainting (Fig. 5)
and denoising (Fig. 3).

    python demos/dead_leaves.py                     # 16 x 16, T = 1000, 30,000 steps (see below)
    python demos/dead_leaves.py --resume            # continue the run in --out (up to --steps)
    python demos/dead_leaves.py --size 64 --backend cupy --steps 20000 --batch-size 64   # on a GPU

Writes to ``--out`` (default ``runs/dead_leaves/``): samples.png, bound_by_t.png, training.png,
inpainting.png, denoising.png, metrics.json, checkpoint.npz (+ checkpoint.json).

Cost of the default: a step takes 23 ms of one core (batch 32, float32), so 30,000 steps are
about 12 core-minutes, run as two shards on two cores; measured 1,083 s of training on a
shared 2-core machine whose load average stood at 6-7.  Then about 3 minutes for the held-out
bound (500 images x 30 time steps), 32 samples (1,000 steps each) and the posteriors.
Measured with the defaults (seed 0): K = +0.211 ± 0.020 bits/pixel against the Gaussian's
-1.465 ± 0.012 on the same 500 held-out images, paired difference +1.676 ± 0.013.
"""
import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict

import numpy

from numpy_diffusion.backend import BackendError, get_backend, to_host
from numpy_diffusion.image import dead_leaves as dl
from numpy_diffusion.image import posterior as ip
from numpy_diffusion.image.model import ImageDiffusion, evaluate_stratified, image_model
from numpy_diffusion.image.network import ImageNetConfig
from numpy_diffusion.posterior.paper import denoise_sample, inpaint_sample
from numpy_diffusion.posterior.smc import smc_denoise, smc_inpaint
from numpy_diffusion.run import plots
from numpy_diffusion.run.checkpoint import CheckpointError, config_path, save_json
from numpy_diffusion.run.speed import blas_threads, usable_cores
from numpy_diffusion.run.training import TrainConfig, Trainer, TrainingDiverged

PAPER = {"K": 1.489, "K_minus_L_null": 3.536}             # Table 1, dead leaves, bits/pixel
DATA_KEYS = ("size", "r_min", "r_max", "n_train")
HELD_OUT_SEED_OFFSET = 1_000_003                          # held-out images: another seed


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=int, default=16, help="image side in pixels")
    p.add_argument("--r-min", type=float, default=1.0, help="smallest disc radius, pixels")
    p.add_argument("--r-max", type=float, default=None, help="largest disc radius, pixels (default: --size)")
    p.add_argument("--n-train", type=int, default=20000, help="training images (dequantized afresh each use)")
    p.add_argument("--T", type=int, default=1000, help="trajectory length (the paper's 1000)")
    p.add_argument("--steps", type=int, default=30000, help="Adam steps")
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--param", choices=("paper", "reference", "bounded"), default="bounded",
                   help="reverse kernel: 'paper' is eqs. 64-65 (App. D.2.1); 'bounded' (variance between "
                        "beta_tilde_t and beta_t, §2.6) reached the better held-out bound")
    p.add_argument("--beta-1", type=float, default=1e-3, help="the fixed first diffusion rate")
    p.add_argument("--learn-beta", action="store_true", help="learn beta_2..T (§2.4.1)")
    p.add_argument("--scales", type=int, default=3, help="scales per multi-scale layer (1: plain conv)")
    p.add_argument("--conv-layers", type=int, default=4, help="multi-scale convolution layers")
    p.add_argument("--conv-width", type=int, default=20, help="channels of each multi-scale layer")
    p.add_argument("--dense-layers", type=int, default=1, help="1 x 1 tanh layers")
    p.add_argument("--dense-width", type=int, default=20, help="units of each 1 x 1 layer")
    p.add_argument("--n-bumps", type=int, default=10, help="temporal basis functions J (eq. 63)")
    p.add_argument("--strata", type=int, default=30, help="time steps drawn per held-out image")
    p.add_argument("--ema", type=float, default=0.999, help="parameter EMA decay for evaluation (0: off)")
    p.add_argument("--n-posterior", type=int, default=4, help="held-out images to inpaint and denoise")
    p.add_argument("--particles", type=int, default=16, help="SMC particles per image")
    p.add_argument("--seed", type=int, default=0, help="the one seed of the run")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="network precision")
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: $NUMPY_DIFFUSION_BACKEND or numpy)")
    p.add_argument("--shards", type=int, default=0,
                   help="threads a step splits its batch over (0: one per usable core); BLAS runs one "
                        "thread each, since these GEMMs are too small to share")
    p.add_argument("--out", default=os.path.join("runs", "dead_leaves"), help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz, up to --steps")
    p.add_argument("--eval-every", type=int, default=2000, help="quick held-out bound and checkpoint, steps")
    p.add_argument("--eval-size", type=int, default=500, help="held-out images, final evaluation")
    p.add_argument("--n-samples", type=int, default=32, help="samples of p to draw")
    return p.parse_args(argv)


def new_model(args):
    net = ImageNetConfig(size=args.size, T=args.T, n_scales=args.scales, n_hidden_conv=args.conv_width,
                         n_layers_conv=args.conv_layers, n_hidden_dense=args.dense_width,
                         n_layers_dense=args.dense_layers, n_temporal_basis=args.n_bumps)
    return image_model(net, beta_1=args.beta_1, param=args.param, learn_beta=args.learn_beta)


class Data:
    """Training images (8-bit), held-out images (dequantized once, fixed), and the Gaussian baseline."""

    def __init__(self, cfg, seed):
        self.cfg, D = cfg, cfg["size"] ** 2
        gen = lambda n, s: dl.dead_leaves(n, cfg["size"], numpy.random.default_rng(s),   # noqa: E731
                                          r_min=cfg["r_min"], r_max=cfg["r_max"])
        self.q_train = gen(cfg["n_train"], seed)
        self.q_val = gen(cfg["n_val"], seed + HELD_OUT_SEED_OFFSET)
        self.x_val = dl.dequantize(self.q_val, numpy.random.default_rng(seed + HELD_OUT_SEED_OFFSET + 1))
        self.mean, self.chol = dl.fit_gaussian(dl.dequantize(self.q_train, numpy.random.default_rng(seed + 7)))
        self.gauss_ll = dl.gaussian_log_likelihood(self.x_val, self.mean, self.chol)   # (N,) nats
        self.D = D

    def __call__(self, n, rng):
        """``n`` training images, each dequantized with fresh noise: (n, D) float64."""
        return dl.dequantize(self.q_train[rng.integers(0, len(self.q_train), n)], rng)


def make_trainer(args, xp, ck_path):
    """A new trainer, or one resumed from ``ck_path`` (its data settings win); the eval history."""
    keys = {"size": args.size, "r_min": args.r_min, "r_max": args.r_max, "n_train": args.n_train}
    if args.resume:
        with open(config_path(ck_path)) as f:
            saved = json.load(f)
        data = Data({**saved["data"], "n_val": args.eval_size}, saved["train"]["seed"])
        trainer, config = Trainer.resume(ck_path, ImageDiffusion.from_config, data, xp, steps=args.steps)
        print(f"resumed {ck_path} at step {trainer.step}")
        return trainer, data, config.get("eval_history", [])
    data = Data({**keys, "n_val": args.eval_size}, args.seed)
    shards = args.shards or (min(usable_cores(), args.batch_size) if xp.__name__ == "numpy" else 1)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      dtype=args.dtype, shards=shards, ema_decay=args.ema, warmup=200)
    return Trainer(new_model(args), data, cfg, xp), data, []


def per_pixel(nats, D):
    return nats / (D * math.log(2))


class Progress:
    """A line every few seconds; every ``eval_every`` steps a quick held-out bound and a checkpoint."""

    def __init__(self, data, args, history, start_step):
        self.data, self.args, self.history = data, args, history
        self.start, self.t0, self.last = start_step, time.perf_counter(), 0.0

    def __call__(self, tr):
        step, now = tr.step, time.perf_counter()
        if step % self.args.eval_every == 0 or step == tr.cfg.steps:
            x = tr.xp.asarray(self.data.x_val[:100])
            r = evaluate_stratified(tr.model, tr.eval_params, x, numpy.random.default_rng(step), 20)
            self.history.append([step, r["K_bits_per_pixel"], r["K_bits_per_pixel_stderr"]])
            tr.save(os.path.join(self.args.out, "checkpoint.npz"),
                    extra={"eval_history": self.history, "data": {k: self.data.cfg[k] for k in DATA_KEYS}})
            print(f"  step {step:>6}: held-out K = {r['K_bits_per_pixel']:+.3f} ± "
                  f"{r['K_bits_per_pixel_stderr']:.3f} bits/pixel (100 images); checkpoint saved", flush=True)
        if now - self.last > 10 or step == tr.cfg.steps:
            self.last, rate = now, (step - self.start) / max(now - self.t0, 1e-9)
            recent = -numpy.mean([l for _, l in tr.losses[-200:]])
            print(f"step {step:>6}/{tr.cfg.steps}  minibatch K ≈ {per_pixel(recent, self.data.D):+.2f} bits/pixel"
                  f"  lr {tr.cfg.lr_at(step - 1):.2e}  {rate:.1f} steps/s  eta "
                  f"{(tr.cfg.steps - step) / max(rate, 1e-9):.0f} s", flush=True)


def compare(res, data):
    """The bound beside the Gaussian baseline (paired per image) in both units, as a dict."""
    D, K, G = data.D, res["K_per_image_nats"], data.gauss_ll
    se = lambda a: float(a.std(ddof=1) / math.sqrt(a.size))                      # noqa: E731
    return {"K_bits_per_pixel": res["K_bits_per_pixel"], "K_bits_per_pixel_stderr": res["K_bits_per_pixel_stderr"],
            "K_minus_L_null_bits_per_pixel": res["K_minus_L_null_bits_per_pixel"],
            "K_minus_L_null_bits_per_pixel_stderr": res["K_minus_L_null_bits_per_pixel_stderr"],
            "L_null_bits_per_pixel": dl.L_NULL_BITS, "L_null_on_these_images_bits_per_pixel": res["L_null_bits_per_pixel"],
            "gaussian_bits_per_pixel": per_pixel(G.mean(), D), "gaussian_bits_per_pixel_stderr": per_pixel(se(G), D),
            "gaussian_minus_L_null_bits_per_pixel": per_pixel(G.mean(), D) - res["L_null_bits_per_pixel"],
            "K_minus_gaussian_bits_per_pixel": per_pixel((K - G).mean(), D),
            "K_minus_gaussian_bits_per_pixel_stderr": per_pixel(se(K - G), D),
            "nll_bits_per_dim": dl.nll_bits_per_dim(K.mean(), D),
            "gaussian_nll_bits_per_dim": dl.nll_bits_per_dim(G.mean(), D)}


def report(m, seconds, steps, n):
    print(f"\nheld-out bound on {n} images ({steps} steps in {seconds:.0f} s); bits/pixel on unit-variance data:")
    print(f"                       diffusion (K)        Gaussian, full cov.   paper, Table 1")
    print(f"  log-likelihood      {m['K_bits_per_pixel']:+7.3f} ± {m['K_bits_per_pixel_stderr']:.3f}"
          f"     {m['gaussian_bits_per_pixel']:+7.3f} ± {m['gaussian_bits_per_pixel_stderr']:.3f}"
          f"       {PAPER['K']:+7.3f}")
    print(f"  minus L_null        {m['K_minus_L_null_bits_per_pixel']:+7.3f} ± "
          f"{m['K_minus_L_null_bits_per_pixel_stderr']:.3f}     {m['gaussian_minus_L_null_bits_per_pixel']:+7.3f}"
          f"               {PAPER['K_minus_L_null']:+7.3f}")
    print(f"  L_null              {m['L_null_on_these_images_bits_per_pixel']:+7.3f}             (the same)"
          f"            {PAPER['K'] - PAPER['K_minus_L_null']:+7.3f}")
    print(f"  NLL, bits/dim of the 8-bit data: diffusion ≤ {m['nll_bits_per_dim']:.3f}, "
          f"Gaussian {m['gaussian_nll_bits_per_dim']:.3f}")
    print(f"  diffusion - Gaussian (paired): {m['K_minus_gaussian_bits_per_pixel']:+.3f} ± "
          f"{m['K_minus_gaussian_bits_per_pixel_stderr']:.3f} bits/pixel")


def image_grid(rows, size, path, titles):
    """Rows of images (each (k, D), unit-variance data) drawn as grey levels, one titled row each;
    NaN pixels (hidden ones) in red."""
    plt = plots.pyplot()
    cmap = plt.get_cmap("gray").with_extremes(bad="tab:red")          # NaN: a hidden pixel
    k = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(1.2 * k, 1.35 * len(rows)), squeeze=False)
    for ax_row, imgs, title in zip(axes, rows, titles):
        for j, ax in enumerate(ax_row):
            ax.axis("off")
            if j < len(imgs):
                ax.imshow(dl.to_grey_levels(imgs[j]).reshape(size, size), cmap=cmap, vmin=0, vmax=256,
                          interpolation="nearest")
        ax_row[0].set_title(title, loc="left", fontsize=8)
    plots.save_figure(fig, path, plt)


def posteriors(trainer, data, args):
    """Inpainting (central square hidden) and denoising (SNR 1): the paper's modified chain, SMC,
    and the Gaussian's exact answer; figures and numbers."""
    model, params, xp, s = trainer.model, trainer.eval_params, trainer.xp, data.cfg["size"]
    x = data.x_val[:args.n_posterior]
    rng = numpy.random.default_rng(trainer.cfg.seed + 5)
    mask = ip.central_mask(s, s // 2)
    paper = to_host(inpaint_sample(model, params, xp.asarray(x), xp.asarray(mask), 1, rng))[:, 0]
    smc = smc_inpaint(model, params, xp.asarray(x), xp.asarray(mask), args.particles, rng)
    smc_pick = _draw_particle(smc, rng)
    gauss = ip.gaussian_inpaint(data.mean, data.chol, x, mask, rng)[0][:, 0]
    masked = numpy.where(mask, x, numpy.nan)
    image_grid([x, masked, paper, smc_pick, gauss], s, os.path.join(args.out, "inpainting.png"),
               ["held-out", "central square hidden", "paper's modified chain (eq. 22)",
                f"SMC, {args.particles} particles", "Gaussian baseline, exact conditional"])
    out = {"inpainting": {name: {"rmse_hidden_grey_levels": ip.rmse_grey_levels(v, x, ~mask),
                                 "border_agreement": ip.border_agreement(v, x, mask, s)}
                          for name, v in (("paper", paper), ("smc", smc_pick), ("gaussian", gauss))}}
    y = x + rng.standard_normal(x.shape)                                    # SNR 1 on unit-variance data
    paper_d = to_host(denoise_sample(model, params, xp.asarray(y), 1.0, 1, rng, choice="annealed"))[:, 0]
    smc_d = _draw_particle(smc_denoise(model, params, xp.asarray(y), 1.0, args.particles, rng), rng)
    gauss_d = ip.gaussian_denoise(data.mean, data.chol, y, 1.0, rng)[0][:, 0]
    image_grid([x, y, paper_d, smc_d, gauss_d], s, os.path.join(args.out, "denoising.png"),
               ["held-out", "observed, noise variance 1 (SNR 1)", "paper's modified chain",
                f"SMC, {args.particles} particles", "Gaussian baseline, exact posterior sample"])
    out["denoising"] = {name: {"rmse_grey_levels": ip.rmse_grey_levels(v, x)}
                        for name, v in (("observed", y), ("paper", paper_d), ("smc", smc_d), ("gaussian", gauss_d))}
    return out


def _draw_particle(res, rng):
    """One particle per image, drawn by its SMC weight: a sample of the posterior.  (B, D)"""
    x, w = to_host(res["x0"]), to_host(res["w"])
    return numpy.stack([x[b, rng.choice(w.shape[1], p=w[b] / w[b].sum())] for b in range(x.shape[0])])


def write_outputs(args, trainer, data, res, seconds, history):
    model, params, s = trainer.model, trainer.eval_params, data.cfg["size"]
    samples = to_host(model.sample(params, args.n_samples, numpy.random.default_rng(trainer.cfg.seed + 2)))
    image_grid([data.x_val[:8], samples[:8], samples[8:16], samples[16:24]], s,
               os.path.join(args.out, "samples.png"), ["held-out data", "samples from p", "", ""])
    kl_by_t = numpy.repeat(res["kl_bits_by_stratum"], numpy.diff(res["strata"])) / data.D
    H = res["entropy_bits_per_pixel"]
    plots.bound_by_t(kl_by_t, {"H_q(X_T|X_0)": H["H_q_T"], "-H_q(X_1|X_0)": -H["H_q_1"], "-H_p(X_T)": -H["H_p_T"]},
                     os.path.join(args.out, "bound_by_t.png"))
    if history:
        h, loss = numpy.array(history), numpy.array(trainer.losses)
        plots.training_curve(h[:, 0], h[:, 1], h[:, 2], os.path.join(args.out, "training.png"), target=PAPER["K"],
                             minibatch=(loss[:, 0], per_pixel(-loss[:, 1], data.D)))
    metrics = {**compare(res, data), "kl_bits_per_pixel_by_stratum": (res["kl_bits_by_stratum"] / data.D).tolist(),
               "strata": res["strata"].tolist(),
               "entropy_bits_per_pixel": H, "steps": trainer.step, "seconds": seconds,
               "held_out_images": len(data.x_val), "paper": PAPER, "data": data.cfg,
               "model": model.config(), "train": asdict(trainer.cfg), "backend": trainer.xp.__name__}
    metrics.update(posteriors(trainer, data, args))
    save_json(os.path.join(args.out, "metrics.json"), metrics)
    return metrics


def main(argv=None):
    with blas_threads(1):                  # small GEMMs: one BLAS thread each (see --shards)
        run(parse_args(argv))


def run(args):
    ck_path = os.path.join(args.out, "checkpoint.npz")
    try:
        xp = get_backend(args.backend)
        trainer, data, history = make_trainer(args, xp, ck_path)
    except (BackendError, CheckpointError, ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    print(f"training on {len(data.q_train)} dead-leaves images of {data.cfg['size']} x {data.cfg['size']}: "
          f"{trainer.params.flat.size} parameters, T = {trainer.model.T}, {trainer.model.cfg.param} kernel, "
          f"batch {trainer.cfg.batch_size}, {trainer.cfg.steps} steps on {xp.__name__}", flush=True)
    t0 = time.perf_counter()
    try:
        trainer.run(callback=Progress(data, args, history, trainer.step), every=10)
    except TrainingDiverged as err:
        sys.exit(f"error: {err}\nthe last good checkpoint is {ck_path}")
    seconds = time.perf_counter() - t0
    res = evaluate_stratified(trainer.model, trainer.eval_params, xp.asarray(data.x_val),
                              numpy.random.default_rng(trainer.cfg.seed + 1), args.strata)
    metrics = write_outputs(args, trainer, data, res, seconds, history)
    report(metrics, seconds, trainer.step, len(data.x_val))
    for task in ("inpainting", "denoising"):
        print(f"  {task}: " + "; ".join(f"{k} " + ", ".join(f"{n} {v:.3g}" for n, v in d.items())
                                        for k, d in metrics[task].items()))
    print(f"wrote samples.png, bound_by_t.png, training.png, inpainting.png, denoising.png, metrics.json, "
          f"checkpoint.npz to {args.out}/")


if __name__ == "__main__":
    main()
