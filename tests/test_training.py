"""The training loop and checkpoints, on a toy model with a known optimum.

The toy model fits the mean of its data by least squares, so a run must
converge, a NaN in the data must stop it, and a resumed run must match an
uninterrupted one bit for bit.
"""
import os

import numpy as np
import pytest

from numpy_diffusion.run.checkpoint import CheckpointError, config_path, load_checkpoint
from numpy_diffusion.run.training import TrainConfig, Trainer, TrainingDiverged


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
    with pytest.raises(TrainingDiverged, match="refusing to save non-finite"):
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
    old_json = open(config_path(good)).read()
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
