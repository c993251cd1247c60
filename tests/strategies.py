"""Shared Hypothesis strategies: small shapes, bounded float64 values, seeds.

Strategies stay away from points where a function is not differentiable
(leaky ReLU's kink at 0) instead of loosening tolerances.
"""
import numpy as np
from hypothesis import strategies as st

from numpy_diffusion.gaussian.schedule import ScheduleConfig

seeds = st.integers(0, 2**32 - 1)
batch = st.integers(1, 6)
width = st.integers(1, 7)
dims = st.integers(1, 4)
times = st.integers(2, 12)


def rng_from(seed):
    return np.random.default_rng(seed)


@st.composite
def arrays(draw, shape, scale=2.0, away_from_zero=0.0):
    """Float64 arrays of ``shape`` with entries in ``[-scale, scale]``, drawn from a seed.

    ``away_from_zero`` keeps every entry at least that far from 0 (for kinks).
    """
    rng = rng_from(draw(seeds))
    x = rng.uniform(-scale, scale, shape)
    if away_from_zero:
        x = np.sign(x + (x == 0)) * (away_from_zero + np.abs(x))
    return x


@st.composite
def layer_sizes(draw, min_layers=1, max_layers=3):
    """MLP widths ``(input, hidden..., output)``."""
    n = draw(st.integers(min_layers, max_layers))
    return tuple(draw(width) for _ in range(n + 1))


parameterizations = st.sampled_from(["paper", "reference", "bounded", "eps"])


def fixed_schedules(max_T=40):
    """Fixed schedules of every baseline but the log-SNR one, ``T`` in ``2..max_T``."""
    return st.builds(ScheduleConfig, T=st.integers(2, max_T), beta_1=st.sampled_from([1e-6, 1e-5, 1e-3]),
                     baseline=st.sampled_from(["reference", "geometric", "linear"]),
                     beta_T=st.floats(0.05, 0.9))


# every schedule configuration, fixed or learned in either form
schedule_configs = st.builds(
    ScheduleConfig,
    T=st.integers(2, 60),
    beta_1=st.sampled_from([1e-6, 1e-5, 1e-3, 0.05]),
    baseline=st.sampled_from(["reference", "geometric", "linear", "logsnr"]),
    beta_T=st.floats(0.05, 0.9),
    log_snr_T=st.floats(-6.0, -1.0),
    learn=st.booleans(),
    learned_form=st.sampled_from(["bumps", "decrements"]),
    n_bumps=st.integers(1, 8))
