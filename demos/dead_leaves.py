"""Train an image model on dead leaves; report the held-out bound beside Table 1 and beside a
full-covariance Gaussian on the same images; samples, inpainting (Fig. 5) and denoising (Fig. 3).

    python demos/dead_leaves.py                     # the time-conditioned U-Net, 16 x 16, T = 1000
    python demos/dead_leaves.py --net paper         # the paper's network (App. D.2.1, Fig. D.1)
    python demos/dead_leaves.py --resume            # continue the run in --out
    python demos/dead_leaves.py --size 64 --backend cupy --steps 50000 --batch-size 64   # on a GPU

Two networks, each with its own defaults (an option given changes only itself):

- ``--net unet`` (default): a small U-Net in which the step ``t`` shifts the features of every
  residual block (:mod:`numpy_diffusion.image.unet`); DDPM's mean (``--param eps``), its linear
  schedule from ``beta_1`` to ``--beta-T 0.02``, and ``beta_1`` where the bound's ceiling meets the
  data's (``pixels.PixelScale.beta_1_at_ceiling``, 1.07e-5 on these images).
- ``--net paper``: the paper's network (multi-scale convolutions, 1 x 1 layers, the temporal readout
  of eqs. 62-63), the reference code's schedule with ``beta_1 = 1e-3``, the ``'bounded'`` kernel.

Both draw ``t`` log-uniformly and train on the bound (``--objective simple``: DDPM's loss, a
reweighting of the bound's terms; the bound is what is reported either way).

Writes to ``--out`` (default ``runs/dead_leaves/``): samples.png, bound_by_t.png, training.png,
inpainting.png, denoising.png, metrics.json, checkpoint.npz (+ checkpoint.json).
"""
import os
from dataclasses import asdict

import numpy

from numpy_diffusion.backend import to_host
from numpy_diffusion.bits import standard_error
from numpy_diffusion.image import dead_leaves as dl
from numpy_diffusion.image import posterior as ip
from numpy_diffusion.image.model import ImageDiffusion, evaluate_stratified, image_model
from numpy_diffusion.image.network import ImageNetConfig
from numpy_diffusion.image.unet import UNetConfig
from numpy_diffusion.posterior.paper import denoise_sample, inpaint_sample
from numpy_diffusion.posterior.smc import draw_one, smc_denoise, smc_inpaint
from numpy_diffusion.run import plots
from numpy_diffusion.run.checkpoint import save_json
from numpy_diffusion.run.cli import (ArgumentParser, HelpFormatter, add_common_options, check_backend,
                                     check_shards, given_options, integer, integers, real, refuse_misfits,
                                     refuse_unused)
from numpy_diffusion.run.folder import (HELD_OUT_SEED_OFFSET, Progress, guarded, prepare_run, start_or_resume,
                                        train_or_exit)
from numpy_diffusion.run.speed import blas_threads, usable_cores
from numpy_diffusion.run.loop import TrainConfig
from numpy_diffusion.run.training import Trainer

PAPER = {"K": 1.489, "K_minus_L_null": 3.536}             # Table 1, dead leaves, bits/pixel
DATA_KEYS = ("size", "r_min", "r_max", "n_train")
# each network's defaults, for the options left out (measured: see the README's dead-leaves results)
DEFAULTS = {"unet": {"steps": 15000, "lr": 2e-3, "param": "eps", "schedule": "linear", "beta_1": dl.beta_1_at_ceiling()},
            "paper": {"steps": 30000, "lr": 3e-3, "param": "bounded", "schedule": "reference", "beta_1": 1e-3}}
PAPER_ONLY = ("scales", "conv_layers", "conv_width", "dense_layers", "dense_width", "dense_channels",
              "pixel_layers", "pixel_width", "n_bumps", "bump_spacing", "time_embedding")
UNET_ONLY = ("widths", "blocks", "no_attention", "emb_dim", "groups")
SHOWN = 4                                        # held-out images in the posterior figures
OUTPUTS = ("samples.png", "bound_by_t.png", "training.png", "inpainting.png", "denoising.png", "metrics.json")
EVALUATION_ONLY = ("strata", "n_posterior", "particles")  # options a resumed run may change as well


