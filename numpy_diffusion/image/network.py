"""The image network of App. D.2.1 (Fig. D.1): ``x_t, t -> z = [z_mu, z_Sigma]``.

    x_t (N, D) -> image (N, H, W, C)
      -> multi-scale convolution + soft ReLU, ``n_layers_conv`` times   (N, H, W, n_hidden_conv)
      [beside it, optional: the dense pathway on the whole image vector
       x_t (N, D) -> linear + tanh, ``n_layers_global`` times           (N, n_hidden_global)
         -> linear + tanh to ``n_global_channels`` per pixel             (N, H, W, n_global_channels)
       joined to the convolutions' channels                             (N, H, W, n_hidden_conv + n_global_channels)]
      -> 1 x 1 convolution + tanh, ``n_layers_dense`` times             (N, H, W, n_hidden_dense)
      -> 1 x 1 linear map to 2 C J temporal coefficients                (N, H, W, 2 C J)
      -> temporal readout, eqs. (62)-(63), at every pixel               (N, H, W, 2 C)
      -> z = [z_mu, z_Sigma], each flattened like x_t                   (N, 2 D)

``D = H W C``; the flattening is row-major over ``(H, W, C)``, so ``z[:, :D]``
lines up with ``x_t`` and the Gaussian diffusion uses ``z`` as it uses the
outputs of its other networks (eqs. 64-65 or the project's other
parameterizations turn ``z`` into the reverse kernel).

Names.  The paper calls both the whole-image layers and the 1 x 1 layers "dense"
(App. D.2.1, "Dense Layers": both are a linear map and a tanh); here ``global``
names the first (the dense pathway, the reference code's "dense lower" MLP) and
``dense`` the second (its "dense upper" MLP, applied at each pixel).

Parameters are a dict of named arrays: ``conv{l}.W`` (S, k, k, C_in, C_out) and
``conv{l}.b``; the dense pathway's ``global{l}.W`` and ``global{l}.b``, with
``global0.W`` (D, n_hidden_global), the middle ones (n_hidden_global, n_hidden_global)
and the last, ``global{n_layers_global}.W``, (n_hidden_global, H W n_global_channels);
``dense{l}.W`` (C_in, C_out) and ``dense{l}.b``; ``readout.W`` and ``readout.b``, the
per-pixel map to the temporal coefficients (the paper's "Readout", App. D.2.1).
Gradients come back keyed the same way.
"""
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy

from ..backend import array_module
from ..nn.readout import SPACINGS, bump_basis
from ..validation import check_choice, check_positive_int
from .layers import dense_pathway_backward, dense_pathway_forward, multiscale_backward, multiscale_forward
from .layers import pixel_readout_backward, pixel_readout_forward, pointwise_backward, pointwise_forward
from .layers import tanh_backward, tanh_forward


