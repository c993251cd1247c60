"""A texture photograph: reading (PNG, JPEG, colour to grey, 8 bits), the one-line errors, the
training and held-out regions and their patches, the units.  The images are generated here."""
import math

import matplotlib.image
import numpy as np
import pytest

from numpy_diffusion.image import texture as tx
from numpy_diffusion.image.pixels import fit_pixel_scale


def bark_like(H=48, W=70, seed=0):
    """A synthetic texture: vertical ridges of random phase plus noise, 8-bit."""
    rng = np.random.default_rng(seed)
    j = np.arange(W)[None, :] + 3 * np.sin(np.arange(H)[:, None] / 5)
    v = 128 + 60 * np.sin(j / 2.5 + rng.uniform(0, 6)) + rng.normal(0, 15, (H, W))
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def save_grey(path, q):
    """An 8-bit grey image saved as RGB (matplotlib's imsave writes RGB(A) values as given)."""
    matplotlib.image.imsave(path, np.stack([q] * 3, axis=-1))
    return path


def test_png_grey_levels_come_back_exactly(tmp_path):
    q = bark_like()
    got = tx.read_texture(save_grey(tmp_path / "bark.png", q))
    assert got.dtype == np.uint8 and got.shape == q.shape
    np.testing.assert_array_equal(got, q)


def test_every_grey_level_survives_the_png_round_trip(tmp_path):
    q = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(tx.read_texture(save_grey(tmp_path / "levels.png", q)), q)


@pytest.mark.parametrize("channel, grey", [(0, 76), (1, 150), (2, 29)])
def test_colour_becomes_bt601_luma(tmp_path, channel, grey):
    """Pure red, green, blue at 255: 0.299 * 255 = 76.2, 0.587 * 255 = 149.7, 0.114 * 255 = 29.1."""
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., channel] = 255
    matplotlib.image.imsave(tmp_path / "c.png", rgb)
    assert (tx.read_texture(tmp_path / "c.png") == grey).all()


def test_jpeg_is_read_through_pillow(tmp_path):
    q = bark_like()
    got = tx.read_texture(save_grey(tmp_path / "bark.jpg", q))
    assert got.dtype == np.uint8 and got.shape == q.shape
    assert np.abs(got.astype(int) - q).mean() < 8                          # JPEG is lossy


def test_integer_and_16_bit_arrays_map_to_8_bits():
    np.testing.assert_array_equal(tx.to_grey_levels(np.array([[0, 257 * 7, 65535]], np.uint16)), [[0, 7, 255]])
    np.testing.assert_array_equal(tx.to_grey_levels(np.array([[0.0, 3 / 255, 1.0]], np.float32)), [[0, 3, 255]])
    with pytest.raises(tx.TextureError, match="need .H, W., .H, W, 3. or .H, W, 4."):
        tx.to_grey_levels(np.zeros((4, 4, 2)))
    with pytest.raises(tx.TextureError, match="pixels of type int64"):
        tx.to_grey_levels(np.zeros((4, 4), np.int64))


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "cannot be read as an image .No such file or directory."),
    (lambda p: p.write_text("not an image"), "cannot be read as an image"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20), "cannot be read as an image"),
])
def test_unreadable_files_are_refused_in_one_line(tmp_path, make, message):
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(tx.TextureError, match=message) as err:
        tx.load_texture(path, 8)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_an_image_smaller_than_a_patch_is_refused(tmp_path):
    path = save_grey(tmp_path / "small.png", bark_like(H=40, W=50))
    with pytest.raises(tx.TextureError, match=r"40 x 50 pixels is too small for 12 x 12 patches.*\(10 columns\)"):
        tx.load_texture(path, 12)
    with pytest.raises(tx.TextureError, match="too small for 41 x 41"):
        tx.load_texture(path, 41, train_fraction=0.5)
    assert tx.load_texture(path, 10).held_out.shape == (40, 10)


def test_a_constant_image_is_refused(tmp_path):
    path = save_grey(tmp_path / "flat.png", np.full((30, 40), 77, np.uint8))
    with pytest.raises(tx.TextureError, match=r"one grey level \(77\): a constant image"):
        tx.load_texture(path, 8)


def test_regions_split_the_columns_and_patches_stay_inside_them():
    """Each pixel holds its column index, so a patch's values say where it was cut."""
    H, W, patch = 20, 100, 6
    q = np.tile(np.arange(W, dtype=np.uint8), (H, 1))
    t = tx.split_texture(q, patch)
    assert t.train.shape == (H, 80) and t.held_out.shape == (H, 20)
    np.testing.assert_array_equal(np.concatenate([t.train, t.held_out], axis=1), q)
    rng = np.random.default_rng(0)
    train, held = tx.random_patches(t.train, patch, 500, rng), tx.random_patches(t.held_out, patch, 500, rng)
    assert train.shape == held.shape == (500, patch, patch) and train.dtype == np.uint8
    assert train.max() < 80 <= held.min()                                  # disjoint regions
    np.testing.assert_array_equal(np.diff(train, axis=2), 1)               # contiguous columns, left to right
    assert train[:, 0, 0].min() == 0 and train[:, 0, -1].max() == 79      # every position reachable
    assert held[:, 0, 0].min() == 80 and held[:, 0, -1].max() == 99


def test_patch_rows_are_contiguous_and_reach_both_edges():
    H, W, patch = 30, 10, 4
    q = np.tile(np.arange(H, dtype=np.uint8)[:, None], (1, W))
    p = tx.random_patches(q, patch, 400, np.random.default_rng(1))
    np.testing.assert_array_equal(np.diff(p, axis=1), 1)
    assert p[:, 0, 0].min() == 0 and p[:, -1, 0].max() == H - 1


def test_units_come_from_the_training_region(tmp_path):
    q = bark_like()
    t = tx.load_texture(save_grey(tmp_path / "bark.png", q), 12)
    assert t.units == fit_pixel_scale(q[:, :56])                           # round(0.8 * 70) = 56 columns
    x0 = t.units.dequantize(tx.random_patches(t.train, 12, 64, np.random.default_rng(2)), np.random.default_rng(3))
    assert x0.shape == (64, 144) and abs(x0.mean()) < 0.2 and 0.7 < x0.var() < 1.3   # not 0..255 nor 0..1
    assert math.isclose(t.units.nll_bits_per_dim(-144 * math.log(256 / t.units.scale), 144), 8.0)


def test_random_patches_refuses_a_patch_larger_than_the_region():
    with pytest.raises(ValueError, match="patch must be in 1..5"):
        tx.random_patches(np.zeros((5, 9), np.uint8), 6, 1, np.random.default_rng(0))


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5])
def test_train_fraction_must_leave_both_regions(fraction):
    with pytest.raises(ValueError, match="train_fraction must be between 0 and 1"):
        tx.split_texture(bark_like(), 4, train_fraction=fraction)