def make_parser():
    """The options, each checked against its range by argparse."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--size", type=integer(1, 128), default=16, help="image side in pixels")
    p.add_argument("--r-min", type=real(0.5, 1e4, lo_open=False), default=1.0, help="smallest disc radius, pixels")
    p.add_argument("--r-max", type=real(0.5, 1e4, lo_open=False), default=None,
                   help="largest disc radius, pixels (default: --size)")
    p.add_argument("--n-train", type=integer(2, 10_000_000), default=20000,
                   help="training images, dequantized afresh each use (more than --size^2: the Gaussian "
                        "baseline's covariance needs them)")
    p.add_argument("--T", type=integer(2, 100_000), default=1000, help="trajectory length (the paper's 1000)")
    p.add_argument("--net", choices=("unet", "paper"), default="unet",
                   help="the time-conditioned U-Net, or the paper's network (App. D.2.1)")
    p.add_argument("--steps", type=integer(1, 10_000_000), default=None,
                   help="Adam steps of the whole run (default: unet 15,000, paper 30,000; with --resume: the "
                        "checkpoint's)")
    p.add_argument("--batch-size", type=integer(1, 65_536), default=32, help="images per step")
    p.add_argument("--lr", type=real(0, None), default=None,
                   help="peak learning rate, cosine decay (default: unet 2e-3, paper 3e-3)")
    p.add_argument("--param", choices=("eps", "bounded", "paper", "reference"), default=None,
                   help="reverse kernel's mean and variance (gaussian/reverse.py): 'eps' is DDPM's, 'paper' eqs. "
                        "64-65; 'bounded' and 'eps' keep the variance between beta_tilde_t and beta_t "
                        "(default: unet eps, paper bounded)")
    p.add_argument("--objective", choices=("bound", "simple", "hybrid"), default="bound",
                   help="what training minimizes: -K, DDPM's simplified loss (the bound's terms reweighted), or "
                        "the simplified loss plus 0.01 of the bound (gaussian/model.py: objective_weights)")
    p.add_argument("--schedule", choices=("linear", "reference"), default=None,
                   help="beta_t linear from --beta-1 to --beta-T (DDPM's), or the reference code's 1/(T - t + 1) "
                        "(default: unet linear, paper reference)")
    # below about float32's eps^2 a float32 network cannot resolve the first step's noise, sqrt(beta_1)
    p.add_argument("--beta-1", type=real(1e-14, 1, lo_open=False, hi_open=True), default=None,
                   help="the fixed first diffusion rate (default: unet 1.07e-5, where the bound's ceiling meets "
                        "the data's; paper 1e-3, the reference code's)")
    p.add_argument("--beta-T", type=real(0, 1, hi_open=True), default=0.02, help="the last rate of --schedule linear")
    p.add_argument("--learn-beta", action="store_true", help="learn beta_2..T (§2.4.1)")
    p.add_argument("--widths", type=integers(1, 1024), default=(16, 32, 32),
                   help="U-Net: channels at each resolution, finest first, comma-separated")
    p.add_argument("--blocks", type=integer(1, 16), default=1, help="U-Net: residual blocks per level and way")
    p.add_argument("--no-attention", action="store_true", help="U-Net: no self-attention at the coarsest level")
    p.add_argument("--emb-dim", type=integer(1, 4096), default=64, help="U-Net: width of the time embedding's MLP")
    p.add_argument("--groups", type=integer(1, 1024), default=8, help="U-Net: GroupNorm groups (divide every width)")
    p.add_argument("--scales", type=integer(1, 8), default=3, help="paper: scales per multi-scale layer (1: plain conv)")
    p.add_argument("--conv-layers", type=integer(0, 64), default=4, help="paper: multi-scale convolution layers")
    p.add_argument("--conv-width", type=integer(1, 1024), default=20, help="paper: channels of each multi-scale layer")
    p.add_argument("--dense-layers", type=integer(0, 64), default=0,
                   help="paper: hidden layers of the dense pathway on the whole image, beside the convolutions "
                        "(Fig. D.1; 0: none)")
    p.add_argument("--dense-width", type=integer(1, 100_000), default=500,
                   help="paper: units of each dense-pathway layer")
    p.add_argument("--dense-channels", type=integer(1, 1024), default=2,
                   help="paper: channels per pixel the dense pathway adds to the 1 x 1 layers' input")
    p.add_argument("--pixel-layers", type=integer(0, 64), default=1, help="paper: 1 x 1 tanh layers (per pixel)")
    p.add_argument("--pixel-width", type=integer(1, 1024), default=20, help="paper: units of each 1 x 1 layer")
    p.add_argument("--n-bumps", type=integer(1, 100_000), default=10,
                   help="paper: temporal basis functions J (eq. 63), at most --T")
    p.add_argument("--bump-spacing", choices=("log", "linear"), default="log",
                   help="paper: bump centres evenly spaced in log t, or in t (the paper's, eq. 63)")
    p.add_argument("--time-embedding", type=integer(0, 4096), default=0,
                   help="paper: width of a time embedding that shifts every layer, as in the U-Net (not the "
                        "paper's; 0: t enters only at the readout)")
    p.add_argument("--t-sampling", choices=("log-uniform", "uniform"), default="log-uniform",
                   help="how training draws t: P(t) ∝ 1/t, weighted by 1/P(t), or uniform")
    p.add_argument("--strata", type=integer(1, 100_000), default=30,
                   help="time steps drawn per held-out image (T - 1 or more: each step once, the exact bound)")
    p.add_argument("--ema", type=real(0, 1, lo_open=False, hi_open=True), default=0.999,
                   help="parameter EMA decay for evaluation (0: off)")
    p.add_argument("--n-posterior", type=integer(1, 10_000), default=16,
                   help=f"held-out images to inpaint and denoise (the figures show the first {SHOWN})")
    p.add_argument("--particles", type=integer(1, 100_000), default=16, help="SMC particles per image")
    add_common_options(p, out=os.path.join("runs", "dead_leaves"), eval_every=2000, eval_size=500, n_samples=64,
                       max_samples=10_000, auto_shards="one per usable core, each running BLAS on one thread, "
                                                       "as these GEMMs are too small to share")
    return p


def check_args(p, argv=None):
    """``(args, given)``: the options' values and the dests the command line gives; fills in the
    network's defaults (:data:`DEFAULTS`); refuses an option given that would go unused, and
    values that do not fit together, as argparse refuses a bad value.  A resumed run's model and
    data are the checkpoint's (:func:`saved_settings`)."""
    args, given = p.parse_args(argv), given_options(p, argv)
    for dest, value in DEFAULTS[args.net].items():
        if getattr(args, dest) is None and (dest != "steps" or not args.resume):
            setattr(args, dest, value)
    paper, unet = args.net == "paper", args.net == "unet"
    unused = [*((o, unet, "with --net unet") for o in PAPER_ONLY), *((o, paper, "with --net paper") for o in UNET_ONLY),
              ("scales", paper and args.conv_layers == 0, "without multi-scale layers (--conv-layers 0)"),
              ("conv_width", paper and args.conv_layers == 0, "without multi-scale layers (--conv-layers 0)"),
              ("dense_width", paper and args.dense_layers == 0, "without the dense pathway (--dense-layers 0)"),
              ("dense_channels", paper and args.dense_layers == 0, "without the dense pathway (--dense-layers 0)"),
              ("pixel_width", paper and args.pixel_layers == 0, "without 1 x 1 layers (--pixel-layers 0)"),
              ("beta_T", args.schedule != "linear", "with --schedule reference (it ends at 1/2)")]
    for dest, when, reason in ([] if args.resume else unused):      # resumed: the checkpoint's, checked later
        refuse_unused(p, given, "--" + dest.replace("_", "-"), dest, when, reason)
    refuse_misfits(p, args, given, ([] if args.resume else model_misfits(args)) + [
        (("n_posterior", "eval_size"), args.n_posterior <= args.eval_size,
         f"--n-posterior <= --eval-size (here {args.n_posterior} and {args.eval_size})")])
    check_shards(p, args, given)
    return args, given


