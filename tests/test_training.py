"""The training loop and checkpoints, on a toy model with a known optimum.

The toy model fits the mean of its data by least squares, so a run must
converge, a NaN in the data must stop it, and a resumed run must match an
uninterrupted one bit for bit.
"""
import fcntl
import os
from pathlib import Path

import numpy as np
import pytest

from numpy_diffusion.run.checkpoint import (TMP_PREFIX, CheckpointError, atomic_write, config_path,
                                            load_checkpoint, remove_stale_temporaries)
from numpy_diffusion.run.loop import TrainConfig, train_plain
from numpy_diffusion.run.training import EXPLOSION_STEPS, Trainer, TrainingDiverged


class MeanModel:
    """loss = mean ||x0 - m||^2 / 2 plus a random-probe term, so the RNG matters."""

    def init_params(self, rng, dtype):
        return {"m": rng.standard_normal(3).astype(dtype)}

    def draw(self, rng, N):
        return (rng.standard_normal((N, 3)) * 0.01,)

    def loss_and_grads(self, params, x0, noise):
        r = params["m"] - (x0 + noise)
        return 0.5 * float((r * r).sum(1).mean()), {"m": r.mean(0)}

    def config(self):
        return {"kind": "mean"}

    @classmethod
    def from_config(cls, d):
        return cls()


def data(n, rng):
    return rng.standard_normal((n, 3)) + np.array([1.0, -2.0, 3.0])


def test_converges():
    cfg = TrainConfig(steps=600, batch_size=64, lr=0.05, seed=0, dtype="float64", warmup=0)
    trainer = Trainer(MeanModel(), data, cfg)
    trainer.run()
    np.testing.assert_allclose(trainer.params["m"], [1, -2, 3], atol=0.05)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_plain_loop_and_the_trainer_with_one_shard_agree_bit_for_bit(dtype):
    """``train_plain`` and ``Trainer`` draw the same random stream in the same order and do
    the same arithmetic (one shard: the gradient is copied, not weighted), so a small
    swiss-roll model with a learned schedule ends with the same bytes, loss by loss."""
    from numpy_diffusion.datasets import swiss_roll
    from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
    from numpy_diffusion.gaussian.schedule import ScheduleConfig
    from numpy_diffusion.nn.network import NetConfig
    net = NetConfig(D=2, T=10, hidden=(16, 16), n_bumps=3, fourier=4, fourier_scale=3.0)
    sched = ScheduleConfig(T=10, beta_1=1e-4, baseline="logsnr", learn=True, learned_form="decrements")
    model = GaussianDiffusion(ModelConfig(net=net, schedule=sched))
    cfg = TrainConfig(steps=12, batch_size=32, lr=1e-2, warmup=3, seed=7, dtype=dtype, shards=1)
    theta, losses = train_plain(model, swiss_roll, cfg)
    trainer = Trainer(model, swiss_roll, cfg)
    trainer.run()
    assert theta.flat.tobytes() == trainer.params.flat.tobytes()
    assert losses == [loss for _, loss in trainer.losses]
    assert not np.array_equal(theta["readout.W"], 0) and "schedule.w" in theta      # it did train


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_is_exact(tmp_path, ema):
    cfg = TrainConfig(steps=40, batch_size=8, lr=0.01, seed=3, dtype="float64", ema_decay=ema)
    straight = Trainer(MeanModel(), data, cfg)
    straight.run()
    first = Trainer(MeanModel(), data, cfg)
    first.run(until=17)
    first.save(tmp_path / "ck.npz")
    resumed, config = Trainer.resume(tmp_path / "ck.npz", MeanModel.from_config, data)
    assert config["step"] == 17 and resumed.step == 17
    resumed.run()
    assert np.array_equal(resumed.params.flat, straight.params.flat)          # bit for bit
    assert np.array_equal(resumed.opt.m, straight.opt.m)
    if ema:
        assert np.array_equal(resumed.ema.flat, straight.ema.flat)
    assert resumed.losses == straight.losses


