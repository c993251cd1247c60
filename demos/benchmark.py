"""Time the default swiss-roll model (training steps, sampling) and the default dead-leaves
image model (training steps), one JSON object per line.

    python demos/benchmark.py                   # batches 1,024, 4,096, 16,384; 10,000 samples;
                                                # image batches 32 and 128
    python demos/benchmark.py --quick           # a short run, to check that it works
    python demos/benchmark.py --no-image        # the swiss-roll model only
    python demos/benchmark.py --backend cupy    # the same on a GPU

A training step is what :meth:`Trainer.train_step` does: draw data, ``t`` and ``eps``,
forward, bound, backward (split over ``shards`` threads), Adam.  ``page_faults_per_step``
counts the timed steps' minor page faults (near 0 once the trainer has raised the
allocator's thresholds: both in ``numpy_diffusion/run/speed.py``).  ``ms_per_step`` is
the median over the timed steps after a warm-up.  Each line carries the architecture, so the same model can be built
elsewhere, and the step's GEMM arithmetic: ``gemm_flops_per_example`` counts only the
matrix products a step needs, and ``gemm_fraction`` is the rate they run at over the
machine's own float32 matmul rate, measured in the same run (``what: "matmul"``).
BLAS threads are set by the environment (``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS``).

The image lines (``what: "image_train_step"``) time the same step for the model
``demos/dead_leaves.py`` trains by default (16 x 16 images, its widths and scales, its
kernel parameterization, learning rate and EMA), built the way that demo builds it:
one shard per usable core (at most one per image) and BLAS held to one thread, since
these matrix products are too small to share.  The images are drawn from a pool of
``IMAGE_POOL`` dead-leaves images, dequantized afresh each step as in the demo (the
pool's size does not change a step's cost).  ``gemm_flops_per_example`` is then
:func:`image_gemm_flops_per_example`, and ``gemm_fraction`` the same ratio to the
matmul rate measured with the environment's BLAS threads (by default one per core:
the cores the shards share).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy

from numpy_diffusion.backend import BackendError, get_backend
from numpy_diffusion.datasets import swiss_roll
from numpy_diffusion.gaussian.model import swiss_roll_model
from numpy_diffusion.image import dead_leaves as dl
from numpy_diffusion.image.model import image_model
from numpy_diffusion.image.network import ImageNetConfig
from numpy_diffusion.run.speed import blas_threads, usable_cores
from numpy_diffusion.run.loop import TrainConfig
from numpy_diffusion.run.training import Trainer

BATCHES = (1024, 4096, 16384)
IMAGE_BATCHES = (32, 128)            # the dead-leaves demo's batch, and four times it
IMAGE_POOL = 1024                    # training images the image steps draw from


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default: $NUMPY_DIFFUSION_BACKEND or numpy)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="network precision")
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES), help="training batch sizes")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per batch size")
    p.add_argument("--shards", type=int, default=0,
                   help="threads a step splits its batch over (0: the trainer's choice, see run/speed.py; "
                        "for the image model one per usable core, as its demo chooses)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--n-samples", type=int, default=10_000, help="points to sample through all T steps")
    p.add_argument("--repeats", type=int, default=3, help="timed sampling runs (median)")
    p.add_argument("--image-batches", type=int, nargs="+", default=list(IMAGE_BATCHES),
                   help="training batch sizes of the dead-leaves image model")
    p.add_argument("--no-image", action="store_true", help="skip the image model's training steps")
    p.add_argument("--no-demo", action="store_true", help="skip the demo's peak-memory run")
    p.add_argument("--quick", action="store_true", help="a short run: fewer steps, smaller sizes")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.steps, args.warmup = [1024, 4096], 5, 2
        args.n_samples, args.repeats, args.no_demo = 2000, 1, True
    return args


def synchronize(xp):
    """Wait for queued device work, so that a timer read afterwards counts it (CuPy only)."""
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()


def median_ms(fn, xp, repeats, warmup=0):
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(xp)
        start = time.perf_counter()
        fn()
        synchronize(xp)
        times.append(1e3 * (time.perf_counter() - start))
    return float(numpy.median(times))


def peak_rss_mb():
    """Peak resident memory of this process so far, MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def architecture(cfg):
    """What another framework needs to build the same model."""
    net = cfg.net
    d_in = net.D + 2 * net.fourier
    return {"layer_sizes": [d_in, *net.hidden, net.n_out], "activation": net.activation,
            "fourier_features": net.fourier, "fourier_scale": net.fourier_scale,
            "readout_basis": net.basis, "readout_basis_size": net.T if net.basis == "identity" else net.n_bumps,
            "T": net.T, "param": cfg.param, "learn_beta": cfg.schedule.learn}


