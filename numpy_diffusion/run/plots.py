"""Pictures for the demos (matplotlib, imported only here and only when called).

Every function takes host arrays and a path, draws one figure and writes it
atomically as PNG.  Nothing here computes model quantities.
"""
import io

import numpy

from .checkpoint import atomic_write


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no screen needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, plt):
    """Write ``fig`` to ``path`` as PNG, atomically, and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def _round_length(x):
    """A round number (1, 2 or 5 times a power of ten) at most ``x``, for an arrow key."""
    e = 10.0 ** numpy.floor(numpy.log10(x))
    return max(m * e for m in (1, 2, 5) if m * e <= x)


def figure1(times, q_samples, p_samples, drift, path, lim=2.2, labels=None, arrow=0.3):
    """The paper's Figure 1 layout: forward ``q``, reverse ``p`` and the drift, at ``times``.

    Parameters
    ----------
    times : sequence of int, e.g. ``(0, t_half, T)``.
    q_samples, p_samples : dict t -> ndarray of shape (N, 2)
    drift : dict t -> (points (M, 2), f_mu(points, s) - points (M, 2), s): the drift of
        step ``s`` shown in column ``t``, at points drawn from ``q(x_s)`` (``s = 2`` for
        ``t = 0``: the last step is not learned).
    labels : dict t -> str, a note under column ``t``'s top title (e.g. its ``alpha_bar_t``).
    arrow : float, the length in data units of the row's typical arrow.

    The drift row has one arrow scale, with a key in each panel.  A panel whose drift is
    more than 5 times smaller than the row's largest is magnified by a power of ten, said
    in its title and its key (the first learned step moves a point by about ``sqrt(beta_2)``).
    """
    plt = pyplot()
    fig, axes = plt.subplots(3, len(times), figsize=(3.2 * len(times), 10.2))
    typical = {t: float(numpy.percentile(numpy.hypot(*drift[t][1].T), 90)) for t in times}
    row = max(typical.values())                                           # drift of one arrow length
    for j, t in enumerate(times):
        note = f"\n{labels[t]}" if labels and t in labels else ""
        for i, (name, samples) in enumerate((("q", q_samples), ("p", p_samples))):
            x = samples[t]
            axes[i, j].scatter(x[:, 0], x[:, 1], s=1, alpha=0.3, color="C0" if name == "q" else "C3",
                               rasterized=True)
            axes[i, j].set_title(f"${name}(\\mathbf{{x}}^{{({t})}})$" + (note if i == 0 else ""))
        ax = axes[2, j]
        points, d, s = drift[t]
        gain = 10.0 ** max(1, round(numpy.log10(row / typical[t]))) if row > 5 * typical[t] > 0 else 1.0
        scale = row / (gain * arrow)                                      # drift units per data unit
        ax.scatter(points[:, 0], points[:, 1], s=2, color="0.8", rasterized=True)
        Q = ax.quiver(points[:, 0], points[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy",
                      scale=scale, color="C2", width=0.006)
        key = _round_length(row / gain)
        ax.quiverkey(Q, 0.62, 0.04, key, f"{key:g}", labelpos="E", coordinates="axes", fontproperties={"size": 8})
        mag = f" (arrows $\\times 10^{{{round(numpy.log10(gain))}}}$)" if gain != 1 else ""
        ax.set_title(f"$f_\\mu(\\mathbf{{x}}^{{({s})}}, {s}) - \\mathbf{{x}}^{{({s})}}$" + mag, fontsize=10)
        for a in axes[:, j]:
            a.set_xlim(-lim, lim)
            a.set_ylim(-lim, lim)
            a.set_aspect("equal")
            a.set_xticks([])
            a.set_yticks([])
    save_figure(fig, path, plt)


def training_curve(steps, K_bits, K_stderr, path, target=None, minibatch=None, final=None):
    """Held-out bound over training (with standard errors), and the paper's number if given.

    ``minibatch``: optional ``(steps, K_bits)`` of the training estimate, smoothed.
    ``final``: optional ``(step, K_bits, stderr, n_points)``, the final evaluation the run
    reports, drawn as the curve's last point and labelled with its value.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if minibatch is not None and len(minibatch[0]):
        s, k = minibatch
        w = max(1, len(k) // 200)
        smooth = numpy.convolve(k, numpy.ones(w) / w, mode="valid")
        ax.plot(s[w - 1:], smooth, color="0.7", lw=1, label="minibatch estimate (smoothed)")
    ax.errorbar(steps, K_bits, yerr=K_stderr, fmt="o-", ms=3, capsize=2, color="C0", label="held-out K")
    shown = numpy.asarray(K_bits, dtype=float)
    if final is not None:
        step, K, se, n = final
        if len(steps):
            ax.plot([steps[-1], step], [K_bits[-1], K], "-", color="C0")
        ax.errorbar([step], [K], yerr=[se], fmt="D", ms=6, capsize=3, color="C0",
                    label=f"final held-out K, {n:,} points: {K:.3f} ± {se:.3f}")
        shown = numpy.append(shown, K)
    if target is not None:
        ax.axhline(target, color="C3", ls="--", label=f"paper, Table 1 ({target} bits)")
    lo = min(numpy.min(shown) - 0.5, target - 1 if target is not None else numpy.inf)
    ax.set_ylim(max(lo, numpy.max(shown) - 12), None)
    ax.set_xlabel("training step")
    ax.set_ylabel("K (bits per point)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    save_figure(fig, path, plt)


def bound_by_t(kl_bits_by_t, entropy_bits, path, t_first=2):
    """Where the bits go: the held-out KL of each reverse step and the entropy terms, with their values.

    ``kl_bits_by_t[i]`` is the KL term of ``t = t_first + i`` in bits;
    ``entropy_bits`` a dict name -> bits of the entropy terms of eq. (14), signed as they enter ``K``.
    """
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 1.3]})
    t = numpy.arange(t_first, t_first + len(kl_bits_by_t))
    kl_total, entropy_total = float(numpy.sum(kl_bits_by_t)), float(sum(entropy_bits.values()))
    ax.bar(t, kl_bits_by_t, color="C0")
    ax.set_xlabel("t")
    ax.set_ylabel("E KL(q(x$_{t-1}$|x$_t$,x$_0$) || p(x$_{t-1}$|x$_t$))  (bits)")
    ax.set_title(f"KL terms, total {kl_total:.2f} bits;  K = {entropy_total:+.2f} - {kl_total:.2f} "
                 f"= {entropy_total - kl_total:+.2f} bits")
    names = list(entropy_bits)
    values = [entropy_bits[k] for k in names]
    bars = ax2.barh(names, values, color="C1")
    ax2.bar_label(bars, labels=[f"{v:+.2f}" for v in values], padding=3, fontsize=9)
    ax2.axvline(0, color="0.3", lw=0.8)
    span = max(abs(v) for v in values)
    ax2.set_xlim(min(0, min(values)) - 0.45 * span, max(0, max(values)) + 0.45 * span)
    ax2.set_xlabel("bits")
    ax2.set_title(f"entropy terms of eq. (14): {entropy_total:+.2f}")
    fig.tight_layout()
    save_figure(fig, path, plt)