def test_divergence_names_the_step_and_keeps_the_checkpoint(tmp_path):
    def poisoned(n, rng):
        x = data(n, rng)
        if poisoned.calls == 12:
            x[0, 0] = np.nan
        poisoned.calls += 1
        return x
    poisoned.calls = 0
    cfg = TrainConfig(steps=30, batch_size=4, lr=0.01, seed=0, dtype="float64")
    trainer = Trainer(MeanModel(), poisoned, cfg)
    trainer.run(until=10)
    path = tmp_path / "ck.npz"
    trainer.save(path)
    before = path.read_bytes()
    with pytest.raises(TrainingDiverged, match="diverged at step 13"):
        trainer.run()
    assert np.isfinite(trainer.params.flat).all()          # the bad step was not applied
    assert path.read_bytes() == before                     # nothing saved was lost
    trainer.params.flat[0] = np.nan
    with pytest.raises(TrainingDiverged, match="step 12: the parameters are not finite"):
        trainer.save(path)
    assert path.read_bytes() == before


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(CheckpointError, match="carries no valid configuration"):
        load_checkpoint(tmp_path / "foreign.npz")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]   # no temp files left


def test_checkpoint_keeps_its_config_through_a_crash_between_writes(tmp_path):
    """A crash after the .npz and before the .json leaves a loadable, consistent checkpoint."""
    cfg = TrainConfig(steps=3, batch_size=4, seed=0, dtype="float64")
    trainer = Trainer(MeanModel(), data, cfg)
    trainer.run(until=1)
    good = tmp_path / "good.npz"
    trainer.save(good)
    old_json = Path(config_path(good)).read_text()
    trainer.run()
    trainer.save(good)
    with open(config_path(good), "w") as f:            # as if the second .json write never happened
        f.write(old_json)
    arrays, config = load_checkpoint(good)
    assert config["step"] == int(arrays["step"]) == 3
    with open(config_path(good), "w") as f:            # the readable copy is not needed at all
        f.write("{not json")
    assert load_checkpoint(good)[1]["step"] == 3
    mode = os.stat(good).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask                      # not mkstemp's 0600


def test_config_errors():
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        TrainConfig(dtype="float16")


def test_gaussian_model_divergence_keeps_the_last_good_checkpoint(tmp_path):
    """The real model: an overflowing network stops training at the step it happened."""
    from numpy_diffusion.datasets import swiss_roll
    from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
    from numpy_diffusion.nn.network import NetConfig
    model = GaussianDiffusion(ModelConfig(net=NetConfig(T=8, hidden=(8,), n_bumps=3)))
    cfg = TrainConfig(steps=20, batch_size=16, seed=1, dtype="float32")
    trainer = Trainer(model, lambda n, rng: swiss_roll(n, rng), cfg)
    trainer.run(until=5)
    path = tmp_path / "checkpoint.npz"
    trainer.save(path)
    before = path.read_bytes()
    trainer.params["readout.W"][...] = 3e38                # float32 outputs overflow to inf
    with pytest.raises(TrainingDiverged, match="training diverged at step 6: the (loss|gradient) is not finite"):
        trainer.run()
    assert trainer.step == 5 and path.read_bytes() == before