def gemm_flops_per_example(cfg):
    """Multiply-add FLOPs (2 per multiply-add) of the matrix products of one training step, per example.

    Forward: Fourier ``x B``, each trunk layer, the readout.  Backward: each layer's
    ``dW`` and ``dx`` (the first layer's ``dx`` and the Fourier ``dx`` only when the
    schedule or the frequencies are learned, ``dB`` only for learned frequencies),
    the readout's ``dW`` and ``dh``.
    """
    net = cfg.net
    sizes = [net.D + 2 * net.fourier, *net.hidden]
    layers = [i * o for i, o in zip(sizes[:-1], sizes[1:])]
    need_input_grad = cfg.schedule.learn or (net.fourier and net.fourier_learned)
    J = 1 if net.basis == "identity" else net.n_bumps                 # identity: one W_t per example
    readout = net.hidden[-1] * J * net.n_out
    fourier = net.D * net.fourier
    forward = fourier + sum(layers) + readout
    backward = sum(layers) + sum(layers[1:]) + 2 * readout
    if need_input_grad:
        backward += layers[0] + fourier * (2 if net.fourier_learned else 1)     # dx; dB if B is learned
    return 2 * (forward + backward)


def image_gemm_flops_per_example(cfg):
    """Multiply-add FLOPs (2 per multiply-add) of the image network's matrix products in one
    training step, per example, counted from the layer shapes.

    With ``P = sum_s (size / 2^s)^2`` pixels over the ``S`` scales of a multi-scale
    layer, ``HW = size^2`` and ``k`` the kernel side, each product is
    ``rows x inner x columns`` multiply-adds:

    - a multi-scale convolution ``C_in -> O``, as im2col and one GEMM at each scale:
      forward ``P k^2 C_in O``; backward the same again for ``dW = cols^T dout`` and
      again for ``dx`` (a convolution of ``dout`` with the flipped kernel), except in
      the first layer, whose ``dx`` a fixed schedule does not need;
    - each layer of the dense pathway, if any, ``D -> n_hidden_dense -> ... -> HW c_d``:
      forward ``C_in O`` per image; backward ``dW``, and ``dx`` for every layer but the first;
      without convolutions and dense pathway, the first 1 x 1 layer reads the image and
      needs no ``dx`` either;
    - each 1 x 1 layer and the map to the ``2 C J`` temporal coefficients ``C_in -> O``:
      forward ``HW C_in O``; backward ``dW``, and ``dx`` for every layer but the first;
    - the per-pixel readout (eq. 62), ``HW 2C`` dot products of length ``J`` forward,
      and its transpose (``dy = dz g(t)^T``, a broadcast product) backward.

    With a learned schedule the first layer's ``dx`` counts too.  Not counted: the
    im2col copies, pooling and upsampling, the nonlinearities and the diffusion's
    element-wise terms, none of which is a matrix product.  (At the default, 16 x 16
    and 3 scales: ``P = 336``; the three 20 -> 20 multi-scale layers are 94% of the count.)
    """
    net, learn = cfg.net, cfg.schedule.learn
    HW, k2, C, J = net.size ** 2, net.kernel ** 2, net.channels, net.n_temporal_basis
    P = sum((net.size >> s) ** 2 for s in range(net.n_scales))
    conv_in = ([C] + [net.n_hidden_conv] * net.n_layers_conv)[:net.n_layers_conv]
    convs = [P * k2 * c_in * net.n_hidden_conv for c_in in conv_in]
    whole = net.dense_widths
    whole_image = [c_in * c_out for c_in, c_out in zip(whole, whole[1:])]   # the dense pathway
    widths = [net.pixel_features] + [net.n_hidden_pixel] * net.n_layers_pixel
    pointwise = [HW * c_in * c_out for c_in, c_out in zip(widths, widths[1:] + [2 * C * J])]
    # the layers reading x_t alone: the first convolution, the dense pathway's first layer, and
    # without either the first 1 x 1 layer (or the coefficient map), which then reads the pixels
    first = (convs[:1] or ([] if whole_image else pointwise[:1])) + whole_image[:1]
    layers = convs + whole_image + pointwise
    readout = HW * 2 * C * J
    forward = sum(layers) + readout
    backward = 2 * sum(layers) - sum(first) + readout                 # dW for all; dx all but the first
    if learn:
        backward += sum(first)
    return 2 * (forward + backward)


def matmul_gflops(xp, dtype, n, repeats):
    """The machine's float matmul rate, GFLOP/s, from ``xp.matmul`` on two ``n x n`` matrices."""
    rng = numpy.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((n, n)), dtype=dtype) for _ in range(2))
    ms = median_ms(lambda: xp.matmul(a, b), xp, repeats, warmup=1)
    return 2 * n ** 3 / (ms * 1e6)


def make_trainer(batch, xp, dtype="float32", seed=0, shards=0):
    """A trainer of the default swiss-roll model, as ``demos/swiss_roll.py`` builds it."""
    cfg = TrainConfig(steps=10 ** 9, batch_size=batch, dtype=dtype, seed=seed, shards=shards)
    return Trainer(swiss_roll_model(), lambda n, rng: swiss_roll(n, rng), cfg, xp)


