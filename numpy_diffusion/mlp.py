"""A multilayer perceptron composed from the layers of :mod:`layers`.

Parameters live in a dict of named arrays ``{prefix}W{i}`` (shape ``(I, O)``)
and ``{prefix}b{i}`` (shape ``(O,)``) — in practice views into one flat vector
(:class:`numpy_diffusion.optim.ParamVector`).  The MLP applies the activation
after every linear layer but the last, and after the last too when
``activate_last`` is set (a trunk of features rather than an output layer).
"""
import numpy

from .layers import activation as get_activation, linear_backward, linear_forward
from .validation import check_positive_int


def init_mlp(sizes, rng, dtype=numpy.float64, prefix="mlp."):
    """Glorot-uniform weights and zero biases for layer widths ``sizes``.

    Parameters
    ----------
    sizes : sequence of int
        ``(input, hidden..., output)``, at least two entries, each ``>= 1``.
    rng : numpy.random.Generator
    dtype : numpy dtype

    Returns
    -------
    dict of host ndarrays, ``{prefix}W{i}`` of shape ``(sizes[i], sizes[i+1])``
    and ``{prefix}b{i}`` of shape ``(sizes[i+1],)``.
    """
    sizes = [check_positive_int("layer size", s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {sizes}")
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        limit = numpy.sqrt(6.0 / (n_in + n_out))
        params[f"{prefix}W{i}"] = rng.uniform(-limit, limit, (n_in, n_out)).astype(dtype)
        params[f"{prefix}b{i}"] = numpy.zeros(n_out, dtype=dtype)
    return params


def n_layers(params, prefix="mlp."):
    """Number of linear layers stored under ``prefix``."""
    i = 0
    while f"{prefix}W{i}" in params:
        i += 1
    if i == 0:
        raise KeyError(f"no MLP weights named {prefix!r}W0 in the parameters")
    return i


def mlp_forward(params, x, activation="tanh", activate_last=False, prefix="mlp.", ws=None):
    """Forward pass.  ``x`` has shape (N, sizes[0]); returns ``(out, cache)``, out (N, sizes[-1]).
    ``ws``: an optional :class:`~numpy_diffusion.workspace.Workspace` for the layers' outputs."""
    act_forward, _ = get_activation(activation)
    L = n_layers(params, prefix)
    caches = []
    for i in range(L):
        x, lin_cache = linear_forward(x, params[f"{prefix}W{i}"], params[f"{prefix}b{i}"], ws)
        act_cache = None
        if i < L - 1 or activate_last:
            x, act_cache = act_forward(x, ws)
        caches.append((lin_cache, act_cache))
    return x, (caches, activation, prefix)


def mlp_backward(dout, cache, need_dx=True, ws=None):
    """Backward pass: returns ``(grads, dx)``, grads keyed like the parameters.
    With ``need_dx`` false the input gradient (one GEMM) is skipped and ``dx`` is ``None``."""
    caches, activation, prefix = cache
    _, act_backward = get_activation(activation)
    grads = {}
    for i in reversed(range(len(caches))):
        lin_cache, act_cache = caches[i]
        if act_cache is not None:
            dout = act_backward(dout, act_cache, ws)
        dout, grads[f"{prefix}W{i}"], grads[f"{prefix}b{i}"] = linear_backward(
            dout, lin_cache, need_dx or i > 0, ws)
    return grads, dout
