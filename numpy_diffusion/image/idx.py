"""The IDX file format of the MNIST files, read with one clear error for each way a file is wrong.

An IDX file (LeCun et al., http://yann.lecun.com/exdb/mnist/) is

- a 4-byte magic number ``0x00 0x00 type ndim``: two zero bytes, the item type, the
  number of dimensions;
- ``ndim`` sizes, each a big-endian unsigned 32-bit integer;
- the items, ``prod(sizes)`` of them, in row-major (C) order, big-endian.

The type byte is one of 0x08 unsigned byte, 0x09 signed byte, 0x0B short, 0x0C int,
0x0D float, 0x0E double; MNIST uses 0x08 (``train-images-idx3-ubyte`` is 0x00000803:
unsigned bytes, 3 dimensions; the label files 0x00000801), the only type read here.
A file whose name ends in ``.gz`` is read through gzip.
"""
import gzip
import math
import os
import struct
import zlib

import numpy

IDX_TYPES = {0x08: "unsigned bytes", 0x09: "signed bytes", 0x0B: "2-byte integers",
             0x0C: "4-byte integers", 0x0D: "4-byte floats", 0x0E: "8-byte floats"}
UBYTE = 0x08


class IDXError(ValueError):
    """A file that is not a well-formed IDX file of unsigned bytes (or not the data expected
    of it); the message is one line naming the file and what is wrong."""


def read_idx(path):
    """The array stored in the IDX file ``path`` (plain, or gzipped if its name ends in ``.gz``).

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    host ndarray of uint8 with the shape the header declares.

    Raises
    ------
    IDXError
        The file cannot be read, is not gzip data though named ``.gz``, has a wrong magic
        number, an item type other than unsigned bytes, or a length that disagrees with
        the sizes in its header (truncated, or trailing bytes).
    """
    return _parse(_read_bytes(path), os.fspath(path))


def _read_bytes(path):
    """The file's bytes, gunzipped if its name ends in ``.gz``; IDXError if they cannot be read."""
    name = os.fspath(path)
    try:
        if name.endswith(".gz"):
            with gzip.open(name, "rb") as f:
                return f.read()
        with open(name, "rb") as f:
            return f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise IDXError(f"{name}: not complete gzip data ({err})") from err
    except OSError as err:
        raise IDXError(f"{name}: cannot be read ({err.strerror or err})") from err


def _parse(data, name):
    """IDX bytes to an array, every length checked against the header."""
    ndim = _check_magic(data, name)
    if len(data) < 4 + 4 * ndim:
        raise IDXError(f"{name}: truncated header: {ndim} dimension(s) need {4 + 4 * ndim} header "
                       f"bytes, the file has {len(data)}")
    sizes = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    want, have = math.prod(sizes), len(data) - 4 - 4 * ndim
    if have != want:
        what = "truncated" if have < want else f"{have - want} trailing bytes"
        raise IDXError(f"{name}: {what}: the header declares sizes {sizes}, {want} bytes of data; "
                       f"the file holds {have}")
    return numpy.frombuffer(data, dtype=numpy.uint8, offset=4 + 4 * ndim).reshape(sizes).copy()


def _check_magic(data, name):
    """The number of dimensions from the magic number ``0x00 0x00 type ndim``, checked."""
    if len(data) < 4:
        raise IDXError(f"{name}: truncated: {len(data)} bytes, shorter than the 4-byte IDX magic number")
    if data[:2] != b"\x00\x00" or data[2] not in IDX_TYPES:
        raise IDXError(f"{name}: wrong magic number 0x{data[:4].hex()}: not an IDX file "
                       "(an IDX file starts with the bytes 0x00 0x00, a type in 0x08..0x0E, ndim)")
    if data[2] != UBYTE:
        raise IDXError(f"{name}: holds {IDX_TYPES[data[2]]} (type 0x{data[2]:02x}); only unsigned bytes "
                       "(type 0x08, as in MNIST) are read here")
    if data[3] == 0:
        raise IDXError(f"{name}: the header declares 0 dimensions")
    return data[3]
