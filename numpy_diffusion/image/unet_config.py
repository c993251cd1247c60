"""The U-Net's architecture (:class:`UNetConfig`) and its parameters: every name with its
shape (:func:`param_shapes`) and their initialization (:func:`init_unet`).

The network itself, and the meaning of each name, are in :mod:`.unet`.
"""
from dataclasses import asdict, dataclass
from math import prod

import numpy

from ..validation import check_positive_int


@dataclass
class UNetConfig:
    """Architecture of the time-conditioned U-Net.  Not from the paper (which gives
    no U-Net); the defaults make a small DDPM-style network for 16 x 16 images.

    Attributes
    ----------
    size : int         image side in pixels (square images), divisible by ``2^(len(widths) - 1)``.
    channels : int     colours ``C`` (1: grey).
    T : int            trajectory length; ``t`` runs over ``1..T``.
    widths : tuple     channels at resolutions ``size``, ``size / 2``, ``size / 4``, ...: one level
                       each.  One entry: a single-resolution stack of residual blocks, no pooling.
    blocks : int       residual blocks per level on the way down; as many on the way up.
    attention : bool   whether the middle holds a self-attention block (at the coarsest level).
    emb_dim : int      width of the time MLP, the embedding every residual block reads.
    groups : int       GroupNorm's groups; must divide every width.
    kernel : int       odd side ``k`` of every convolution's kernel.
    """
    size: int = 16
    channels: int = 1
    T: int = 1000
    widths: tuple = (16, 32, 32)
    blocks: int = 1
    attention: bool = True
    emb_dim: int = 64
    groups: int = 8
    kernel: int = 3

    def __post_init__(self):
        for name in ("size", "channels", "blocks", "emb_dim", "groups", "kernel"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("T", self.T, 2)
        if isinstance(self.widths, (str, bytes)) or not hasattr(self.widths, "__len__") or not len(self.widths):
            raise ValueError(f"widths must be a non-empty sequence of channel counts, got {self.widths!r}")
        self.widths = tuple(check_positive_int("each of widths", w) for w in self.widths)
        if not isinstance(self.attention, bool):
            raise TypeError(f"attention must be True or False, got {self.attention!r}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (same padding), got {self.kernel}")
        if any(w % self.groups for w in self.widths):
            raise ValueError(f"groups = {self.groups} must divide every width, got widths {self.widths}")
        if self.size % 2 ** (len(self.widths) - 1):
            raise ValueError(f"size {self.size} must be divisible by 2^(len(widths) - 1) = "
                             f"{2 ** (len(self.widths) - 1)} to pool to {len(self.widths)} levels")

    @property
    def D(self):
        """Data dimension ``H W C``."""
        return self.size * self.size * self.channels

    def to_dict(self):
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, d):
        """The configuration of a :meth:`to_dict` dict, or of a network's ``config()`` (its ``kind`` dropped)."""
        return cls(**{k: v for k, v in d.items() if k != "kind"})


def _block_shapes(prefix, c_in, c_out, emb_dim, k):
    """A residual block's parameters (:func:`~.blocks.res_block_forward`): name -> shape."""
    shapes = {"norm1.g": (c_in,), "norm1.b": (c_in,), "conv1.W": (k, k, c_in, c_out), "conv1.b": (c_out,),
              "emb.W": (emb_dim, c_out), "emb.b": (c_out,), "norm2.g": (c_out,), "norm2.b": (c_out,),
              "conv2.W": (k, k, c_out, c_out), "conv2.b": (c_out,)}
    if c_in != c_out:
        shapes.update({"skip.W": (c_in, c_out), "skip.b": (c_out,)})
    return {prefix + name: shape for name, shape in shapes.items()}


def _attention_shapes(prefix, c):
    """The attention block's parameters (:func:`~.attention.attention_block_forward`): name -> shape."""
    shapes = {"norm.g": (c,), "norm.b": (c,), "qkv.W": (c, 3 * c), "qkv.b": (3 * c,), "out.W": (c, c), "out.b": (c,)}
    return {prefix + name: shape for name, shape in shapes.items()}


def param_shapes(cfg):
    """Every parameter's name and shape, in the order data flows (:mod:`.unet`'s docstring).

    The channel counts are followed here once: ``c`` is the width of ``h`` as it goes.
    """
    w, k, E, L = cfg.widths, cfg.kernel, cfg.emb_dim, len(cfg.widths)
    shapes = {"time.W0": (w[0], E), "time.b0": (E,), "time.W1": (E, E), "time.b1": (E,),
              "in.W": (k, k, cfg.channels, w[0]), "in.b": (w[0],)}
    c = w[0]
    for l in range(L):
        for i in range(cfg.blocks):
            shapes.update(_block_shapes(f"down{l}.block{i}.", c, w[l], E, k))
            c = w[l]
    shapes.update(_block_shapes("mid.block0.", c, c, E, k))
    if cfg.attention:
        shapes.update(_attention_shapes("mid.attn.", c))
    shapes.update(_block_shapes("mid.block1.", c, c, E, k))
    for l in reversed(range(L)):
        for i in range(cfg.blocks):
            shapes.update(_block_shapes(f"up{l}.block{i}.", c + w[l] if i == 0 else c, w[l], E, k))   # + skip_l
            c = w[l]
        if l > 0:
            shapes.update({f"up{l}.up.W": (k, k, c, c), f"up{l}.up.b": (c,)})
    shapes.update({"out.norm.g": (c,), "out.norm.b": (c,), "out.W": (k, k, c, 2 * cfg.channels),
                   "out.b": (2 * cfg.channels,)})
    return shapes


def _starts_at_zero(name):
    """The maps whose zero start makes each block its skip and the network output ``z = 0``."""
    return ".conv2." in name or name.startswith(("out.W", "out.b", "mid.attn.out."))


def init_unet(cfg, rng, dtype=numpy.float64):
    """Initial parameters (host arrays), drawn in :func:`param_shapes`' order.

    Weights (convolution kernels, 1 x 1 and linear maps) are normal with variance
    ``1 / fan_in`` (``fan_in = k^2 C_in`` for a kernel), which keeps a linear layer's
    output variance that of its input; GroupNorm gains are 1, biases 0; each residual
    block's second convolution, the attention block's output map and ``out`` are 0
    (see :mod:`.unet`: every block starts as its skip, and ``z = 0``).
    """
    params = {}
    for name, shape in param_shapes(cfg).items():
        if name.endswith(".g"):
            params[name] = numpy.ones(shape, dtype=dtype)
        elif _starts_at_zero(name) or len(shape) == 1:
            params[name] = numpy.zeros(shape, dtype=dtype)
        else:
            std = 1.0 / numpy.sqrt(prod(shape[:-1]))
            params[name] = (std * rng.standard_normal(shape)).astype(dtype)
    return params