def time_steps(trainer, args, xp, rate, flops):
    """Median ms per training step after a warm-up, page faults per step, and the GEMM rate
    they imply: the record's common keys."""
    for _ in range(args.warmup):
        trainer.train_step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = median_ms(trainer.train_step, xp, args.steps)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / args.steps
    batch = trainer.cfg.batch_size
    return {"batch": batch, "ms_per_step": ms, "samples_per_s": batch / ms * 1e3,
            "shards": trainer.cfg.shards, "page_faults_per_step": faults,
            "gemm_flops_per_example": flops, "gemm_gflops": flops * batch / (ms * 1e6),
            "gemm_fraction": flops * batch / (ms * 1e6) / rate, "n_params": int(trainer.params.flat.size)}


def bench_training(batch, args, xp, rate):
    trainer = make_trainer(batch, xp, args.dtype, shards=args.shards)
    cfg = trainer.model.cfg
    return {"what": "train_step", **time_steps(trainer, args, xp, rate, gemm_flops_per_example(cfg)),
            **architecture(cfg)}


def make_image_trainer(batch, xp, dtype="float32", seed=0, shards=0):
    """A trainer of the default dead-leaves model, as ``demos/dead_leaves.py`` builds it with its
    default options: 16 x 16 images (discs of radius 1 to 16), :class:`ImageNetConfig`'s widths and
    scales, bumps spaced in ``log t``, ``t`` drawn log-uniformly, the bounded kernel with
    ``beta_1 = 1e-3``, learning rate 3e-3, EMA 0.999, one shard per usable core; images from a
    pool of ``IMAGE_POOL``."""
    net = ImageNetConfig(size=16, bump_spacing="log")
    model = image_model(net, beta_1=1e-3, param="bounded", t_sampling="log-uniform")
    q = dl.dead_leaves(IMAGE_POOL, net.size, numpy.random.default_rng(seed))
    data = lambda n, rng: dl.dequantize(q[rng.integers(0, len(q), n)], rng)          # noqa: E731
    shards = shards or (min(usable_cores(), batch) if xp.__name__ == "numpy" else 1)
    cfg = TrainConfig(steps=10 ** 9, batch_size=batch, lr=3e-3, seed=seed, dtype=dtype, shards=shards,
                      ema_decay=0.999, warmup=200)
    return Trainer(model, data, cfg, xp)


def bench_image_training(batch, args, xp, rate):
    with blas_threads(1):                  # as the demo runs: one BLAS thread per shard
        trainer = make_image_trainer(batch, xp, args.dtype, shards=args.shards)
        cfg = trainer.model.cfg
        timed = time_steps(trainer, args, xp, rate, image_gemm_flops_per_example(cfg))
    return {"what": "image_train_step", **timed, **cfg.net.to_dict(), "param": cfg.param,
            "learn_beta": cfg.schedule.learn}


def bench_sampling(args, xp):
    trainer = make_trainer(args.n_samples, xp, args.dtype)
    model, params = trainer.model, trainer.eval_params
    rng = numpy.random.default_rng(1)
    ms = median_ms(lambda: model.sample(params, args.n_samples, rng), xp, args.repeats, warmup=1)
    T = model.T
    return {"what": "sample", "batch": args.n_samples, "ms_per_step": ms / T, "ms_total": ms,
            "samples_per_s": args.n_samples / ms * 1e3, **architecture(model.cfg)}


# Run the demo in a child that reports its own peak memory.  On Linux the child's
# ru_maxrss (and RUSAGE_CHILDREN) inherit the parent's high-water mark across
# fork and exec, so the child reads VmHWM, its own address space's peak, instead.
_PEAK_WRAPPER = """
import resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
try:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print("PEAK_KB", hwm)
except OSError:
    print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def bench_demo_memory():
    """Peak resident memory of the default demo, run briefly in a child process, MB."""
    demo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swiss_roll.py")
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, demo, "--steps", "50", "--eval-every",
                               "50", "--out", out], check=True, capture_output=True, text=True,
                              env={**os.environ, "MPLBACKEND": "Agg"})
        seconds = time.perf_counter() - start
    peak_kb = int(done.stdout.split("PEAK_KB")[-1].split()[0])
    return {"what": "demo_peak_memory", "command": "demos/swiss_roll.py --steps 50 --eval-every 50",
            "peak_rss_mb": peak_kb / 1024, "seconds": seconds}


def main(argv=None):
    args = parse_args(argv)
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        sys.exit(f"error: {err}")
    common = {"dtype": args.dtype, "backend": xp.__name__,
              "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
              or "default", "cpu_count": os.cpu_count()}
    n = 1024 if args.quick else 2048
    rate = matmul_gflops(xp, "float32", n, 3 if args.quick else 7)
    emit = lambda rec: print(json.dumps({**rec, **common, "peak_rss_mb": round(peak_rss_mb(), 1)}),  # noqa: E731
                             flush=True)
    emit({"what": "matmul", "batch": n, "float32_gflops": rate})
    for batch in args.batches:
        emit(bench_training(batch, args, xp, rate))
    emit(bench_sampling(args, xp))
    if not args.no_image:
        for batch in args.image_batches:
            emit(bench_image_training(batch, args, xp, rate))
    if not args.no_demo:
        print(json.dumps({**bench_demo_memory(), **common}), flush=True)


if __name__ == "__main__":
    main()