def test_gaussian_model_resume_is_exact(tmp_path):
    """The swiss-roll model with a learned schedule and EMA: 6 steps, or 3 + save + load + 3."""
    from numpy_diffusion.datasets import swiss_roll
    from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
    from numpy_diffusion.nn.network import NetConfig
    from numpy_diffusion.gaussian.schedule import ScheduleConfig
    cfg_model = ModelConfig(net=NetConfig(T=8, hidden=(8,), n_bumps=3, fourier=4),
                            schedule=ScheduleConfig(T=8, beta_1=1e-7, baseline="logsnr", learn=True,
                                                    learned_form="decrements"))
    cfg = TrainConfig(steps=6, batch_size=32, seed=4, dtype="float32", ema_decay=0.5, warmup=2)
    data_fn = lambda n, rng: swiss_roll(n, rng)
    straight = Trainer(GaussianDiffusion(cfg_model), data_fn, cfg)
    straight.run()
    first = Trainer(GaussianDiffusion(cfg_model), data_fn, cfg)
    first.run(until=3)
    first.save(tmp_path / "ck.npz")
    resumed, _ = Trainer.resume(tmp_path / "ck.npz", lambda d: GaussianDiffusion(ModelConfig.from_dict(d)),
                                data_fn)
    resumed.run()
    assert resumed.params.flat.dtype == np.float32
    assert np.array_equal(resumed.params.flat, straight.params.flat)          # bit for bit
    assert np.array_equal(resumed.ema.flat, straight.ema.flat)
    assert resumed.losses == straight.losses


class RisingModel(MeanModel):
    """loss = -sum(m): finite for any finite m, so Adam walks m up by about lr a step."""

    def loss_and_grads(self, params, x0, noise, workspace=None):
        return -float(params["m"].sum()), {"m": -np.ones_like(params["m"])}


def test_non_finite_parameters_after_a_step_stop_the_run():
    cfg = TrainConfig(steps=20, batch_size=4, lr=1e39, seed=0, dtype="float32", warmup=0,
                      lr_schedule="constant")
    trainer = Trainer(RisingModel(), data, cfg)
    with pytest.raises(TrainingDiverged, match="at step 1: the parameters are not finite after the Adam"):
        trainer.run()                                        # an update of 1e39 overflows float32
    assert trainer.step == 0 and trainer.losses == []


def test_a_loss_far_beyond_its_best_stops_the_run_at_the_step_it_left(tmp_path):
    """MeanModel at lr 1e6 jumps to losses ~1e12 after its first step and never comes back."""
    cfg = TrainConfig(steps=50, batch_size=8, lr=1e6, seed=0, dtype="float64", warmup=0)
    trainer = Trainer(MeanModel(), data, cfg)
    with pytest.raises(TrainingDiverged, match="at step 2: the minibatch loss went far beyond its best") as err:
        trainer.run()
    assert err.value.step == 2
    assert trainer.step == EXPLOSION_STEPS                   # the step that proved it was not applied


def test_healthy_spikes_do_not_stop_a_run():
    """One batch in ten carries an outlier a thousand times the data's scale: heavy-tailed,
    independent minibatch losses, as a healthy run has them."""
    def spiky(n, rng):
        x = data(n, rng)
        if rng.random() < 0.1:
            x[0] *= 1e3
        return x
    cfg = TrainConfig(steps=300, batch_size=4, lr=0.01, seed=0, dtype="float64")
    trainer = Trainer(MeanModel(), spiky, cfg)
    trainer.run()
    losses = np.array([l for _, l in trainer.losses])
    assert losses.max() > 100 * abs(losses[0]) + 100 * abs(losses.min())   # spikes far beyond the best


def test_held_out_loss_far_beyond_the_best_is_divergence():
    cfg = TrainConfig(steps=30, batch_size=8, lr=0.05, seed=0, dtype="float64", warmup=0)
    trainer = Trainer(MeanModel(), data, cfg)
    trainer.run()
    trainer.check_loss(trainer.losses[-1][1])                # a healthy value passes
    with pytest.raises(TrainingDiverged, match="at step 30: the held-out loss went far beyond"):
        trainer.check_loss(1e9)
    with pytest.raises(TrainingDiverged, match="at step 30: the held-out loss is not finite"):
        trainer.check_loss(float("nan"))


