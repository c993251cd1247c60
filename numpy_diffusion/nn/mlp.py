"""A multilayer perceptron composed from the layers, as one forward/backward pair.

The activation follows every linear layer but the last, and the last too when
``activate_last`` is set (a trunk of features rather than an output layer).
Parameters live in a dict of named arrays, weights ``{prefix}W{i}`` (I, O) and
biases ``{prefix}b{i}`` (O,); the gradient comes back as a dict with the same keys.
"""
from typing import NamedTuple

import numpy

from ..validation import check_positive_int
from .layers import activation as get_activation, linear_backward, linear_forward


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


class MLPCache(NamedTuple):
    linear: list                              # one LinearCache per layer
    act: list                                 # one activation cache per layer, None where none applied
    activation: str
    prefix: str


def mlp_forward(x, params, *, activation="tanh", activate_last=False, prefix="mlp."):
    """``x`` (N, sizes[0]) -> ``out`` (N, sizes[-1]) through every layer ``{prefix}W{i}``;
    returns ``(out, MLPCache)``."""
    act_forward, _ = get_activation(activation)
    L = n_layers(params, prefix)
    linear, act = [], []
    for i in range(L):
        x, lin_cache = linear_forward(x, params[f"{prefix}W{i}"], params[f"{prefix}b{i}"])
        act_cache = None
        if i < L - 1 or activate_last:
            x, act_cache = act_forward(x)
        linear.append(lin_cache)
        act.append(act_cache)
    return x, MLPCache(linear, act, activation, prefix)


def mlp_backward(dout, cache, *, need_dx=True):
    """Gradients ``(dx, dparams)``, ``dparams`` keyed like the parameters.  With
    ``need_dx=False`` the input gradient (one GEMM) is skipped and ``dx`` is ``None``."""
    _, act_backward = get_activation(cache.activation)
    dparams, prefix = {}, cache.prefix
    for i in reversed(range(len(cache.linear))):
        if cache.act[i] is not None:
            dout = act_backward(dout, cache.act[i])
        dout, dparams[f"{prefix}W{i}"], dparams[f"{prefix}b{i}"] = linear_backward(
            dout, cache.linear[i], need_dx=need_dx or i > 0)
    return dout, dparams
