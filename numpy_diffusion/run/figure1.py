"""Figure 1 of the paper for a trained swiss-roll model: what its three rows show, computed
from the model, then drawn by :func:`.plots.figure1`.

Top row: forward samples ``q(x_t)``; middle row: reverse samples ``p(x_t)``; bottom row:
the drift ``f_mu(x_t, t) - x_t``; each at ``t = 0``, the diffusion half way
(:func:`middle_time`) and ``t = T``.  Used by ``demos/swiss_roll.py`` and ``demos/walkthrough.py``.
"""
import numpy

from ..backend import to_host
from ..datasets import swiss_roll
from ..gaussian.forward import q_sample_forward
from . import plots


def middle_time(tables, alpha_bar=0.9):
    """Figure 1's middle column: the ``t`` where ``alpha_bar_t`` is nearest 0.9.

    The roll's arms lie about 0.6 apart (standardized units); noise of standard deviation
    ``sqrt(1 - alpha_bar_t) = 0.3`` blurs them half way, as the paper's middle column
    shows.  At ``alpha_bar_t = 1/2`` (std 0.7) the roll is already gone from sight."""
    return int(numpy.argmin(numpy.abs(to_host(tables["alpha_bar"])[1:] - alpha_bar))) + 1


def drift_near_data(model, params, times, points):
    """``f_mu(x_s, s) - x_s`` at points drawn from ``q(x_s)`` (Figure 1, bottom row), keyed by ``times``.

    ``points[s]`` (M, 2) are forward samples at step ``s``: the drift is drawn where the
    network was trained.  The step ``0 <- 1`` is fixed (App. B.2), so the first column
    shows the first learned step, ``s = 2``.
    """
    drift = {}
    for t in times:
        s = max(t, 2)
        mu, _ = model.p_mean_logvar(params, points[s], s)
        drift[t] = (points[s], to_host(mu) - points[s], s)
    return drift


def draw_figure1(model, params, traj, n, seed, xp, path, n_arrows=250):
    """Forward samples ``q`` and reverse samples ``p`` at ``t = 0``, the diffusion half way
    (:func:`middle_time`) and ``T``; and the drift at forward samples.  Returns the middle ``t``.

    ``traj`` (T + 1, n, 2) is a reverse trajectory indexed by ``t`` (``traj[t]`` is ``x_t``),
    as ``model.sample(..., trajectory=True)`` returns it; ``n`` forward samples are drawn
    from ``seed``, on backend ``xp``; the figure goes to ``path`` (PNG).
    """
    tables = model.tables(params)
    T, t_mid = model.T, middle_time(tables)
    times = (0, t_mid, T)
    rng = numpy.random.default_rng(seed + 3)
    x0 = swiss_roll(n, rng)
    eps = xp.asarray(rng.standard_normal(x0.shape))

    def q_at(t):
        return x0 if t == 0 else to_host(q_sample_forward(xp.asarray(x0), xp.full(n, t), eps, tables)[0])
    q = {t: q_at(t) for t in sorted({*times, 2})}
    p = {t: to_host(traj[t]) for t in times}
    drift = drift_near_data(model, params, times, {s: q[s][:n_arrows] for s in q})
    alpha_bar = to_host(tables["alpha_bar"])
    labels = {t: f"$t = {t}$, $\\bar\\alpha_t = {alpha_bar[t]:.2f}$" for t in times[1:]}
    plots.figure1(times, q, p, drift, path, labels=labels)
    return t_mid
