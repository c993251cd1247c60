"""Speed outside the formulas (:mod:`numpy_diffusion.run.speed`): sharded steps and the allocator.

A step split over threads must compute the whole batch's loss and gradient (up
to rounding, in float64 to 1e-12), a fixed shard count must reproduce a run bit
for bit, and raising the allocator's thresholds must change no number.
"""
import platform

import numpy as np
import pytest
from hypothesis import given, strategies as st

from numpy_diffusion.datasets import swiss_roll
from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
from numpy_diffusion.nn.network import NetConfig
from numpy_diffusion.run.speed import (auto_shards, blas_control, blas_threads, raise_malloc_thresholds,
                                       shard_slices)
from numpy_diffusion.gaussian.schedule import ScheduleConfig
from numpy_diffusion.run.loop import TrainConfig
from numpy_diffusion.run.training import Trainer


def swiss_model():
    """The default model's shape, small: Fourier features, bump readout, learned schedule."""
    sched = ScheduleConfig(T=10, beta_1=1e-7, baseline="logsnr", learn=True, learned_form="decrements")
    return GaussianDiffusion(ModelConfig(net=NetConfig(T=10, hidden=(16, 16), n_bumps=4, fourier=8,
                                                       fourier_scale=3.0), schedule=sched))


def trainer(shards, dtype="float64", batch=64, seed=0):
    cfg = TrainConfig(steps=10, batch_size=batch, seed=seed, dtype=dtype, shards=shards, warmup=0)
    return Trainer(swiss_model(), lambda n, rng: swiss_roll(n, rng), cfg)


@given(N=st.integers(1, 500), shards=st.integers(1, 9))
def test_shard_slices_cover_the_batch_evenly(N, shards):
    slices = shard_slices(N, shards)
    sizes = [s.stop - s.start for s in slices]
    assert len(slices) == shards and slices[0].start == 0 and slices[-1].stop == N
    assert all(a.stop == b.start for a, b in zip(slices[:-1], slices[1:]))
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("shards", [2, 3, 7])
def test_sharded_loss_and_gradient_equal_the_whole_batch(shards):
    """Uneven shards too (64 rows in 3 or 7): each is weighted by its size."""
    whole, split = trainer(1), trainer(shards)
    moved = whole.params.flat + 0.1 * np.random.default_rng(5).standard_normal(whole.params.flat.shape)
    whole.params.flat[...] = split.params.flat[...] = moved     # off the zero readout: all paths carry gradient
    rng = np.random.default_rng(1)
    batch = (swiss_roll(64, rng), *whole.model.draw(rng, 64))
    loss_whole, loss_split = whole.loss_and_grads(batch), split.loss_and_grads(batch)
    assert loss_split == pytest.approx(loss_whole, rel=1e-12)
    np.testing.assert_allclose(split.grads.flat, whole.grads.flat, rtol=1e-10, atol=1e-13)
    assert np.abs(whole.grads.flat).max() > 1e-3


def test_a_sharded_run_is_reproducible_bit_for_bit():
    a, b = trainer(2, "float32", seed=3), trainer(2, "float32", seed=3)
    a.run(), b.run()
    assert np.array_equal(a.params.flat, b.params.flat) and a.losses == b.losses


def test_shard_count_is_resolved_and_saved(tmp_path):
    t = trainer(0, batch=64)
    assert t.cfg.shards == auto_shards(64) >= 1
    t.run(until=2)
    t.save(tmp_path / "ck.npz")
    resumed, config = Trainer.resume(tmp_path / "ck.npz", lambda d: GaussianDiffusion(ModelConfig.from_dict(d)),
                                     lambda n, rng: swiss_roll(n, rng))
    assert config["train"]["shards"] == resumed.cfg.shards == t.cfg.shards


def test_shard_config_errors():
    with pytest.raises(ValueError, match="shards must be an integer >= 0, got -1"):
        TrainConfig(shards=-1)
    with pytest.raises(ValueError, match=r"shards \(9\) must not exceed batch_size \(8\)"):
        TrainConfig(batch_size=8, shards=9)


def test_auto_shards_is_one_per_core_and_never_tiny():
    assert auto_shards(1) == 1
    assert auto_shards(10 ** 6) <= 8
    assert auto_shards(1023) == 1 and auto_shards(4096) >= 1


@pytest.mark.skipif(blas_control() is None, reason="BLAS threads cannot be controlled here")
def test_blas_threads_are_held_and_restored():
    get, set_ = blas_control()
    before = get()
    with blas_threads(1):
        assert get() == 1
    assert get() == before


def assert_allocator_changes_nothing(model, params, x0, drawn):
    """The same loss and gradients before and after the allocator's thresholds are raised,
    bit for bit, two steps running (the second reusing the first's freed memory)."""
    loss, grads = model.loss_and_grads(params, x0, *drawn)
    raise_malloc_thresholds()
    for _ in range(2):
        loss_again, grads_again = model.loss_and_grads(params, x0, *drawn)
        assert loss_again == loss and all(np.array_equal(grads_again[k], grads[k]) for k in grads)


def test_allocator_thresholds_change_nothing():
    model = swiss_model()
    rng = np.random.default_rng(2)
    params = {k: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype)
              for k, v in model.init_params(rng, np.float32).items()}
    assert_allocator_changes_nothing(model, params, swiss_roll(50, rng), model.draw(rng, 50))


def test_allocator_thresholds_take_effect_on_glibc_and_do_nothing_elsewhere():
    took = raise_malloc_thresholds()
    assert took is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_bad_data_in_a_shard_stops_the_step_with_the_models_error():
    """An error raised inside a worker thread reaches the caller unchanged, and BLAS threads are restored."""
    before = blas_control()[0]() if blas_control() else None

    def poisoned(n, rng):
        x = swiss_roll(n, rng)
        x[-1, 0] = np.nan                                  # in the last shard
        return x
    t = Trainer(swiss_model(), poisoned, TrainConfig(steps=3, batch_size=64, shards=2, dtype="float64"))
    with pytest.raises(ValueError, match="NaN"):
        t.train_step()
    assert t.step == 0
    if before is not None:
        assert blas_control()[0]() == before


@pytest.mark.parametrize("basis", ["bump", "identity"])
def test_allocator_changes_nothing_in_the_binomial_model(basis):
    from numpy_diffusion.binomial.model import BinomialDiffusion
    model = BinomialDiffusion(D=6, T=12, pi=0.25, hidden=(7, 5), basis=basis, n_bumps=4)
    rng = np.random.default_rng(3)
    params = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in model.init_params(rng).items()}
    x0 = (rng.random((40, 6)) < 0.3).astype(np.float64)
    assert_allocator_changes_nothing(model, params, x0, model.draw(rng, 40))