def model_misfits(args):
    """The checks of values that must fit together to make this model and its data, for
    :func:`~numpy_diffusion.run.cli.refuse_misfits`."""
    r_max, size = args.r_max or args.size, args.size
    pool = 2 ** ((args.scales if args.conv_layers else 1) - 1 if args.net == "paper" else len(args.widths) - 1)
    return [(("scales", "widths", "size"), size % pool == 0,
             f"--size a multiple of {pool}, to pool every " + ("scale" if args.net == "paper" else "U-Net level")),
            (("groups", "widths"), args.net == "paper" or all(w % args.groups == 0 for w in args.widths),
             f"--groups dividing every --widths entry (here {args.groups} and {','.join(map(str, args.widths))})"),
            (("beta_T", "beta_1"), args.schedule != "linear" or args.beta_1 <= args.beta_T,
             f"--beta-1 <= --beta-T (here {args.beta_1:g} and {args.beta_T:g})"),
            (("objective", "learn_beta"), args.objective == "bound" or not args.learn_beta,
             "--objective bound with --learn-beta (the simplified loss's weights need a fixed schedule)"),
            (("r_max", "r_min"), args.r_min <= r_max, f"--r-min <= --r-max (here {args.r_min:g} and {r_max:g})"),
            (("n_train", "size"), args.n_train > size ** 2, f"--n-train > --size^2 = {size ** 2:,} "
             "(the Gaussian baseline's covariance needs more images than pixels)"),
            (("time_embedding", "conv_layers", "pixel_layers"),
             args.net == "unet" or not args.time_embedding or args.conv_layers or args.pixel_layers,
             "--time-embedding 0 without multi-scale or 1 x 1 layers (it shifts their outputs)"),
            (("n_bumps", "T"), args.net == "unet" or args.n_bumps <= args.T,
             f"--n-bumps <= --T (here {args.n_bumps} and {args.T})")]