def _first_pulse_aligned(x):
    """Each row rolled left so that its first 1 sits in column 0 (rows of zeros unchanged)."""
    first = numpy.where(x.any(axis=1), numpy.argmax(x > 0.5, axis=1), 0)       # (n,)
    cols = (numpy.arange(x.shape[1])[None, :] + first[:, None]) % x.shape[1]
    return numpy.take_along_axis(x, cols, axis=1)


def heartbeat_samples(data, samples, path, n=40, title=None):
    """Binary sequences as image rows, like the paper's Figure 2: training data,
    samples from ``p``, and the same samples shifted so that each one's first
    pulse is in column 0 (an exact heartbeat then reads as columns 0, 5, 10, 15).

    Parameters
    ----------
    data, samples : host ndarray of shape (N, length), 0s and 1s; the first ``n`` rows are drawn.
    title : str or None, a line above the panels (e.g. the exact-heartbeat fraction).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.5))
    panels = (("training data", data), ("samples from p", samples),
              ("samples, first pulse in column 0", _first_pulse_aligned(samples[:n])))
    for ax, (name, x) in zip(axes, panels):
        ax.imshow(x[:n], cmap="gray_r", interpolation="nearest", aspect="auto", vmin=0, vmax=1)
        ax.set_title(name)
        ax.set_xlabel("bin")
        ax.set_ylabel("sequence")
    if title:
        fig.suptitle(title)
    save_figure(fig, path, plt)
