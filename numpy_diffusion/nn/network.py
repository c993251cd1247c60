"""The network of the reverse process: ``x_t, t -> (z_mu, z_Sigma)`` (App. D.1.1).

A trunk shared over time turns ``x_t`` into features ``h``; the temporal
readout (eqs. 62-63) turns ``h`` and ``t`` into ``2 D`` outputs, the first
``D`` for the mean, the last ``D`` for the variance.  Two trunks:

- ``'mlp'``: the project's default, an MLP ``D -> hidden...`` with the
  activation after every layer, optionally fed Fourier features
  ``[x, sin(x B), cos(x B)]`` of its input (``fourier > 0``);
- ``'rbf'``: the paper's own, a normalized RBF layer (16 units in the paper).

Parameters are a dict of named arrays (``trunk.*``, ``readout.W``,
``readout.b``); gradients come back keyed the same way.
"""
from dataclasses import asdict, dataclass

import numpy

from ..backend import array_module
from .layers import activation as get_activation, fourier_backward, fourier_forward, linear_backward, linear_forward
from .layers import rbf_backward, rbf_forward
from .readout import (basis, readout_backward, readout_forward, step_readout_backward,
                      step_readout_forward)
from ..validation import check_array, check_choice, check_positive_int


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


@dataclass
class NetConfig:
    """Architecture of the reverse-process network.

    Attributes
    ----------
    D : int            data dimension.
    T : int            trajectory length.
    net : str          ``'mlp'`` or ``'rbf'``.
    hidden : tuple     MLP hidden widths, or ``(units,)`` for the RBF layer.
    activation : str   MLP activation (``tanh``, ``sigmoid``, ``softplus``, ``leaky_relu``).
    basis : str        temporal basis, ``'bump'`` or ``'identity'``.
    n_bumps : int      number of bumps ``J`` for the ``'bump'`` basis.
    n_out : int        outputs per example; default ``2 D`` (mean and variance).
    fourier : int      number ``F`` of random Fourier frequencies fed to the MLP (0: none).
    fourier_scale : float  standard deviation of the frequencies ``B ~ N(0, scale^2)``.
    fourier_learned : bool whether ``B`` is trained (else fixed at its random draw).
    """
    D: int = 2
    T: int = 40
    net: str = "mlp"
    hidden: tuple = (128, 128)
    activation: str = "tanh"
    basis: str = "bump"
    n_bumps: int = 10
    n_out: int = 0
    fourier: int = 0
    fourier_scale: float = 6.0
    fourier_learned: bool = False

    def __post_init__(self):
        check_positive_int("D", self.D)
        check_positive_int("T", self.T, 2)
        check_choice("net", self.net, ("mlp", "rbf"))
        check_choice("basis", self.basis, ("bump", "identity"))
        self.hidden = tuple(check_positive_int("hidden width", h) for h in self.hidden)
        if not self.hidden:
            raise ValueError("hidden must name at least one layer width")
        if self.net == "rbf" and len(self.hidden) != 1:
            raise ValueError(f"the rbf trunk has one layer; give hidden=(units,), got {self.hidden}")
        check_positive_int("n_bumps", self.n_bumps)
        check_positive_int("fourier", self.fourier, 0)
        if self.fourier and self.net != "mlp":
            raise ValueError("Fourier features feed the mlp trunk only; set fourier=0 for net='rbf'")
        self.n_out = 2 * self.D if not self.n_out else check_positive_int("n_out", self.n_out)

    def to_dict(self):
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def temporal_basis(cfg, xp=numpy, dtype=numpy.float64):
    """The readout's basis matrix ``G`` of shape ``(T + 1, J)`` for this config;
    ``None`` for the identity basis, whose readout gathers each example's step."""
    if cfg.basis == "identity":
        return None
    return basis(cfg.basis, cfg.T, cfg.n_bumps, dtype=dtype, xp=xp)


def n_basis(cfg):
    """Number ``J`` of temporal basis functions."""
    return cfg.T if cfg.basis == "identity" else cfg.n_bumps


