"""MNIST files: IDX reading (good files and every kind of bad one), the folder, the cache, the
download (urllib replaced by a fake server: no network), and the units.  No real MNIST: the
files are written here, a few small images each."""
import gzip
import hashlib
import io
import math
import os
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from numpy_diffusion.image import dead_leaves as dl
from numpy_diffusion.image import mnist
from numpy_diffusion.image.idx import IDXError, read_idx
from numpy_diffusion.image.pixels import fit_pixel_scale


def idx_bytes(array, type_byte=0x08):
    """The IDX encoding, written out from the format's definition: 0 0 type ndim, sizes, items."""
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_byte == 0x08 else ">f4").tobytes()


def write(path, data):
    with (gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb")) as f:
        f.write(data)
    return path


def fake_mnist(n_train=12, n_test=5, seed=0):
    """Four small arrays shaped like MNIST's: digit-like images (mostly background 0) and labels."""
    rng = np.random.default_rng(seed)
    images = lambda n: (rng.uniform(size=(n, 28, 28)) < 0.2) * rng.integers(0, 256, (n, 28, 28))  # noqa: E731
    return (images(n_train).astype(np.uint8), rng.integers(0, 10, n_train).astype(np.uint8),
            images(n_test).astype(np.uint8), rng.integers(0, 10, n_test).astype(np.uint8))


def write_mnist(folder, arrays, gz=(False, True, True, False)):
    folder.mkdir(parents=True, exist_ok=True)
    for name, a, z in zip(mnist.FILES, arrays, gz):
        write(folder / (name + (".gz" if z else "")), idx_bytes(a))


def assert_same(data, arrays):
    for got, want in zip(data[:4], arrays):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


# --- the IDX format --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 28, 28), (2, 1, 3, 2)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, shape, suffix):
    a = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    got = read_idx(write(tmp_path / ("f" + suffix), idx_bytes(a)))
    assert got.shape == shape and got.dtype == np.uint8
    np.testing.assert_array_equal(got, a)


GOOD = idx_bytes((np.arange(2 * 28 * 28) % 256).astype(np.uint8).reshape(2, 28, 28))
BAD = {
    "empty": (b"", "truncated: 0 bytes"),
    "gzip magic": (gzip.compress(GOOD), "wrong magic number 0x1f8b"),
    "zip magic": (b"PK\x03\x04" + GOOD[4:], "wrong magic number 0x504b0304"),
    "unknown type": (b"\x00\x00\x07\x01" + GOOD[4:], "wrong magic number 0x00000701"),
    "floats": (idx_bytes(np.zeros(3), 0x0D), "holds 4-byte floats (type 0x0d); only unsigned bytes"),
    "no dimensions": (b"\x00\x00\x08\x00", "declares 0 dimensions"),
    "truncated header": (GOOD[:10], "truncated header: 3 dimension(s) need 16 header bytes, the file has 10"),
    "truncated data": (GOOD[:-1], "truncated: the header declares sizes (2, 28, 28), 1568 bytes of data; "
                                  "the file holds 1567"),
    "trailing bytes": (GOOD + b"\x00" * 5, "5 trailing bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_refuses_each_malformed_file_in_one_line(tmp_path, case, suffix):
    data, message = BAD[case]
    path = write(tmp_path / ("bad" + suffix), data)
    with pytest.raises(IDXError) as err:
        read_idx(path)
    assert isinstance(err.value, ValueError) and message in str(err.value)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


@pytest.mark.parametrize("data, message", [(GOOD, r"not complete gzip data \(Not a gzipped file"),
                                           (gzip.compress(GOOD)[:-9], "not complete gzip data")],
                         ids=["plain bytes", "gzip cut short"])
def test_idx_refuses_bad_gzip(tmp_path, data, message):
    path = tmp_path / "f.gz"
    path.write_bytes(data)                                  # plain bytes, and a gzip stream cut short
    with pytest.raises(IDXError, match=message):
        read_idx(path)


def test_idx_missing_file(tmp_path):
    with pytest.raises(IDXError, match="nope: cannot be read .No such file"):
        read_idx(tmp_path / "nope")


# --- MNIST's four files --------------------------------------------------------------------

def test_folder_lookup_reads_plain_and_gzipped_files(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path / "data", arrays)
    data = mnist.load_mnist(tmp_path / "data", cache_dir=tmp_path / "cache", download=False)
    assert_same(data, arrays)
    assert data.folder == str(tmp_path / "data") and not (tmp_path / "cache").exists()


def test_plain_file_is_preferred_to_its_gzipped_copy(tmp_path):
    arrays, other = fake_mnist(seed=0), fake_mnist(seed=1)
    write_mnist(tmp_path, arrays, gz=(False,) * 4)
    write_mnist(tmp_path, other, gz=(True,) * 4)
    assert_same(mnist.load_mnist(tmp_path, cache_dir=tmp_path / "c", download=False), arrays)


def test_cache_is_used_when_the_named_folder_lacks_files(tmp_path):
    arrays = fake_mnist()
    write_mnist(tmp_path / "cache", arrays, gz=(True,) * 4)
    (tmp_path / "partial").mkdir()
    write(tmp_path / "partial" / mnist.FILES[0], idx_bytes(arrays[0]))
    for data_dir in (None, tmp_path / "partial"):
        data = mnist.load_mnist(data_dir, cache_dir=tmp_path / "cache", download=False)
        assert_same(data, arrays)
        assert data.folder == str(tmp_path / "cache")


@pytest.mark.parametrize("which, change, message", [
    (0, lambda a: a[:, :27], r"images of shape \(12, 27, 28\); MNIST images are \(n, 28, 28\)"),
    (2, lambda a: a[:, :, :, None], r"images of shape \(5, 28, 28, 1\)"),
    (1, lambda a: a[:-1], "11 labels for the 12 images of"),
    (3, lambda a: a.reshape(5, 1), r"labels of shape \(5, 1\)"),
    (1, lambda a: a + 10, "a label 1[0-9]; MNIST labels are digits 0..9"),
])
def test_files_that_are_not_mnist_shaped_are_refused(tmp_path, which, change, message):
    arrays = list(fake_mnist())
    arrays[which] = np.ascontiguousarray(change(arrays[which]))
    write_mnist(tmp_path, arrays)
    with pytest.raises(IDXError, match=message) as err:
        mnist.load_mnist(tmp_path, cache_dir=tmp_path / "c", download=False)
    assert mnist.FILES[which] in str(err.value) and "\n" not in str(err.value)


def test_a_malformed_file_in_the_named_folder_is_reported_not_skipped(tmp_path):
    write_mnist(tmp_path, fake_mnist())
    (tmp_path / mnist.FILES[3]).write_bytes(BAD["trailing bytes"][0])
    with pytest.raises(IDXError, match=f"{mnist.FILES[3]}: 5 trailing bytes"):
        mnist.load_mnist(tmp_path, cache_dir=tmp_path / "c")


# --- the download (a fake server) -----------------------------------------------------------

class FakeServer:
    """Stands in for ``urllib.request.urlopen``: serves ``files`` (url -> bytes) and raises
    ``URLError`` for any other address; records every address asked for."""

    def __init__(self, files):
        self.files, self.asked = files, []

    def __call__(self, url, timeout=None):
        self.asked.append(url)
        if url not in self.files:
            raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
        if isinstance(self.files[url], Exception):
            raise self.files[url]
        return io.BytesIO(self.files[url])


def published(monkeypatch, arrays):
    """Make the fake files the published ones (their lengths and digests in ``ARCHIVES``);
    returns the gzipped bytes by file name."""
    gz = {name + ".gz": gzip.compress(idx_bytes(a)) for name, a in zip(mnist.FILES, arrays)}
    monkeypatch.setattr(mnist, "ARCHIVES", {n: (len(b), hashlib.md5(b).hexdigest(), hashlib.sha256(b).hexdigest())
                                            for n, b in gz.items()})
    return gz


def test_download_verifies_then_fills_the_cache_and_is_not_repeated(tmp_path, monkeypatch):
    arrays = fake_mnist()
    gz = published(monkeypatch, arrays)
    server = FakeServer({mnist.MIRRORS[1] + n: b for n, b in gz.items()})   # the first mirror is down
    monkeypatch.setattr(urllib.request, "urlopen", server)
    data = mnist.load_mnist(cache_dir=tmp_path / "cache")
    assert_same(data, arrays)
    assert server.asked == [m + n for n in gz for m in mnist.MIRRORS]
    assert sorted(os.listdir(tmp_path / "cache")) == sorted(gz)            # no temporary file left
    for name, b in gz.items():
        assert (tmp_path / "cache" / name).read_bytes() == b
    server.asked.clear()
    assert_same(mnist.load_mnist(cache_dir=tmp_path / "cache"), arrays)
    assert server.asked == []


def test_wrong_checksum_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    gz = published(monkeypatch, fake_mnist())
    name = mnist.FILES[0] + ".gz"
    tampered = bytearray(gz[name])
    tampered[-20] ^= 0xFF                                                  # same length, other bytes
    first, second = (m + name for m in mnist.MIRRORS)
    forbidden = urllib.error.HTTPError(first, 403, "Forbidden", {}, None)
    monkeypatch.setattr(urllib.request, "urlopen", FakeServer({first: forbidden, second: bytes(tampered)}))
    with pytest.raises(mnist.MNISTNotFound) as err:
        mnist.load_mnist(cache_dir=tmp_path / "cache")
    assert f"{first}: HTTP Error 403: Forbidden; " in str(err.value)
    assert f"{second}: checksum mismatch: md5 {hashlib.md5(tampered).hexdigest()}" in str(err.value)
    assert os.listdir(tmp_path / "cache") == []


def test_published_checksums_refuse_a_file_of_the_wrong_length_or_content():
    name = "t10k-labels-idx1-ubyte.gz"
    assert mnist.checksum_problem(name, b"\x00" * 4541) == "4541 bytes where the published file has 4542"
    assert mnist.checksum_problem(name, b"\x00" * 4542).startswith("checksum mismatch: md5 ")
    assert sorted(mnist.ARCHIVES) == sorted(f + ".gz" for f in mnist.FILES)


def test_offline_gives_one_error_naming_both_ways(tmp_path, monkeypatch):
    server = FakeServer({})
    monkeypatch.setattr(urllib.request, "urlopen", server)
    with pytest.raises(mnist.MNISTNotFound) as err:
        mnist.load_mnist(tmp_path / "data", cache_dir=tmp_path / "cache")
    text = str(err.value)
    assert "\n" not in text and isinstance(err.value, ValueError)
    assert f"folder {tmp_path / 'data'} lacks all four files; cache {tmp_path / 'cache'} lacks all" in text
    assert f"Either put {', '.join(mnist.FILES)} (each plain or .gz) in a folder" in text
    assert "--data DIR" in text and "network access" in text
    for m in mnist.MIRRORS:
        assert f"{m}train-images-idx3-ubyte.gz: [Errno -3] Temporary failure in name resolution" in text
    assert len(server.asked) == 2                                          # it stops at the first file


def test_download_not_allowed_asks_no_server(tmp_path, monkeypatch):
    server = FakeServer({})
    monkeypatch.setattr(urllib.request, "urlopen", server)
    with pytest.raises(mnist.MNISTNotFound, match=r"download: not allowed \(download=False\)"):
        mnist.load_mnist(cache_dir=tmp_path / "cache", download=False)
    assert server.asked == []


def test_default_cache_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mnist.default_cache_dir() == os.path.join(str(tmp_path), "numpy_diffusion", "mnist")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mnist.default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "numpy_diffusion", "mnist")


# --- units and splits -----------------------------------------------------------------------

def test_pixel_scale_is_the_exact_moments_of_dequantized_pixels():
    """``shift``, ``scale`` are the mean and standard deviation of ``q + u``: checked against the
    direct moments of ``q`` and against 20 million dequantized pixels (standard errors of the
    mean and of the variance about 1e-4 * scale and 3e-4 * scale^2; tolerance 5 of them)."""
    q = fake_mnist(n_train=200)[0]
    units = fit_pixel_scale(q)
    assert math.isclose(units.shift, q.mean() + 0.5, rel_tol=1e-12)
    assert math.isclose(units.scale, math.sqrt(q.var() + 1 / 12), rel_tol=1e-12)
    x0 = units.dequantize(np.tile(q, (128, 1, 1)), np.random.default_rng(0))
    assert x0.shape == (128 * 200, 784)
    assert abs(x0.mean()) < 5e-4 and abs(x0.var() - 1) < 1.5e-3


def test_uniform_grey_levels_give_dead_leaves_constants():
    units = fit_pixel_scale(np.arange(256, dtype=np.uint8))
    assert math.isclose(units.shift, dl.SHIFT, rel_tol=1e-15) and math.isclose(units.scale, dl.SCALE, rel_tol=1e-14)


def test_units_round_trip_and_change_of_variables():
    q = fake_mnist()[0]
    units = fit_pixel_scale(q)
    x0 = units.dequantize(q, np.random.default_rng(3))
    np.testing.assert_array_equal(np.floor(units.to_grey_levels(x0)).reshape(q.shape), q)   # u in [0, 1)
    D = 784                                    # the uniform density on [0, 256)^D, read on x0: 8 bits/dim
    assert math.isclose(units.nll_bits_per_dim(-D * math.log(256 / units.scale), D), 8.0, rel_tol=1e-12)


@pytest.mark.parametrize("q", [np.zeros(3, np.int64), np.zeros(0, np.uint8), [1, 2]])
def test_pixel_scale_needs_uint8_grey_levels(q):
    with pytest.raises(ValueError, match="non-empty uint8"):
        fit_pixel_scale(q)


def test_validation_split_is_the_last_images():
    images = np.arange(60)
    train, valid = mnist.split_validation(images, 10)
    np.testing.assert_array_equal(train, np.arange(50))
    np.testing.assert_array_equal(valid, np.arange(50, 60))
    with pytest.raises(ValueError, match="n_valid must be in 1..59"):
        mnist.split_validation(images, 60)


def test_parzen_scale_of_data_and_of_samples():
    q = fake_mnist()[0]
    np.testing.assert_array_equal(mnist.unit_interval(q) * 255, q.reshape(len(q), -1))
    units = fit_pixel_scale(q)
    x0 = units.dequantize(q, np.random.default_rng(4))
    gap = mnist.samples_to_unit_interval(x0, units) - mnist.unit_interval(q)
    assert np.abs(gap).max() <= 1 / 510 + 1e-12                           # half a grey level, on [0, 1]


def test_bound_moves_to_the_parzen_scale_by_the_jacobian():
    """The uniform density on [0, 256)^D (on x0: ``-D ln(256 / scale)``) is, on ``(v - 1/2) / 255``,
    uniform on a cube of side 256 / 255: ``-D ln(256 / 255)``."""
    units, D = fit_pixel_scale(fake_mnist()[0]), 784
    K_uniform = -D * math.log(256 / units.scale)
    assert math.isclose(mnist.bound_on_unit_interval(K_uniform, units, D), -D * math.log(256 / 255), rel_tol=1e-12)
