"""MNIST (§3.2.1, Table 2, Fig. App.1): the four IDX files, found in a folder, a cache or a mirror.

Where the files come from, in order:

1. the folder the caller names (``data_dir``; the demos' ``--data DIR``) holding
   ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
   and ``t10k-labels-idx1-ubyte``, each plain or gzipped (``.gz``);
2. the cache folder (default ``$XDG_CACHE_HOME/numpy_diffusion/mnist``, else
   ``~/.cache/numpy_diffusion/mnist``), which holds the gzipped files once downloaded;
3. when ``download`` is allowed, the standard mirrors, tried in order for each file.
   A download is kept only when its length, MD5 and SHA-256 all match the published
   values, and it is written to the cache atomically (a temporary file renamed into
   place, :func:`~numpy_diffusion.run.checkpoint.atomic_write`), so an interrupted or
   corrupt download leaves nothing behind.

When all three fail, :class:`MNISTNotFound` says so in one line naming both ways to
succeed.  Every malformed file raises :class:`~.idx.IDXError` (its parent), one line
naming the file and what is wrong.

Units.  The pixels are 8-bit grey levels, dequantized and scaled to unit variance by
:mod:`.pixels`, with the two constants of :func:`.pixels.fit_pixel_scale` computed once
from the training images' grey-level histogram.  (On all 60,000 training images the
often quoted mean 0.1307 and standard deviation 0.3081 of ``q / 255`` give
``shift = 255 * 0.1307 + 0.5 ~ 33.8`` and ``scale = sqrt((255 * 0.3081)^2 + 1/12) ~ 78.6``
grey levels.)  The Parzen-window estimate of Table 2 uses another scale, Goodfellow et
al. (2014)'s pixels ``q / 255`` in [0, 1]: :func:`unit_interval`.
"""
import hashlib
import http.client
import math
import os
import urllib.error
import urllib.request
from typing import NamedTuple

import numpy