@dataclass
class ImageNetConfig:
    """Architecture.  The paper gives no widths; the defaults are the authors' code's
    (``n_hidden_conv = 20``, ``n_layers_conv = 4``, ``n_temporal_basis = 10``, a 20-unit
    per-pixel hidden layer before the linear readout), with 3 x 3 kernels.

    Attributes
    ----------
    size : int             image side in pixels (square images), divisible by ``2^(n_scales - 1)``.
    channels : int         colours ``C`` (1: grey).
    T : int                trajectory length.
    n_scales : int         scales of each multi-scale layer (1: plain convolution).
    kernel : int           odd kernel side ``k``.
    n_hidden_conv, n_layers_conv : int     width and number of multi-scale layers.
    n_layers_global : int  hidden layers of the dense pathway on the whole image vector
                           (Fig. D.1; the paper's CIFAR-10 model); 0: no dense pathway.  It has
                           ``n_layers_global + 1`` linear + tanh layers: the last gives the channels.
    n_hidden_global : int  width of its hidden layers.
    n_global_channels : int   channels per pixel the dense pathway adds to the 1 x 1 layers' input.
    n_hidden_dense, n_layers_dense : int   width and number of 1 x 1 tanh layers.
    n_temporal_basis : int                 bumps ``J`` of the readout (eq. 63).
    bump_spacing : str     ``'linear'`` (the paper's: centres evenly spaced in ``t``) or
                           ``'log'`` (evenly spaced in ``log t``); see :func:`~numpy_diffusion.nn.readout.bump_basis`.
    """
    size: int = 16
    channels: int = 1
    T: int = 1000
    n_scales: int = 3
    kernel: int = 3
    n_hidden_conv: int = 20
    n_layers_conv: int = 4
    n_hidden_dense: int = 20
    n_layers_dense: int = 1
    n_temporal_basis: int = 10
    bump_spacing: str = "linear"
    n_layers_global: int = 0
    n_hidden_global: int = 500
    n_global_channels: int = 2

    def __post_init__(self):
        for name in ("size", "channels", "n_scales", "kernel", "n_hidden_conv", "n_hidden_dense",
                     "n_temporal_basis", "n_hidden_global", "n_global_channels"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("T", self.T, 2)
        check_positive_int("n_layers_conv", self.n_layers_conv, 0)
        check_positive_int("n_layers_dense", self.n_layers_dense, 0)
        check_positive_int("n_layers_global", self.n_layers_global, 0)
        check_choice("bump_spacing", self.bump_spacing, SPACINGS)
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same padding), got {self.kernel}")
        if self.size % 2 ** (self.n_scales - 1):
            raise ValueError(f"size {self.size} must be divisible by 2^(n_scales - 1) = "
                             f"{2 ** (self.n_scales - 1)} to pool {self.n_scales} scales")

    @property
    def D(self):
        """Data dimension ``H W C``."""
        return self.size * self.size * self.channels

    @property
    def pixel_features(self):
        """Channels per pixel entering the 1 x 1 layers: the convolutions' (the image's ``C``
        when there are no convolution layers), then the dense pathway's, if any."""
        local = self.n_hidden_conv if self.n_layers_conv else self.channels
        return local + (self.n_global_channels if self.n_layers_global else 0)

    @property
    def global_widths(self):
        """The dense pathway's layer widths, ``[D, n_hidden_global, ..., H W n_global_channels]``
        (``n_layers_global + 2`` of them), or ``[]`` without it."""
        if not self.n_layers_global:
            return []
        return [self.D] + [self.n_hidden_global] * self.n_layers_global + [self.size ** 2 * self.n_global_channels]

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """The configuration of a :meth:`to_dict` dict, or of a network's ``config()`` (its ``kind`` dropped)."""
        return cls(**{k: v for k, v in d.items() if k != "kind"})


def init_image_net(cfg, rng, dtype=numpy.float64):
    """Initial parameters (host arrays).

    Convolution kernels are normal with variance ``1 / (S k^2 C_in)`` (the ``S``
    scales add up), the dense pathway's and the 1 x 1 layers Glorot-uniform, biases zero; the coefficient
    map starts at zero, so the untrained network outputs ``z = 0``.
    """
    params, c_in, S, k = {}, cfg.channels, cfg.n_scales, cfg.kernel

    def glorot(name, n_in, n_out):
        limit = numpy.sqrt(6.0 / (n_in + n_out))
        params[f"{name}.W"] = rng.uniform(-limit, limit, (n_in, n_out)).astype(dtype)
        params[f"{name}.b"] = numpy.zeros(n_out, dtype=dtype)

    for l in range(cfg.n_layers_conv):
        std = 1.0 / numpy.sqrt(S * k * k * c_in)
        params[f"conv{l}.W"] = (std * rng.standard_normal((S, k, k, c_in, cfg.n_hidden_conv))).astype(dtype)
        params[f"conv{l}.b"] = numpy.zeros(cfg.n_hidden_conv, dtype=dtype)
        c_in = cfg.n_hidden_conv
    widths = cfg.global_widths
    for l, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        glorot(f"global{l}", n_in, n_out)
    c_in = cfg.pixel_features
    for l in range(cfg.n_layers_dense):
        glorot(f"dense{l}", c_in, cfg.n_hidden_dense)
        c_in = cfg.n_hidden_dense
    n_coef = 2 * cfg.channels * cfg.n_temporal_basis
    params["readout.W"] = numpy.zeros((c_in, n_coef), dtype=dtype)
    params["readout.b"] = numpy.zeros(n_coef, dtype=dtype)
    return params


