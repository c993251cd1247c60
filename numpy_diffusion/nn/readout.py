"""Temporal readout (App. D.2.1, eqs. 62-63; the per-step readout of App. D.1.1).

Features ``h`` shared over time are mapped to per-time outputs through a basis
``g_j(t)`` over the time index:

    out_n = sum_j g_j(t_n) (h_n W_j + b_j)                     # eqs. (62)-(63)

Two bases: Gaussian bumps in ``t`` (or in ``log t``, ``spacing='log'``) normalized
over ``j`` (smooth in time), and
the identity basis ``g_j(t) = [j = t - 1]`` (``j`` 0-based), the paper's
readout learned separately for each time step (App. D.1.1, D.1.2).  Basis matrices have shape ``(T + 1, J)`` so
that row ``t`` is ``g(t)`` in the paper's 1-based time; row 0 is unused.
"""
from typing import NamedTuple

import numpy

from ..backend import array_module, to_host
from ..validation import check_choice, check_positive_int

SPACINGS = ("linear", "log")


def bump_basis(T, J, width=None, dtype=numpy.float64, spacing="linear"):
    """Gaussian bumps over ``t = 1..T``, normalized over ``j`` (eq. 63).

    ``spacing='linear'`` (the paper's): centres ``tau_j`` evenly spaced on
    ``[1, T]``, both ends included (the paper says only ``tau_j in (0, T)``), bumps
    Gaussian in ``t`` with ``w`` the spacing of the centres.  ``spacing='log'``: the same formula in
    ``s = log t``, centres evenly spaced on ``[0, log T]``; as many bumps cover
    ``t = 1..10`` as ``t = 100..1000``.

    Why ``'log'``: the reverse kernel must change fastest where the noise level
    does.  On the reference schedule (``1 - alpha_bar_t ≈ t / T``) the log
    signal-to-noise ratio ``log((T - t) / t)`` falls by about 4 from ``t = 2`` to
    ``113`` (one linear bump's width at ``T = 1000``, ``J = 10``) but by 0.45 from
    ``500`` to ``611``; linear bumps give ``t = 2..50``, where half of the image
    bound's KL sum lies, nearly the same mix of readouts.

    ``width`` defaults to the spacing of the centres; given, it is in the same
    variable (``t``, or ``log t``).  Returns a host array of shape ``(T + 1, J)``.
    """
    T, J = check_positive_int("T", T, 2), check_positive_int("J", J)
    check_choice("spacing", spacing, SPACINGS)
    s = numpy.arange(T + 1, dtype=numpy.float64)                      # t, row 0 unused
    if spacing == "log":
        s = numpy.log(numpy.maximum(s, 1.0))                          # log t
    tau = numpy.linspace(s[1], s[T], J)                               # (J,)
    width = (s[T] - s[1]) / max(J - 1, 1) if width is None else float(width)
    logits = -0.5 * ((s[:, None] - tau) / width) ** 2                 # (T+1, J)
    G = numpy.exp(logits - logits.max(axis=1, keepdims=True))
    return (G / G.sum(axis=1, keepdims=True)).astype(dtype)


def identity_basis(T, dtype=numpy.float64):
    """One-hot basis ``g_j(t) = [j = t - 1]``: a readout per time step.  Shape ``(T + 1, T)``."""
    T = check_positive_int("T", T, 2)
    G = numpy.zeros((T + 1, T), dtype=dtype)
    G[numpy.arange(1, T + 1), numpy.arange(T)] = 1
    return G


class ReadoutCache(NamedTuple):
    h: object                                 # (N, H) features, for dW
    W: object                                 # (H, J, O) weights, for dh
    g: object                                 # (N, J) each example's basis row g(t_n)


def readout_forward(h, t, W, b, G):
    """Per-example time-dependent readout.

    Parameters
    ----------
    h : ndarray of shape (N, H)
        Features shared over time.
    t : int ndarray of shape (N,)
        Each example's time step, ``1..T``.
    W : ndarray of shape (H, J, O)
        One weight matrix per basis function.
    b : ndarray of shape (J, O)
    G : ndarray of shape (T + 1, J)
        Temporal basis, row ``t`` is ``g(t)``.

    Returns
    -------
    out : ndarray of shape (N, O)
    cache : ReadoutCache
    """
    H, J, O = W.shape
    if h.ndim != 2 or h.shape[1] != H or b.shape != (J, O) or G.shape[1] != J \
            or t.shape != h.shape[:1]:
        raise ValueError(f"readout: h {tuple(h.shape)}, t {tuple(t.shape)}, W {tuple(W.shape)}, "
                         f"b {tuple(b.shape)}, G {tuple(G.shape)} do not fit; need h (N, H), "
                         "t (N,), W (H, J, O), b (J, O), G (T+1, J)")
    g = G[t]                                                          # g_j(t_n)      (N, J)
    hW = (h @ W.reshape(H, J * O)).reshape(-1, J, O)                  # h_n W_j       (N, J, O)
    out = (g[:, None, :] @ hW)[:, 0] + g @ b                          # eq. (62): sum over j  (N, O)
    return out, ReadoutCache(h, W, g)