def test_seconds_count_the_whole_run_over_resumes(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, seed=0, dtype="float64")
    trainer = Trainer(MeanModel(), data, cfg)
    trainer.run(until=3)
    trainer.seconds += 100.0                                 # as if the first part took 100 s
    trainer.save(tmp_path / "ck.npz")
    resumed, _ = Trainer.resume(tmp_path / "ck.npz", MeanModel.from_config, data)
    assert resumed.seconds == trainer.seconds
    resumed.run()
    assert resumed.seconds > trainer.seconds


def test_resume_refuses_another_model_and_fewer_steps(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, seed=0, dtype="float64")
    trainer = Trainer(MeanModel(), data, cfg)
    trainer.run()
    trainer.save(tmp_path / "ck.npz")
    with pytest.raises(CheckpointError, match="holds a MeanModel model, not the BinomialDiffusion model"):
        Trainer.resume(tmp_path / "ck.npz", MeanModel.from_config, data, model_class="BinomialDiffusion")
    with pytest.raises(ValueError, match=r"steps \(4\) lies below the checkpoint's step \(6\)"):
        Trainer.resume(tmp_path / "ck.npz", MeanModel.from_config, data, steps=4)
    resumed, _ = Trainer.resume(tmp_path / "ck.npz", MeanModel.from_config, data, model_class=MeanModel)
    assert resumed.step == 6


def test_stale_temporaries_of_dead_writers_are_removed_and_nothing_else(tmp_path):
    atomic_write(tmp_path / "a.npz", lambda f: f.write(b"a"))
    stale = tmp_path / f"{TMP_PREFIX}12345-abcdefgh-checkpoint.npz"  # a writer killed mid-write
    live = tmp_path / f"{TMP_PREFIX}12346-abcd_fgh-checkpoint.json"
    others = [tmp_path / n for n in (".tmp-abcdefghcheckpoint.npz", f"{TMP_PREFIX}x-abcdefgh-a", "b.npz")]
    for p in [stale, live, *others]:
        p.write_bytes(b"x")
    (tmp_path / f"{TMP_PREFIX}1-abcdefgh-link").symlink_to(tmp_path / "b.npz")
    with open(live, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)                        # its writer still writes
        assert remove_stale_temporaries(tmp_path) == [stale.name]
    assert remove_stale_temporaries(tmp_path) == [live.name]
    assert sorted(os.listdir(tmp_path)) == sorted(["a.npz", f"{TMP_PREFIX}1-abcdefgh-link"]
                                                  + [p.name for p in others])
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_learned_schedule_leaving_the_unit_interval_is_divergence(tmp_path):
    """The default swiss-roll schedule form: one huge coefficient makes every other decrement
    of log SNR underflow to 0, so beta_t = 0; the trainer reports divergence, not a ValueError."""
    from numpy_diffusion.datasets import swiss_roll
    from numpy_diffusion.gaussian.model import GaussianDiffusion, ModelConfig
    from numpy_diffusion.gaussian.schedule import ScheduleConfig
    from numpy_diffusion.nn.network import NetConfig
    cfg_model = ModelConfig(net=NetConfig(T=8, hidden=(8,), n_bumps=3),
                            schedule=ScheduleConfig(T=8, beta_1=1e-7, baseline="logsnr", learn=True,
                                                    learned_form="decrements"))
    trainer = Trainer(GaussianDiffusion(cfg_model), lambda n, rng: swiss_roll(n, rng),
                      TrainConfig(steps=10, batch_size=16, seed=0, dtype="float64"))
    trainer.run(until=3)
    path = tmp_path / "checkpoint.npz"
    trainer.save(path)
    before = path.read_bytes()
    trainer.params["schedule.w"][0] = 1e4
    with pytest.raises(TrainingDiverged, match="at step 3: with these parameters the learned schedule leaves"):
        trainer.save(path)
    with pytest.raises(TrainingDiverged, match="at step 4: the learned schedule left"):
        trainer.run()
    assert trainer.step == 3 and path.read_bytes() == before
