"""A natural texture from a photograph (§3.2.1, Fig. 5): training patches and held-out patches.

The paper trained on bark textures T01-T04 of Lazebnik et al. (2005), which may not be
redistributed; any greyscale or colour photograph of a texture with a free licence serves
the same demonstration (``T = 500`` steps, as for bark, and the central square of held-out
patches inpainted).

From file to data:

1. :func:`read_texture` reads the file with ``matplotlib.image.imread``: PNG natively,
   JPEG, TIFF and other formats through Pillow, which matplotlib requires;
2. colour becomes grey by the ITU-R BT.601 luma weights
   ``Y = 0.299 R + 0.587 G + 0.114 B`` on the stored (gamma-encoded) values; an alpha
   channel is dropped;
3. grey becomes 8-bit grey levels ``q = rint(255 y)`` with ``y`` in [0, 1] (matplotlib
   gives PNGs as floats ``k / 255``, or ``k / 65535`` for 16-bit ones; integer images are
   divided by their type's maximum first), so an 8-bit PNG's levels come back exactly;
4. :func:`split_texture` gives the left 80 % of the columns to training and the right
   20 % to held-out patches: a patch of either lies wholly in its region, so none shares
   a pixel with the other;
5. the units of :mod:`.pixels`: dequantization and the affine map to unit variance,
   with the constants of :func:`.pixels.fit_pixel_scale` from the training region's grey
   levels, and the change of variables that turns a bound into bits per dimension of the
   8-bit data.
"""
from typing import NamedTuple

import matplotlib.image
import numpy

from .pixels import PixelScale, fit_pixel_scale

LUMA_WEIGHTS = (0.299, 0.587, 0.114)            # ITU-R BT.601: R, G, B
TRAIN_FRACTION = 0.8                            # the left 80 % of the columns


class TextureError(ValueError):
    """A texture file that cannot serve: unreadable, too small for a patch, or constant.
    The message is one line naming the file and what is wrong."""


class Texture(NamedTuple):
    """A photograph cut for training: ``train`` (H, W_train) and ``held_out`` (H, W_held)
    uint8 grey levels, the left and right columns of the image; ``units`` from ``train``."""
    train: numpy.ndarray
    held_out: numpy.ndarray
    units: PixelScale


def read_texture(path):
    """The photograph at ``path`` as 8-bit grey levels: uint8 host array (H, W).

    Raises TextureError when the file is missing or not an image matplotlib can read.
    """
    try:
        img = matplotlib.image.imread(path)
    except (OSError, ValueError, SyntaxError) as err:               # Pillow's errors for bad files
        reason = getattr(err, "strerror", None) or err
        raise TextureError(f"{path}: cannot be read as an image ({reason})") from err
    return to_grey_levels(img, path)


def to_grey_levels(img, name="image"):
    """An image array as matplotlib reads it, (H, W), (H, W, 3) or (H, W, 4), floats in
    [0, 1] or unsigned integers, to uint8 grey levels (H, W) (steps 2 and 3 above)."""
    img = numpy.asarray(img)
    if img.dtype.kind == "u":
        img = img / float(numpy.iinfo(img.dtype).max)                # integers to [0, 1]
    elif img.dtype.kind != "f":
        raise TextureError(f"{name}: pixels of type {img.dtype}; need floats in [0, 1] or unsigned integers")
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = img[..., :3].astype(numpy.float64) @ numpy.array(LUMA_WEIGHTS)   # luma, alpha dropped
    if img.ndim != 2:
        raise TextureError(f"{name}: an image of shape {img.shape}; need (H, W), (H, W, 3) or (H, W, 4)")
    return numpy.clip(numpy.rint(255.0 * img), 0, 255).astype(numpy.uint8)


def split_texture(q, patch, *, train_fraction=TRAIN_FRACTION, name="image"):
    """Cut grey levels ``q`` (H, W) into the training columns and the held-out columns.

    Parameters
    ----------
    q : uint8 (H, W); patch : int, the side of the square patches to be cut
    train_fraction : float, the share of columns, from the left, for training
    name : str, the file's name for the messages

    Returns
    -------
    Texture, with the units fitted to the training columns.

    Raises TextureError when either region is smaller than a patch or the training
    region has a single grey level.
    """
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be between 0 and 1 (the share of columns), got {train_fraction}")
    H, W = q.shape
    cut = int(round(train_fraction * W))
    if min(H, cut, W - cut) < patch:
        raise TextureError(f"{name}: {H} x {W} pixels is too small for {patch} x {patch} patches: need "
                           f"{patch} rows and {patch} columns in each of the left {train_fraction:.0%} "
                           f"({cut} columns) and the rest ({W - cut} columns)")
    train, held_out = q[:, :cut], q[:, cut:]
    if train.min() == train.max():
        raise TextureError(f"{name}: the training region is one grey level ({int(train.min())}): "
                           "a constant image has no texture to learn")
    return Texture(train, held_out, fit_pixel_scale(train))


def load_texture(path, patch, *, train_fraction=TRAIN_FRACTION):
    """:func:`read_texture` then :func:`split_texture`: the photograph at ``path`` ready to cut."""
    return split_texture(read_texture(path), patch, train_fraction=train_fraction, name=str(path))


def random_patches(region, patch, n, rng):
    """``n`` square patches of side ``patch`` at uniform positions in ``region`` (H, W):
    uint8 (n, patch, patch).  Each patch lies wholly inside the region."""
    H, W = region.shape
    if not 0 < patch <= min(H, W):
        raise ValueError(f"patch must be in 1..{min(H, W)} for a {H} x {W} region, got {patch}")
    top = rng.integers(0, H - patch + 1, n)
    left = rng.integers(0, W - patch + 1, n)
    rows = top[:, None, None] + numpy.arange(patch)[None, :, None]        # (n, patch, 1)
    cols = left[:, None, None] + numpy.arange(patch)[None, None, :]       # (n, 1, patch)
    return region[rows, cols]