from ..run.checkpoint import atomic_write, remove_stale_temporaries
from .idx import IDXError, read_idx

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SIDE = 28                                       # pixels: every MNIST image is 28 x 28
VALIDATION_IMAGES = 10_000                      # the last 10,000 training images (Goodfellow et al.'s validation)
# The mirrors, and the published length, MD5 and SHA-256 of each gzipped file: the MD5s are
# torchvision's (``torchvision/datasets/mnist.py``, ``MNIST.resources``, whose mirror is the first
# below), the lengths and SHA-256s TensorFlow Datasets' (``url_checksums/mnist.txt``, whose
# mirror is the second).  Both sets name the same bytes: other loaders list each digest beside
# the other mirror.
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
ARCHIVES = {
    "train-images-idx3-ubyte.gz": (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz": (28881, "d53e105ee54ea40749a09fcbcd1e9432",
                                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz": (1648877, "9fb629c4189551a2d022fa330f9573f3",
                                  "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz": (4542, "ec29112dd5afa0611ce80d1b7f02629c",
                                  "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}


class MNISTNotFound(IDXError):
    """The four MNIST files are in none of the places looked: the named folder, the cache, a mirror."""


class MNIST(NamedTuple):
    """MNIST as stored: uint8 host arrays, images (n, 28, 28) in grey levels 0..255 (0 the
    background), labels (n,) digits 0..9; ``folder`` is where the files were read."""
    train_images: numpy.ndarray
    train_labels: numpy.ndarray
    test_images: numpy.ndarray
    test_labels: numpy.ndarray
    folder: str


def default_cache_dir():
    """``$XDG_CACHE_HOME/numpy_diffusion/mnist``, else ``~/.cache/numpy_diffusion/mnist``."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "numpy_diffusion", "mnist")


def load_mnist(data_dir=None, *, cache_dir=None, download=True, timeout=60.0):
    """MNIST from ``data_dir``, else the cache, else (when ``download``) the mirrors into the cache.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        A folder holding the four files (plain or ``.gz``).
    cache_dir : str or os.PathLike, optional
        Where downloads are kept (default :func:`default_cache_dir`).
    download : bool
        Whether to try the mirrors when no folder holds the files.
    timeout : float
        Seconds to wait on a mirror before trying the next.

    Returns
    -------
    MNIST

    Raises
    ------
    MNISTNotFound, or IDXError for a malformed file.
    """
    cache_dir = os.fspath(cache_dir if cache_dir is not None else default_cache_dir())
    tried = []
    for what, folder in ([("folder", os.fspath(data_dir))] if data_dir is not None else []) + [("cache", cache_dir)]:
        paths, missing = find_files(folder)
        if not missing:
            return read_mnist(paths, folder)
        tried.append(f"{what} {folder} lacks " + ("all four files" if len(missing) == 4 else ", ".join(missing)))
    failures = download_mnist(cache_dir, timeout=timeout) if download else ["not allowed (download=False)"]
    if failures:
        raise MNISTNotFound(_not_found(tried, failures, cache_dir))
    return read_mnist(find_files(cache_dir)[0], cache_dir)


def _not_found(tried, failures, cache_dir):
    """The one line that names both ways: a folder with the four files, or a download."""
    return (f"MNIST not found: {'; '.join(tried)}; download: {'; '.join(failures)}. Either put "
            f"{', '.join(FILES)} (each plain or .gz) in a folder and pass it (--data DIR in the demos), "
            f"or run once with network access to download them from {' or '.join(MIRRORS)} into {cache_dir}")


def find_files(folder):
    """``(paths, missing)``: the path of each of :data:`FILES` in ``folder`` (plain preferred to
    ``.gz``), and the names of those with neither."""
    paths, missing = [], []
    for name in FILES:
        found = [p for p in (os.path.join(folder, name), os.path.join(folder, name + ".gz")) if os.path.isfile(p)]
        paths.append(found[0] if found else None)
        if not found:
            missing.append(name)
    return paths, missing


def read_mnist(paths, folder):
    """The four IDX files at ``paths`` (in the order of :data:`FILES`), checked to be MNIST-shaped."""
    arrays = [read_idx(p) for p in paths]
    for i in (0, 2):                                                  # (images, labels): training, test
        _check_pair(arrays[i], arrays[i + 1], paths[i], paths[i + 1])
    return MNIST(*arrays, folder=folder)


def _check_pair(images, labels, img_path, lab_path):
    """Images (n, 28, 28) and n labels in 0..9, or IDXError naming the file at fault."""
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise IDXError(f"{img_path}: images of shape {images.shape}; MNIST images are (n, {SIDE}, {SIDE})")
    if labels.ndim != 1:
        raise IDXError(f"{lab_path}: labels of shape {labels.shape}; MNIST labels are (n,)")
    if labels.shape[0] != images.shape[0]:
        raise IDXError(f"{lab_path}: {labels.shape[0]} labels for the {images.shape[0]} images of {img_path}")
    if labels.size and labels.max() > 9:
        raise IDXError(f"{lab_path}: a label {int(labels.max())}; MNIST labels are digits 0..9")


def download_mnist(cache_dir, *, timeout=60.0, mirrors=MIRRORS):
    """Fetch into ``cache_dir`` each gzipped file of :data:`ARCHIVES` not already there.

    Each file is tried at each mirror in turn and kept only when its length, MD5 and SHA-256
    match; it is written atomically, and partial files a killed download left are removed
    first.  Returns the list of what failed, one string per mirror tried (empty when all four
    files are in the cache).
    """
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as err:
        return [f"cannot create the cache folder {cache_dir} ({err.strerror or err})"]
    remove_stale_temporaries(cache_dir)                               # a killed download's partial file
    for name in ARCHIVES:
        target = os.path.join(cache_dir, name)
        if not (os.path.isfile(target) or os.path.isfile(target[:-len(".gz")])):
            data, failures = _fetch_verified(name, mirrors, timeout)
            if data is None:
                return failures
            atomic_write(target, lambda f, data=data: f.write(data))
    return []


def _fetch_verified(name, mirrors, timeout):
    """``(bytes, failures)`` of the first mirror whose copy of ``name`` verifies; ``(None, failures)``."""
    failures = []
    for mirror in mirrors:
        url = mirror + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read(ARCHIVES[name][0] + 1)          # one byte more shows a longer file
        except (OSError, http.client.HTTPException) as err:
            failures.append(f"{url}: {_reason(err)}")
            continue
        problem = checksum_problem(name, data)
        if problem is None:
            return data, failures
        failures.append(f"{url}: {problem}")
    return None, failures


def _reason(err):
    """A failed request in a few words: ``HTTP Error 404: Not Found``, or a URLError's reason."""
    if isinstance(err, urllib.error.HTTPError) or not isinstance(err, urllib.error.URLError):
        return str(err)
    return str(err.reason)


def checksum_problem(name, data):
    """None when ``data`` has the published length, MD5 and SHA-256 of the archive ``name``,
    else what differs."""
    size, md5, sha256 = ARCHIVES[name]
    if len(data) != size:
        return f"{len(data)} bytes where the published file has {size}"
    for algorithm, want in (("md5", md5), ("sha256", sha256)):
        got = hashlib.new(algorithm, data).hexdigest()
        if got != want:
            return f"checksum mismatch: {algorithm} {got}, published {want}"
    return None


def split_validation(images, n_valid=VALIDATION_IMAGES):
    """``(train, valid)``: the training images less their last ``n_valid``, and those last
    ``n_valid`` (Goodfellow et al. 2014's validation images 50,000..59,999 of MNIST's 60,000)."""
    if not 0 < n_valid < len(images):
        raise ValueError(f"n_valid must be in 1..{len(images) - 1} (fewer than the {len(images)} images), "
                         f"got {n_valid}")
    return images[:-n_valid], images[-n_valid:]


def unit_interval(q):
    """Grey levels ``q`` (n, 28, 28) to Goodfellow et al.'s Parzen scale ``q / 255`` in [0, 1],
    flattened: (n, 784) float64.  Test and validation images are not dequantized there."""
    return numpy.asarray(q, dtype=numpy.float64).reshape(len(q), -1) / 255.0


def samples_to_unit_interval(x0, units):
    """Model samples on the unit-variance scale to the Parzen scale: ``(v - 1/2) / 255`` with
    ``v = units.to_grey_levels(x0)`` the dequantized grey level (``v in [q, q + 1)`` of grey
    level ``q`` maps to within ``1/510`` of ``q / 255``).  (n, D) float64, not clipped."""
    return (units.to_grey_levels(x0) - 0.5) / 255.0


def bound_on_unit_interval(K_nats, units, D):
    """A bound ``K`` (nats per image on ``x0``) on the Parzen scale ``p = (v - 1/2) / 255``:
    ``K + D ln(255 / scale)`` nats per image.  Change of variables: ``x0 = (255 p + 1/2 - shift)
    / scale`` has Jacobian ``(255 / scale)`` per pixel, so ``p_p(p) = p_x0(x0) (255 / scale)^D``."""
    return K_nats + D * math.log(255.0 / units.scale)