def saved_settings(config):
    """The options a checkpoint fixes, by dest, as this demo would have been given them."""
    model, train, data = config["model"], config["train"], config["data"]
    net, sched = model["net"], model["schedule"]
    out = {"batch_size": train["batch_size"], "seed": train["seed"], "dtype": train["dtype"],
           "shards": train["shards"], "ema": train["ema_decay"], "size": data["size"], "r_min": data["r_min"],
           "r_max": data["size"] if data["r_max"] is None else data["r_max"], "n_train": data["n_train"],
           "T": net["T"], "param": model["param"], "objective": model["objective"], "beta_1": sched["beta_1"],
           "schedule": sched["baseline"], "learn_beta": sched["learn"], "t_sampling": model["t_sampling"],
           "net": {"image": "paper"}.get(net["kind"], net["kind"])}
    if sched["baseline"] == "linear":
        out["beta_T"] = sched["beta_T"]
    if net["kind"] == "unet":
        return {**out, "widths": tuple(net["widths"]), "blocks": net["blocks"], "no_attention": not net["attention"],
                "emb_dim": net["emb_dim"], "groups": net["groups"]}
    return {**out, "scales": net["n_scales"], "conv_layers": net["n_layers_conv"], "conv_width": net["n_hidden_conv"],
            "pixel_layers": net["n_layers_pixel"], "pixel_width": net["n_hidden_pixel"],
            "dense_layers": net["n_layers_dense"], "dense_width": net["n_hidden_dense"],
            "dense_channels": net["n_dense_channels"], "n_bumps": net["n_temporal_basis"],
            "bump_spacing": net["bump_spacing"], "time_embedding": net["time_embedding"]}


def new_model(args):
    """The image model with the choices the options make."""
    if args.net == "unet":
        net = UNetConfig(size=args.size, T=args.T, widths=args.widths, blocks=args.blocks,
                         attention=not args.no_attention, emb_dim=args.emb_dim, groups=args.groups)
    else:
        net = ImageNetConfig(size=args.size, T=args.T, n_scales=args.scales if args.conv_layers else 1,
                             n_hidden_conv=args.conv_width, n_layers_conv=args.conv_layers,
                             n_hidden_pixel=args.pixel_width, n_layers_pixel=args.pixel_layers,
                             n_layers_dense=args.dense_layers, n_hidden_dense=args.dense_width,
                             n_dense_channels=args.dense_channels,
                             n_temporal_basis=args.n_bumps, bump_spacing=args.bump_spacing,
                             time_embedding=args.time_embedding)
    return image_model(net, beta_1=args.beta_1, param=args.param, learn_beta=args.learn_beta,
                       t_sampling=args.t_sampling, objective=args.objective, baseline=args.schedule,
                       **({"beta_T": args.beta_T} if args.schedule == "linear" else {}))


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


def make_data(args, config):
    """The run's images, from its options, or a resumed run's from its checkpoint."""
    cfg, seed = (vars(args), args.seed) if config is None else (config["data"], config["train"]["seed"])
    return Data({**{k: cfg[k] for k in DATA_KEYS}, "n_val": args.eval_size}, seed)


