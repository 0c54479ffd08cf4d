"""The patch reader: genuine Kaggle bytes, every fallback format, and a reason for each bad file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from pcam_tfds.core import moments, patches, tiff_layout


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
    np.testing.assert_array_equal(tiff_layout.view_pixels(data), px)
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
        # Planar configuration 2 stores the three colour planes apart; it is still an RGB patch.
        data = _tiff(np.moveaxis(px, -1, 0), photometric="rgb", **kwargs)
    else:
        data = _tiff(px, photometric="rgb", **kwargs)
    np.testing.assert_array_equal(patches.decode_patch(data), px)


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "packbits"])
def test_compressed_tiffs_decode_exactly(compression):
    px = _rgb(5)
    np.testing.assert_array_equal(patches.decode_patch(_tiff(px, photometric="rgb", compression=compression)), px)


def test_jpeg_compressed_tiff_decodes_as_tifffile_does():
    data = _tiff(_rgb(6), photometric="rgb", compression="jpeg")
    np.testing.assert_array_equal(patches.decode_patch(data), tifffile.imread(io.BytesIO(data)))


def test_multi_page_tiff_gets_its_own_reason():
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as w:
        w.write(_rgb(7), photometric="rgb")
        w.write(_rgb(8), photometric="rgb")
    with pytest.raises(patches.PatchError) as e:
        patches.decode_patch(buf.getvalue())
    assert e.value.reason == patches.MULTI_PAGE and "2 images" in e.value.detail


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
    "png_bomb_header": (lambda: _png_header(30000, 30000), patches.TOO_LARGE),
    "png_large_header": (lambda: _png_header(4000, 4000), patches.TOO_LARGE),
    "tiff_declares_huge_image": (lambda: _tiff_declaring(520093792, 96), patches.TOO_LARGE),
    "too_many_bytes": (lambda: b"II*\x00" + bytes(patches.MAX_FILE_BYTES), patches.TOO_LARGE),
}


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, followed by a few bytes of data."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _tiff_declaring(height: int, width: int) -> bytes:
    """A valid little TIFF whose width/height tags were rewritten to claim a huge image."""
    import struct

    data = bytearray(_tiff(_rgb(), photometric="rgb", compression="deflate"))
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for pos in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, typ = struct.unpack_from("<HH", data, pos)
        if tag in (256, 257):
            struct.pack_into("<HHII", data, pos, tag, 4, 1, width if tag == 256 else height)
    return bytes(data)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_bad_file_kind_gets_its_reason(kind):
    make, reason = BAD[kind]
    with pytest.raises(patches.PatchError) as e:
        patches.decode_patch(make())
    assert e.value.reason == reason, e.value
    assert e.value.detail  # says what was found


def test_only_regular_files_are_opened(tmp_path):
    import os

    from pcam_tfds.core.records import read_record

    os.mkfifo(tmp_path / "fifo.tif")  # opening it would block for ever
    (tmp_path / "dir.tif").mkdir()
    for name, kind in (("fifo.tif", "a FIFO"), ("dir.tif", "a directory")):
        rec, px = read_record(str(tmp_path / name), "test")
        assert px is None and rec["reason"] == patches.NOT_A_REGULAR_FILE and kind in rec["detail"]
        assert patches.try_read_patch(str(tmp_path / name))[1] == patches.NOT_A_REGULAR_FILE
    from pcam_tfds.core import layout

    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "x.tif").mkdir()
    assert layout.list_files(str(tmp_path), "test") == [str(tmp_path / "test" / "x.tif")]  # listed, then rejected


def test_read_record_never_raises(tmp_path):
    from pcam_tfds.core.records import read_record

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


def test_patch_moments():
    px = np.zeros((96, 96, 3), np.uint8)
    px[..., 0] = 10
    px[:48, :, 1] = 100
    (got,) = moments.patch_moments(px.reshape(1, -1))
    mean, std = got[:3], got[3:]
    np.testing.assert_allclose(mean, [10, 50, 0])
    np.testing.assert_allclose(std, [0, 50, 0])


@pytest.mark.parametrize("kind", ["random", "flat", "extremes"])
def test_patch_moments_are_exact(kind):
    # Against the sums taken in integers: what float32 products could get wrong (flat patches, extremes).
    shape = patches.PATCH_SHAPE
    rng = np.random.default_rng(7)
    if kind == "random":
        px = rng.integers(0, 256, shape, dtype=np.uint8)
    elif kind == "flat":
        px = np.full(shape, 200, np.uint8)
        px[0, 0] = 201
    else:
        px = rng.choice(np.array([0, 255], np.uint8), shape)
    flat = px.reshape(-1, shape[-1]).astype(np.int64)
    n, s, q = len(flat), flat.sum(axis=0), (flat * flat).sum(axis=0)
    (got,) = moments.patch_moments(px.reshape(1, -1))
    mean, std = got[:3], got[3:]
    np.testing.assert_allclose(mean, s / n, rtol=1e-15)
    np.testing.assert_allclose(std, np.sqrt((n * q - s * s) / n**2), rtol=1e-12)


def test_layout_cache_rechecks_out_of_line_values():
    px = _rgb(6)
    data = bytearray(_tiff(px, photometric="rgb"))
    cache = {}
    np.testing.assert_array_equal(tiff_layout.view_pixels(bytes(data), cache), px)
    assert len(cache) == 1
    # Same IFD bytes, but BitsPerSample (stored out of line) now says 16: the cached layout must not be used.
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        tag = tif.pages[0].tags["BitsPerSample"]
        where = tag.valueoffset
    data[where : where + 6] = b"\x10\x00" * 3
    assert tiff_layout.view_pixels(bytes(data), cache) is None  # falls back to tifffile


def test_read_bytes_large_and_empty(tmp_path):
    big = bytes(range(256)) * 10000  # larger than one read
    (tmp_path / "big").write_bytes(big)
    (tmp_path / "empty").write_bytes(b"")
    assert patches.read_bytes(str(tmp_path / "big")) == big
    assert patches.read_bytes(str(tmp_path / "empty")) == b""


def test_a_file_is_read_with_one_read(tmp_path, monkeypatch):
    import os

    path = tmp_path / "a.tif"
    path.write_bytes(_tiff(_rgb(3)))
    calls = []
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: calls.append(n) or real_read(fd, n))
    data, mtime = patches.read_file(str(path))
    assert data == path.read_bytes() and mtime == path.stat().st_mtime_ns
    assert calls == [len(data) + 1]  # one read, of the stat's size and one byte more: the end is known from it
    # A file that grows between the stat and the read is read to its end.
    real_stat = os.stat
    monkeypatch.setattr(
        os, "stat", lambda p, *a, **k: real_stat(p, *a, **k) if p != str(path) else _shrunk(real_stat(p))
    )
    calls.clear()
    assert patches.read_file(str(path))[0] == path.read_bytes() and len(calls) == 3


def _shrunk(st):
    import os

    return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, 100, *st[7:]))