class ImageNetCache(NamedTuple):
    """The layers' caches, in forward order, and the image shape."""
    convs: tuple            # MultiScaleCache per multi-scale layer
    global_layers: tuple    # (LinearCache, ActCache) per layer of the dense pathway
    global_channels: int    # channels per pixel it adds (0 without it)
    denses: tuple           # (PointwiseCache, ActCache) per 1 x 1 tanh layer
    coef: object            # PointwiseCache of the readout's coefficient map
    readout: object         # ReadoutCache
    shape: tuple            # (N, H, W, C)


def image_net_forward(xt, t, params, cfg, G):
    """``z = net(x_t, t)``.

    Parameters
    ----------
    xt : ndarray of shape (N, D), ``D = size^2 C``, row-major over (H, W, C)
    t : int ndarray of shape (N,), values ``1..T``
    params : mapping name -> ndarray, from :func:`init_image_net`
    cfg : ImageNetConfig
    G : ndarray of shape (T + 1, J), the bump basis (eq. 63) in the parameters' dtype

    Returns
    -------
    z : ndarray of shape (N, 2 D), ``[z_mu, z_Sigma]``
    cache : ImageNetCache
    """
    N, s, C, xp = xt.shape[0], cfg.size, cfg.channels, array_module(xt)
    if xt.ndim != 2 or xt.shape[1] != cfg.D:
        raise ValueError(f"x_t must have shape (N, {cfg.D}) for {s} x {s} x {C} images, got {tuple(xt.shape)}")
    h = xt.reshape(N, s, s, C)                                        # (N, H, W, C)
    convs, global_layers, denses = [], (), []
    for l in range(cfg.n_layers_conv):
        h, c = multiscale_forward(h, params[f"conv{l}.W"], params[f"conv{l}.b"])   # (N, H, W, n_hidden_conv)
        convs.append(c)
    if cfg.n_layers_global:
        g, global_layers = dense_pathway_forward(xt, params, cfg.n_layers_global)   # (N, H W c_g)
        h = xp.concatenate([h, g.reshape(N, s, s, -1)], axis=3)      # (N, H, W, pixel_features)
    for l in range(cfg.n_layers_dense):
        a, c_lin = pointwise_forward(h, params[f"dense{l}.W"], params[f"dense{l}.b"])
        h, c_act = tanh_forward(a)                                    # (N, H, W, n_hidden_dense)
        denses.append((c_lin, c_act))
    y, c_coef = pointwise_forward(h, params["readout.W"], params["readout.b"])   # y_i, App. D.2.1  (N, H, W, 2 C J)
    z, c_read = pixel_readout_forward(y, t, G)                        # eq. (62)        (N, H, W, 2 C)
    z = z.reshape(N, s, s, 2, C).transpose(0, 3, 1, 2, 4).reshape(N, 2 * cfg.D)   # [z_mu, z_Sigma]  (N, 2 D)
    c_g = cfg.n_global_channels if cfg.n_layers_global else 0
    return z, ImageNetCache(tuple(convs), global_layers, c_g, tuple(denses), c_coef, c_read, (N, s, s, C))