def make_trainer(parser, args, given, config, xp, data):
    """A new trainer from the arguments, or one resumed from ``config``'s checkpoint; and the eval history."""
    def new():
        shards = args.shards or (min(usable_cores(), args.batch_size) if xp is numpy else 1)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          dtype=args.dtype, shards=shards, ema_decay=args.ema, warmup=200)
        return Trainer(new_model(args), data, cfg, xp)

    def resume(path, **overrides):
        return Trainer.resume(path, ImageDiffusion.from_config, data, xp, model_class=ImageDiffusion,
                              **overrides)[0]
    return start_or_resume(parser, args, given, config, new, resume, extra=data_settings(data))


def data_settings(data):
    """What a checkpoint keeps of the data, beside the model, to make the same images again."""
    return {"data": {k: data.cfg[k] for k in DATA_KEYS}}


def quick_bound(model, params, x, rng):
    """The bound at a checkpoint, 20 time steps per image: bits/pixel and its standard error."""
    r = evaluate_stratified(model, params, x, rng, 20)
    return r["K_bits_per_pixel"], r["K_bits_per_pixel_stderr"]


def compare(res, data):
    """The bound beside the Gaussian baseline (paired per image) in both units, as a dict."""
    D, K, G = data.D, res["K_per_image_nats"], data.gauss_ll
    bpp = lambda nats: dl.bits_per_pixel(nats, D)                                  # noqa: E731
    return {**{k: res[k] for k in ("K_bits_per_pixel", "K_bits_per_pixel_stderr", "K_minus_L_null_bits_per_pixel",
                                   "K_minus_L_null_bits_per_pixel_stderr")},
            "L_null_bits_per_pixel": dl.L_NULL_BITS,
            "L_null_on_these_images_bits_per_pixel": res["L_null_bits_per_pixel"],
            "gaussian_bits_per_pixel": bpp(G.mean()), "gaussian_bits_per_pixel_stderr": bpp(standard_error(G)),
            "gaussian_minus_L_null_bits_per_pixel": bpp(G.mean()) - res["L_null_bits_per_pixel"],
            "K_minus_gaussian_bits_per_pixel": bpp((K - G).mean()),
            "K_minus_gaussian_bits_per_pixel_stderr": bpp(standard_error(K - G)),
            "nll_bits_per_dim": dl.nll_bits_per_dim(K.mean(), D),
            "gaussian_nll_bits_per_dim": dl.nll_bits_per_dim(G.mean(), D)}


def report(m, seconds, steps, n):
    print(f"\nheld-out bound on {n} images ({steps} steps in {seconds:.0f} s); bits/pixel on unit-variance data:")
    c = m["ceilings_bits_per_pixel"]
    print(f"  (at beta_1 = {c['beta_1']:.3g} no model's K exceeds {c['first_step']:.2f}, the first step's "
          f"ceiling, nor any likelihood {c['data']:.2f}, the data's; the paper's beta_1 = 1e-3 allows "
          f"{c['first_step_at_paper_beta_1']:.2f})")
    print("                       diffusion (K)        Gaussian, full cov.   paper, Table 1")
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
    flat = m["flat_neighbour_pairs"]
    print(f"  flat regions: {flat['samples']:.0%} of neighbouring pixel pairs within {dl.SAME_GREY:g} grey levels "
          f"in the samples, {flat['held_out']:.0%} in the held-out images")


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
    image_grid([v[:SHOWN] for v in (x, masked, paper, smc_pick, gauss)], s, os.path.join(args.out, "inpainting.png"),
               ["held-out", "central square hidden", "paper's modified chain (eq. 22)",
                f"SMC, {args.particles} particles", "Gaussian baseline, exact conditional"])
    out = {"inpainting": {name: {"rmse_hidden_grey_levels": ip.rmse_grey_levels(v, x, ~mask),
                                 "border_agreement": ip.border_agreement(v, x, mask, s)}
                          for name, v in (("paper", paper), ("smc", smc_pick), ("gaussian", gauss))}}
    y = x + rng.standard_normal(x.shape)                                    # SNR 1 on unit-variance data
    paper_d = to_host(denoise_sample(model, params, xp.asarray(y), 1.0, 1, rng, choice="annealed"))[:, 0]
    smc_d = _draw_particle(smc_denoise(model, params, xp.asarray(y), 1.0, args.particles, rng), rng)
    gauss_d = ip.gaussian_denoise(data.mean, data.chol, y, 1.0, rng)[0][:, 0]
    image_grid([v[:SHOWN] for v in (x, y, paper_d, smc_d, gauss_d)], s, os.path.join(args.out, "denoising.png"),
               ["held-out", "observed, noise variance 1 (SNR 1)", "paper's modified chain",
                f"SMC, {args.particles} particles", "Gaussian baseline, exact posterior sample"])
    out["denoising"] = {name: {"rmse_grey_levels": ip.rmse_grey_levels(v, x)}
                        for name, v in (("observed", y), ("paper", paper_d), ("smc", smc_d), ("gaussian", gauss_d))}
    return out