def init_network(cfg, rng, dtype=numpy.float64):
    """Initial parameters (host arrays).  The readout starts at zero, so an
    untrained network outputs ``z = 0``: the reverse kernel starts where its
    parameterization puts ``z = 0`` (the forward kernel for ``'reference'``; see
    :mod:`reverse_process`)."""
    params = {}
    width = cfg.hidden[-1]
    if cfg.net == "mlp":
        d_in = cfg.D + 2 * cfg.fourier
        params.update(init_mlp((d_in,) + cfg.hidden, rng, dtype, prefix="trunk."))
        if cfg.fourier:
            B = cfg.fourier_scale * rng.standard_normal((cfg.D, cfg.fourier))
            params["trunk.fourier_B"] = B.astype(dtype)
    else:
        params["trunk.centres"] = rng.standard_normal((width, cfg.D)).astype(dtype)
        params["trunk.log_width"] = numpy.full(width, numpy.log(0.5), dtype=dtype)
    J = n_basis(cfg)
    params["readout.W"] = numpy.zeros((width, J, cfg.n_out), dtype=dtype)
    params["readout.b"] = numpy.zeros((J, cfg.n_out), dtype=dtype)
    return params


def network_forward(params, xt, t, cfg, G, ws=None):
    """``z = net(x_t, t)``.

    Parameters
    ----------
    params : mapping of name -> ndarray
    xt : ndarray of shape (N, D)
    t : int ndarray of shape (N,), values in ``1..T``
    cfg : NetConfig
    G : ndarray of shape (T + 1, J), from :func:`temporal_basis` (unused by
        the identity basis, which gathers each example's step instead).
    ws : Workspace, optional
        Arrays for the large intermediates, reused from step to step
        (:mod:`~numpy_diffusion.workspace`); ``None`` allocates afresh.

    Returns
    -------
    z : ndarray of shape (N, n_out); for Gaussian diffusion ``z[:, :D]`` is
        ``z_mu`` and ``z[:, D:]`` is ``z_Sigma``.
    cache
    """
    check_array("x_t", xt, shape=(None, cfg.D))
    if cfg.net == "mlp":
        feats, fourier_cache = xt, None
        if cfg.fourier:
            feats, fourier_cache = fourier_forward(xt, params["trunk.fourier_B"], ws)
        h, mlp_cache = mlp_forward(params, feats, cfg.activation, True, "trunk.", ws)
        trunk_cache = (fourier_cache, mlp_cache)
    else:
        h, trunk_cache = rbf_forward(xt, params["trunk.centres"], params["trunk.log_width"])
    if cfg.basis == "identity":
        z, read_cache = step_readout_forward(h, t, params["readout.W"], params["readout.b"])
    else:
        z, read_cache = readout_forward(h, t, params["readout.W"], params["readout.b"], G, ws)
    return z, (trunk_cache, read_cache, cfg)


def network_backward(dz, cache, need_dxt=True, ws=None):
    """Backward pass: returns ``(grads, dxt)``; ``dxt`` (N, D) feeds the gradient
    with respect to the diffusion rates through ``x_t`` (§2.4.1).

    With ``need_dxt`` false (a fixed schedule) the MLP trunk skips the gradient
    with respect to its input, one GEMM of the first layer, and the Fourier
    layer's backward unless its frequencies are learned; ``dxt`` may then be ``None``.
    ``ws`` is the forward pass's workspace, if it had one.
    """
    trunk_cache, read_cache, cfg = cache
    if cfg.basis == "identity":
        dh, dW, db = step_readout_backward(dz, read_cache)
    else:
        dh, dW, db = readout_backward(dz, read_cache, ws)
    if cfg.net == "mlp":
        fourier_cache, mlp_cache = trunk_cache
        learn_B = fourier_cache is not None and cfg.fourier_learned
        grads, dxt = mlp_backward(dh, mlp_cache, need_dxt or learn_B, ws)
        if fourier_cache is not None:
            dxt, grads["trunk.fourier_B"] = _fourier_grads(dxt, fourier_cache, learn_B, ws)
    else:
        dxt, dc, dlw = rbf_backward(dh, trunk_cache)
        grads = {"trunk.centres": dc, "trunk.log_width": dlw}
    grads["readout.W"], grads["readout.b"] = dW, db
    return grads, dxt


def _fourier_grads(dfeats, cache, learn_B, ws=None):
    """``(dxt, dB)`` through the Fourier features; ``dB`` is zero for fixed frequencies,
    and with no upstream gradient (``dfeats is None``) nothing is computed."""
    dxt, dB = (None, None) if dfeats is None else fourier_backward(dfeats, cache, ws, learn_B)
    return dxt, dB if learn_B else array_module(cache[1]).zeros_like(cache[1])