def readout_backward(dout, cache):
    """Gradients ``(dh, dW, db)`` of the readout.

    The weight gradient is one GEMM over the outer products ``g(t_n) dout_n``,
    so examples sharing a time step need no scatter-add.
    """
    h, W, g = cache
    H, J, O = W.shape
    dhW = (g[:, :, None] @ dout[:, None, :]).reshape(-1, J * O)      # d out/d(h W_j) = g_j  (N, J*O)
    dW = (h.T @ dhW).reshape(H, J, O)                                 # d(h W_j)/dW_j = h     (H, J, O)
    dh = dhW @ W.reshape(H, J * O).T                                  # d(h W_j)/dh = W_j     (N, H)
    db = g.T @ dout                                                   # d out/db_j = g_j      (J, O)
    return dh, dW, db


def _runs(t, T):
    """Examples grouped by time step: ``order`` sorts them by ``t`` (stably), and
    each ``(k, start, end)`` says that ``order[start:end]`` are the examples at step
    ``k + 1``.  Only the ``T`` run lengths come to the host, to drive the loop."""
    xp = array_module(t)
    order = xp.argsort(t, kind="stable")                              # (N,)
    counts = to_host(xp.bincount(t - 1, minlength=T)).tolist()        # examples per step
    ends = numpy.cumsum(counts).tolist()
    return order, [(k, e - n, e) for k, (n, e) in enumerate(zip(counts, ends)) if n]


class StepReadoutCache(NamedTuple):
    h_sorted: object                          # (N, H) features in step order
    W: object                                 # (H, T, O) weights
    order: object                             # (N,) the permutation that sorts examples by t
    runs: list                                # (k, start, end): rows of step k + 1 in sorted order


def step_readout_forward(h, t, W, b):
    """Readout learned separately for each time step: the identity basis, by grouping.

    The fast form of :func:`readout_forward` with :func:`identity_basis` (the plain
    reference, tested equal to it); it costs
    ``O(N H O)`` instead of ``O(N H T O)``, which matters for long chains
    (``T = 2000`` in the binary experiment).  Examples are sorted by time step
    so that each step present in the batch is one GEMM ``h_run W_t``.

    Parameters
    ----------
    h : ndarray of shape (N, H)
    t : int ndarray of shape (N,), values ``1..T``
    W : ndarray of shape (H, T, O)
        ``W[:, t - 1]`` is step ``t``'s weight matrix.
    b : ndarray of shape (T, O)

    Returns
    -------
    out : ndarray of shape (N, O)
    cache : StepReadoutCache
    """
    H, T, O = W.shape
    if h.ndim != 2 or h.shape[1] != H or b.shape != (T, O) or t.shape != h.shape[:1]:
        raise ValueError(f"step readout: h {tuple(h.shape)}, t {tuple(t.shape)}, W {tuple(W.shape)}, "
                         f"b {tuple(b.shape)} do not fit; need h (N, H), t (N,), W (H, T, O), b (T, O)")
    xp = array_module(h)
    order, runs = _runs(t, T)
    h_sorted = h[order]                                               # (N, H)
    out_sorted = xp.empty((h.shape[0], O), dtype=xp.result_type(h, W))
    for k, start, end in runs:
        out_sorted[start:end] = h_sorted[start:end] @ W[:, k] + b[k]  # eq. (62), g = one-hot at t
    out = xp.empty_like(out_sorted)
    out[order] = out_sorted                                           # back to batch order
    return out, StepReadoutCache(h_sorted, W, order, runs)


def step_readout_backward(dout, cache):
    """Gradients ``(dh, dW, db)`` of the per-step readout.

    With the examples in step order, each step's weight gradient is one GEMM
    over its run, ``h_run^T dout_run``, written once: no scatter-add.
    """
    h_sorted, W, order, runs = cache
    xp = array_module(h_sorted)
    d_sorted = dout[order]                                            # (N, O)
    dh_sorted, dW, db = xp.empty_like(h_sorted), xp.zeros_like(W), xp.zeros_like(W[0])
    for k, start, end in runs:
        d_run = d_sorted[start:end]
        dW[:, k] = h_sorted[start:end].T @ d_run                      # d out/dW_t = h     (H, O)
        db[k] = d_run.sum(axis=0)                                     # d out/db_t = 1     (O,)
        dh_sorted[start:end] = d_run @ W[:, k].T                      # d out/dh = W_t     (run, H)
    dh = xp.empty_like(dh_sorted)
    dh[order] = dh_sorted                                             # back to batch order
    return dh, dW, db


def basis(kind, T, J=None, dtype=numpy.float64, xp=numpy):
    """A temporal basis by name: ``'bump'`` (``J`` bumps) or ``'identity'``, as an ``xp`` array."""
    if kind == "bump":
        G = bump_basis(T, J if J is not None else 10, dtype=dtype)
    elif kind == "identity":
        G = identity_basis(T, dtype=dtype)
    else:
        raise ValueError(f"unknown temporal basis {kind!r}; allowed: bump, identity")
    return xp.asarray(G)
