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


def figure1(times, q_samples, p_samples, drift, path, lim=2.2):
    """The paper's Figure 1 layout: forward ``q``, reverse ``p`` and the drift, at ``times``.

    Parameters
    ----------
    times : sequence of int, e.g. ``(0, T/2, T)``.
    q_samples, p_samples : dict t -> ndarray of shape (N, 2)
    drift : dict t -> (grid (M, 2), f_mu(grid, s) - grid (M, 2), s), the
        drift of step ``s`` shown in column ``t`` (``s = 2`` for ``t = 0``:
        the last step is not learned).
    """
    plt = pyplot()
    fig, axes = plt.subplots(3, len(times), figsize=(3.2 * len(times), 9.6))
    rows = (("q", q_samples), ("p", p_samples))
    for j, t in enumerate(times):
        for i, (name, samples) in enumerate(rows):
            ax = axes[i, j]
            x = samples[t]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3, color="C0" if name == "q" else "C3",
                       rasterized=True)
            ax.set_title(f"${name}(\\mathbf{{x}}^{{({t})}})$")
        ax = axes[2, j]
        grid, d, s = drift[t]
        ax.quiver(grid[:, 0], grid[:, 1], d[:, 0], d[:, 1], angles="xy", color="C2")
        ax.set_title(f"$f_\\mu(\\mathbf{{x}}^{{({s})}}, {s}) - \\mathbf{{x}}^{{({s})}}$")
        for ax in axes[:, j]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    save_figure(fig, path, plt)


def training_curve(steps, K_bits, K_stderr, path, target=None, minibatch=None):
    """Held-out bound over training (with standard errors), and the paper's number if given.

    ``minibatch``: optional ``(steps, K_bits)`` of the training estimate, smoothed.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    if minibatch is not None and len(minibatch[0]):
        s, k = minibatch
        w = max(1, len(k) // 200)
        smooth = numpy.convolve(k, numpy.ones(w) / w, mode="valid")
        ax.plot(s[w - 1:], smooth, color="0.7", lw=1, label="minibatch estimate (smoothed)")
    ax.errorbar(steps, K_bits, yerr=K_stderr, fmt="o-", ms=3, capsize=2, label="held-out K")
    if target is not None:
        ax.axhline(target, color="C3", ls="--", label=f"paper, Table 1 ({target} bits)")
    lo = min(numpy.min(K_bits) - 0.5, target - 1 if target is not None else numpy.inf)
    ax.set_ylim(max(lo, numpy.max(K_bits) - 12), None)
    ax.set_xlabel("training step")
    ax.set_ylabel("K (bits per point)")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    save_figure(fig, path, plt)


def bound_by_t(kl_bits_by_t, entropy_bits, path, t_first=2):
    """Where the bits go: the held-out KL of each reverse step and the entropy terms.

    ``kl_bits_by_t[i]`` is the KL term of ``t = t_first + i`` in bits;
    ``entropy_bits`` a dict name -> bits of the entropy terms of eq. (14).
    """
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    t = numpy.arange(t_first, t_first + len(kl_bits_by_t))
    ax.bar(t, kl_bits_by_t, color="C0")
    ax.set_xlabel("t")
    ax.set_ylabel("E KL(q(x$_{t-1}$|x$_t$,x$_0$) || p(x$_{t-1}$|x$_t$))  (bits)")
    ax.set_title(f"KL terms, total {numpy.sum(kl_bits_by_t):.2f} bits")
    names = list(entropy_bits)
    ax2.barh(names, [entropy_bits[k] for k in names], color="C1")
    ax2.set_xlabel("bits")
    ax2.set_title("entropy terms of eq. (14)")
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