def _draw_particle(res, rng):
    """One particle per image, drawn by its SMC weight: a sample of the posterior.  (B, D)"""
    x = to_host(res["x0"])
    return x[numpy.arange(x.shape[0]), to_host(draw_one(res["w"], rng))]


def ceilings(model):
    """What bounds ``K`` from above, bits per pixel (:mod:`numpy_diffusion.image.pixels`): the fixed first
    step at this ``beta_1`` and at the paper's, and the dequantized data's own."""
    beta_1 = model.cfg.schedule.beta_1
    return {"beta_1": beta_1, "first_step": dl.first_step_ceiling_bits(beta_1),
            "first_step_at_paper_beta_1": dl.first_step_ceiling_bits(1e-3), "data": dl.data_ceiling_bits()}


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
        on_bound = model.cfg.objective == "bound"                       # else the minibatch loss is not -K
        plots.training_curve(h[:, 0], h[:, 1], h[:, 2], os.path.join(args.out, "training.png"), target=PAPER["K"],
                             minibatch=(loss[:, 0], dl.bits_per_pixel(-loss[:, 1], data.D)) if on_bound else None)
    metrics = {**compare(res, data), "kl_bits_per_pixel_by_stratum": (res["kl_bits_by_stratum"] / data.D).tolist(),
               "strata": res["strata"].tolist(),
               "entropy_bits_per_pixel": H, "steps": trainer.step, "seconds": seconds,
               "held_out_images": len(data.x_val), "paper": PAPER, "data": data.cfg,
               "ceilings_bits_per_pixel": ceilings(model),
               "flat_neighbour_pairs": {"samples": dl.flat_neighbour_fraction(samples, s),
                                        "held_out": dl.flat_neighbour_fraction(data.x_val, s)},
               "model": model.config(), "train": asdict(trainer.cfg), "backend": trainer.xp.__name__}
    metrics.update(posteriors(trainer, data, args))
    save_json(os.path.join(args.out, "metrics.json"), metrics)
    return metrics


@guarded
def main(argv=None):
    with blas_threads(1):                  # small GEMMs: one BLAS thread each (see --shards)
        run(argv)


def run(argv):
    parser = make_parser()
    args, given = check_args(parser, argv)
    xp = check_backend(parser, args, given)
    config = prepare_run(parser, args, given, OUTPUTS, "ImageDiffusion", saved_settings, EVALUATION_ONLY)
    data = make_data(args, config)
    trainer, history = make_trainer(parser, args, given, config, xp, data)
    print(f"training on {len(data.q_train)} dead-leaves images of {data.cfg['size']} x {data.cfg['size']}: "
          f"{trainer.params.flat.size} parameters, T = {trainer.model.T}, {trainer.model.cfg.param} kernel, "
          f"batch {trainer.cfg.batch_size}, {trainer.cfg.steps} steps on {xp.__name__}", flush=True)
    train_or_exit(trainer, Progress(trainer.model, xp.asarray(data.x_val[:100]), args, history, trainer,
                                    unit="bits/pixel", per=data.D, evaluate=quick_bound, extra=data_settings(data)))
    res = evaluate_stratified(trainer.model, trainer.eval_params, xp.asarray(data.x_val),
                              numpy.random.default_rng(trainer.cfg.seed + 1), args.strata)
    metrics = write_outputs(args, trainer, data, res, trainer.seconds, history)
    report(metrics, trainer.seconds, trainer.step, len(data.x_val))
    for task in ("inpainting", "denoising"):
        print(f"  {task}: " + "; ".join(f"{k} " + ", ".join(f"{n} {v:.3g}" for n, v in d.items())
                                        for k, d in metrics[task].items()))
    print(f"wrote {', '.join(OUTPUTS)}, checkpoint.npz to {args.out}/")


if __name__ == "__main__":
    main()