def image_net_backward(dz, cache, *, need_dx=True):
    """Gradients: returns ``(dx, dparams)``, ``dx`` (N, D) or ``None`` without ``need_dx``
    (a fixed schedule needs no gradient through ``x_t``), ``dparams`` keyed and shaped like
    the parameters (:func:`init_image_net`)."""
    N, s, _, C = cache.shape
    grads = {}
    dz = dz.reshape(N, 2, s, s, C).transpose(0, 2, 3, 1, 4).reshape(N, s, s, 2 * C)   # (N, H, W, 2 C)
    dy = pixel_readout_backward(dz, cache.readout)                    # (N, H, W, 2 C J)
    hidden = bool(cache.denses or cache.convs or cache.global_layers)
    dh, grads["readout.W"], grads["readout.b"] = pointwise_backward(dy, cache.coef, need_dx=need_dx or hidden)
    for l in reversed(range(len(cache.denses))):
        c_lin, c_act = cache.denses[l]
        da = tanh_backward(dh, c_act)
        dh, grads[f"dense{l}.W"], grads[f"dense{l}.b"] = pointwise_backward(
            da, c_lin, need_dx=need_dx or l > 0 or bool(cache.convs or cache.global_layers))
    dx_global = None
    if cache.global_layers:                                           # split the joined channels
        c_g = cache.global_channels
        dh, dg = dh[..., :-c_g], dh[..., -c_g:].reshape(N, -1)        # (N, H, W, c_local), (N, H W c_g)
        dx_global, global_grads = dense_pathway_backward(dg, cache.global_layers, need_dx=need_dx)   # (N, D)
        grads.update(global_grads)
    for l in reversed(range(len(cache.convs))):
        dh, grads[f"conv{l}.W"], grads[f"conv{l}.b"] = multiscale_backward(
            dh, cache.convs[l], need_dx=need_dx or l > 0)
    if not need_dx:
        return None, grads
    dx = dh.reshape(N, -1)                                            # both pathways read x_t
    return (dx + dx_global if dx_global is not None else dx), grads


class ImageNetwork:
    """The image network as an object a diffusion model can hold: configuration and
    the temporal basis; no parameters.

    ``init_params(rng, dtype) -> params``, ``forward(xt, t, params) -> (z, cache)``,
    ``backward(dz, cache, *, need_dxt) -> (dxt, dparams)``.  The backend and
    dtype are those of the parameters; ``xt`` is cast to that dtype.
    """

    def __init__(self, cfg):
        self.cfg = ImageNetConfig(**cfg) if isinstance(cfg, dict) else cfg
        self._G = {}

    @property
    def D(self):
        return self.cfg.D

    @property
    def T(self):
        return self.cfg.T

    def init_params(self, rng, dtype=numpy.float64):
        return init_image_net(self.cfg, rng, dtype)

    def basis(self, xp, dtype):
        """The bump basis ``G`` (T + 1, J) of eq. (63), as an ``xp`` array of ``dtype``, made once."""
        key = (xp.__name__, numpy.dtype(dtype).str)
        if key not in self._G:
            G = bump_basis(self.cfg.T, self.cfg.n_temporal_basis, spacing=self.cfg.bump_spacing)
            self._G[key] = xp.asarray(G, dtype=dtype)
        return self._G[key]

    def forward(self, xt, t, params):
        """:func:`image_net_forward` in the parameters' dtype: ``x_t`` (N, D), ``t`` (N,) ->
        ``z`` (N, 2 D) and the cache."""
        W = params["readout.W"]
        xp = array_module(W)
        return image_net_forward(xt.astype(W.dtype, copy=False), t, params, self.cfg, self.basis(xp, W.dtype))

    def backward(self, dz, cache, *, need_dxt=True):
        """:func:`image_net_backward`: ``dz`` (N, 2 D) -> ``dx_t`` (N, D) or ``None``, and the
        parameter gradients."""
        dz = dz.astype(cache.coef.W.dtype, copy=False)
        return image_net_backward(dz, cache, need_dx=need_dxt)

    def config(self):
        return {"kind": "image", **self.cfg.to_dict()}

    @classmethod
    def from_config(cls, d):
        return cls(ImageNetConfig.from_dict(d))
