"""The networks of the reverse process, composed from the layers (App. D.1.1).

:func:`network_forward` / :func:`network_backward` is a forward/backward pair
like the layers, but over a dict of parameters, whose gradient is a dict with
the same keys.  It maps ``x_t, t -> z``.  A trunk
shared over time turns ``x_t`` into features ``h``; the temporal readout
(eqs. 62-63) turns ``h`` and ``t`` into the outputs, for Gaussian diffusion
``z = [z_mu, z_Sigma]``.  Two trunks: ``'mlp'`` (:mod:`mlp`), the project's default,
optionally fed Fourier features ``[x, sin(x B), cos(x B)]`` of its input, and
``'rbf'``, the paper's normalized RBF layer.

:class:`Network` packages a configuration and its temporal basis for the
models, which see every network (this one, or the image network) through the
same three methods: ``init_params``, ``forward``, ``backward``.
"""
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy

from ..backend import array_module
from ..validation import check_array, check_choice, check_positive_int
from .layers import fourier_backward, fourier_forward, rbf_backward, rbf_forward
from .mlp import init_mlp, mlp_backward, mlp_forward
from .readout import basis, readout_backward, readout_forward, step_readout_backward, step_readout_forward


@dataclass
class NetConfig:
    """Architecture of the reverse-process network.

    Attributes
    ----------
    D : int            data dimension.
    T : int            trajectory length.
    net : str          ``'mlp'`` or ``'rbf'``.
    hidden : tuple     MLP hidden widths, or ``(units,)`` for the RBF layer.
    activation : str   MLP activation (``tanh``, ``sigmoid``, ``softplus``, ``leaky_relu``, ``silu``).
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
        self.hidden = tuple(check_positive_int("hidden width", width) for width in self.hidden)
        if not self.hidden:
            raise ValueError("hidden must name at least one layer width")
        if self.net == "rbf" and len(self.hidden) != 1:
            raise ValueError(f"the rbf trunk has one layer; give hidden=(units,), got {self.hidden}")
        check_positive_int("n_bumps", self.n_bumps)
        check_positive_int("fourier", self.fourier, 0)
        if not (isinstance(self.fourier_scale, (int, float)) and math.isfinite(self.fourier_scale)
                and self.fourier_scale > 0):
            raise ValueError(f"fourier_scale must be a finite number > 0, got {self.fourier_scale!r}")
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
    :mod:`numpy_diffusion.gaussian.reverse`)."""
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


class NetworkCache(NamedTuple):
    fourier: object                           # FourierCache, or None without Fourier features
    trunk: object                             # MLPCache or RBFCache
    readout: object                           # ReadoutCache or StepReadoutCache
    cfg: object                               # the NetConfig


def network_forward(xt, t, params, cfg, G):
    """``z = net(x_t, t)``.

    Parameters
    ----------
    xt : ndarray of shape (N, D)
    t : int ndarray of shape (N,), values in ``1..T``
    params : mapping of name -> ndarray
    cfg : NetConfig
    G : ndarray of shape (T + 1, J), from :func:`temporal_basis` (unused by
        the identity basis, whose fast readout gathers each example's step).

    Returns
    -------
    z : ndarray of shape (N, n_out); for Gaussian diffusion ``z[:, :D]`` is
        ``z_mu`` and ``z[:, D:]`` is ``z_Sigma``.
    cache : NetworkCache
    """
    check_array("x_t", xt, shape=(None, cfg.D))
    fourier_cache = None
    if cfg.net == "rbf":
        h, trunk_cache = rbf_forward(xt, params["trunk.centres"], params["trunk.log_width"])   # (N, H)
    else:
        feats = xt
        if cfg.fourier:
            feats, fourier_cache = fourier_forward(xt, params["trunk.fourier_B"])        # (N, D + 2F)
        h, trunk_cache = mlp_forward(feats, params, activation=cfg.activation, activate_last=True,
                                     prefix="trunk.")                                   # (N, H)
    W, b = params["readout.W"], params["readout.b"]
    if cfg.basis == "identity":
        z, read_cache = step_readout_forward(h, t, W, b)                                # (N, n_out)
    else:
        z, read_cache = readout_forward(h, t, W, b, G)                                  # (N, n_out)
    return z, NetworkCache(fourier_cache, trunk_cache, read_cache, cfg)


def network_backward(dz, cache, *, need_dxt=True):
    """Gradients ``(dxt, dparams)``, ``dparams`` keyed like the parameters; ``dxt`` (N, D)
    carries the gradient with respect to the diffusion rates through ``x_t`` (§2.4.1).

    With ``need_dxt=False`` (a fixed schedule) the MLP skips the gradient with respect
    to its input, one GEMM of the first layer, and the Fourier layer's backward unless
    its frequencies are learned; ``dxt`` may then be ``None``.  Fixed frequencies get a
    zero gradient, so that the optimizer leaves them where they are.
    """
    fourier_cache, trunk_cache, read_cache, cfg = cache
    backward = step_readout_backward if cfg.basis == "identity" else readout_backward
    dh, dW, db = backward(dz, read_cache)
    if cfg.net == "rbf":
        dxt, dcentres, dlog_width = rbf_backward(dh, trunk_cache)
        dparams = {"trunk.centres": dcentres, "trunk.log_width": dlog_width}
    else:
        learn_B = fourier_cache is not None and cfg.fourier_learned
        dxt, dparams = mlp_backward(dh, trunk_cache, need_dx=need_dxt or learn_B)
        if fourier_cache is not None:
            dB = None
            if dxt is not None:
                dxt, dB = fourier_backward(dxt, fourier_cache, need_dB=learn_B)
            dparams["trunk.fourier_B"] = dB if learn_B else array_module(dh).zeros_like(fourier_cache.B)
    dparams["readout.W"], dparams["readout.b"] = dW, db
    return dxt, dparams


class Network:
    """A :class:`NetConfig` with its temporal basis: the network as a model uses it.

    ``forward(xt, t, params) -> (z, cache)`` and ``backward(dz, cache, *, need_dxt)
    -> (dxt, dparams)`` are :func:`network_forward` / :func:`network_backward`; the
    basis ``G`` is made once per backend and dtype.
    """

    def __init__(self, cfg):
        self.cfg = NetConfig(**cfg) if isinstance(cfg, dict) else cfg
        self._G = {}

    def init_params(self, rng, dtype=numpy.float64):
        return init_network(self.cfg, rng, dtype)

    def basis(self, xp, dtype):
        """The temporal basis ``G`` (T + 1, J) on backend ``xp`` in ``dtype`` (None: identity)."""
        key = (xp.__name__, numpy.dtype(dtype).str)
        if key not in self._G:
            self._G[key] = temporal_basis(self.cfg, xp, dtype)
        return self._G[key]

    def forward(self, xt, t, params):
        W = params["readout.W"]
        return network_forward(xt, t, params, self.cfg, self.basis(array_module(W), W.dtype))

    def backward(self, dz, cache, *, need_dxt=True):
        return network_backward(dz, cache, need_dxt=need_dxt)

    def to_dict(self):
        return self.cfg.to_dict()
