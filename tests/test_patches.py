"""The patch reader: genuine Kaggle bytes, every fallback format, and a reason for each bad file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from beam_jobs import patches


def _rgb(seed=0, shape=(96, 96, 3), dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(dtype)


def _tiff(pixels, **kwargs) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, **kwargs)
    return buf.getvalue()


def _pil(pixels, fmt, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_genuine_kaggle_files_read_exactly_as_tifffile(shared_data):
    files = sorted((shared_data / "kaggle_genuine").glob("*/*.tif"))
    assert len(files) == 44, "15 train + 29 test genuine files expected"
    for f in files:
        data = f.read_bytes()
        assert struct_offset(data) == 287, f"{f}: genuine files keep their pixels at byte 287"
        ours = patches.decode_patch(data)
        np.testing.assert_array_equal(ours, tifffile.imread(f), err_msg=str(f))
        assert ours.dtype == np.uint8 and ours.shape == (96, 96, 3)


def struct_offset(data: bytes) -> int:
    """Strip offset of a baseline TIFF, found with tifffile (independently of the code under test)."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        return tif.pages[0].dataoffsets[0]


def test_fast_path_reads_tifffile_written_files_at_their_own_offset():
    px = _rgb(1)
    data = _tiff(px)
    assert struct_offset(data) != 287  # a different layout from the genuine files
    np.testing.assert_array_equal(patches._fast_tiff(data), px)
    np.testing.assert_array_equal(patches.decode_patch(data), px)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"compression": "zlib"},
        {"tile": (32, 32)},
        {"byteorder": ">"},
        {"rowsperstrip": 10},  # several strips, contiguous: still the fast path
        {"planarconfig": "separate"},
    ],
    ids=["compressed", "tiled", "big-endian", "multi-strip", "planar"],
)
def test_other_tiff_layouts_fall_back_and_read_correctly(kwargs):
    px = _rgb(2)
    if kwargs.get("planarconfig") == "separate":
        data = _tiff(np.moveaxis(px, -1, 0), photometric="rgb", **kwargs)
        # A planar file decodes to (3, 96, 96): not a chunky RGB patch.
        with pytest.raises(patches.PatchError) as e:
            patches.decode_patch(data)
        assert e.value.reason == patches.WRONG_CHANNELS
        return
    data = _tiff(px, photometric="rgb", **kwargs)
    np.testing.assert_array_equal(patches.decode_patch(data), px)


def test_png_and_jpeg_patches():
    px = _rgb(3)
    np.testing.assert_array_equal(patches.decode_patch(_pil(px, "PNG")), px)
    jpeg = patches.decode_patch(_pil(px, "JPEG", quality=95))
    assert jpeg.shape == (96, 96, 3) and jpeg.dtype == np.uint8


def test_real_sample_jpeg_reads(shared_data):
    f = next((shared_data / "pcam_sample" / "train").glob("*.jpg"))
    px = patches.read_patch(str(f))
    np.testing.assert_array_equal(px, np.asarray(Image.open(f).convert("RGB")))


BAD = {
    "empty": (lambda: b"", patches.EMPTY_FILE),
    "text": (lambda: b"id,label\nabc,1\n", patches.NOT_AN_IMAGE),
    "truncated_tiff": (lambda: _tiff(_rgb())[:20000], patches.TRUNCATED),
    "truncated_header": (lambda: _tiff(_rgb())[:60], patches.TRUNCATED),
    "truncated_jpeg": (lambda: _pil(_rgb(), "JPEG")[:500], patches.TRUNCATED),
    "wrong_size": (lambda: _tiff(_rgb(shape=(64, 64, 3))), patches.WRONG_SIZE),
    "grayscale": (lambda: _tiff(_rgb(shape=(96, 96))), patches.WRONG_CHANNELS),
    "rgba": (lambda: _tiff(_rgb(shape=(96, 96, 4)), photometric="rgb", extrasamples=[2]), patches.WRONG_CHANNELS),
    "rgba_png": (lambda: _pil(_rgb(shape=(96, 96, 4)), "PNG"), patches.WRONG_CHANNELS),
    "16_bit": (lambda: _tiff(_rgb(dtype=np.uint16) * 200, photometric="rgb"), patches.WRONG_DTYPE),
    "float": (lambda: _tiff(_rgb(dtype=np.float32), photometric="rgb"), patches.WRONG_DTYPE),
    "garbage_tiff": (lambda: b"II*\x00" + b"\xff" * 100, patches.TRUNCATED),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_file_kind_gets_its_reason(kind):
    make, reason = BAD[kind]
    with pytest.raises(patches.PatchError) as e:
        patches.decode_patch(make())
    assert e.value.reason == reason, e.value
    assert e.value.detail  # says what was found


def test_read_record_never_raises(tmp_path):
    from beam_jobs.transforms import read_record

    (tmp_path / "a.tif").write_bytes(b"")
    rec, px = read_record(str(tmp_path / "a.tif"), "train")
    assert px is None and not rec["valid"] and rec["reason"] == patches.EMPTY_FILE
    rec, px = read_record(str(tmp_path / "missing.tif"), "train")
    assert px is None and rec["reason"] == patches.UNREADABLE and "missing.tif" in rec["detail"]


def test_pixel_hash_depends_on_pixels_not_encoding():
    px = _rgb(4)
    a = patches.pixel_hash(patches.decode_patch(_tiff(px)))
    b = patches.pixel_hash(patches.decode_patch(_pil(px, "PNG")))
    c = patches.pixel_hash(patches.decode_patch(_tiff(_rgb(5))))
    assert a == b != c


def test_channel_moments():
    px = np.zeros((96, 96, 3), np.uint8)
    px[..., 0] = 10
    px[:48, :, 1] = 100
    mean, std = patches.channel_moments(px)
    np.testing.assert_allclose(mean, [10, 50, 0])
    np.testing.assert_allclose(std, [0, 50, 0])


def test_layout_cache_rechecks_out_of_line_values():
    px = _rgb(6)
    data = bytearray(_tiff(px, photometric="rgb"))
    cache = {}
    np.testing.assert_array_equal(patches._fast_tiff(bytes(data), cache), px)
    assert len(cache) == 1
    # Same IFD bytes, but BitsPerSample (stored out of line) now says 16: the cached layout must not be used.
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tag = tif.pages[0].tags["BitsPerSample"]
        where = tag.valueoffset
    data[where : where + 6] = b"\x10\x00" * 3
    assert patches._fast_tiff(bytes(data), cache) is None  # falls back to tifffile


def test_read_bytes_large_and_empty(tmp_path):
    big = bytes(range(256)) * 10000  # larger than one read
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "empty").write_bytes(b"")
    assert patches.read_bytes(str(tmp_path / "big")) == big
    assert patches.read_bytes(str(tmp_path / "empty")) == b""
