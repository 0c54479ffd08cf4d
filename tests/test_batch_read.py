"""The validation's per-file kernel (core.batch_read, core.moments, the native _kernel.c): every file gets the record
that reading and decoding it on its own gives, with the native kernel and without it.

The reference is the file-by-file path: patches.read_file, decode_patch, pixel_hash, and the moments from
integer sums (`_exact_moments`). The
files mix two TIFF writers (genuine Kaggle bytes when PCAM_SHARED_DATA is set), PNG, JPEG, every bad kind of
test_patches, the fuzz test's mutations of the TIFF header, files that are not regular, missing or too large
for a row, so that the layout templates are both used and refused.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import test_fuzz
import test_patches
import tifffile
from PIL import Image

from pcam_tfds.core import batch_read, layout, moments, patches, tiff_layout


@pytest.fixture(params=["native", "python"])
def kernel(request, monkeypatch):
    """Runs a test with the native kernel (when it is built) and with its Python and numpy stand-ins."""
    if request.param == "native":
        if patches._native is None:
            pytest.skip("the native kernel (pcam_tfds/core/_kernel.c) is not built here: pip install -e . builds it")
    else:
        monkeypatch.setattr(patches, "_native", None)
    monkeypatch.setattr(batch_read._ROWS, "templates", [])
    return request.param


def _rgb(seed: int, shape=(96, 96, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _tiff(pixels, **kwargs) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, **kwargs)
    return buf.getvalue()


def _pil(pixels, fmt) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _expected(path: str) -> dict:
    """The record of one file, the file-by-file way."""
    rec = {"size_bytes": 0, "mtime_ns": None, "pixel_hash": None, "reason": None, "detail": "", "moments": None}
    try:
        data, rec["mtime_ns"] = patches.read_file(path)
    except OSError as e:
        return dict(rec, reason=patches.UNREADABLE, detail=f"{type(e).__name__}: {e}")
    except patches.PatchError as e:
        return dict(rec, reason=e.reason, detail=e.detail)
    rec["size_bytes"] = len(data)
    try:
        pixels = patches.decode_patch(data)
    except patches.PatchError as e:
        return dict(rec, reason=e.reason, detail=e.detail)
    return dict(rec, pixel_hash=patches.pixel_hash(pixels), moments=_exact_moments(pixels))


def _exact_moments(pixels) -> list[float]:
    """Mean of r, g, b, then their standard deviations, from the sums taken in int64: each one division of
    exact integers, correctly rounded."""
    flat = np.asarray(pixels).reshape(-1, 3).astype(np.int64)
    n, s, q = len(flat), flat.sum(axis=0), (flat * flat).sum(axis=0)
    return (s / n).tolist() + np.sqrt((n * q - s * s) / (n * n)).tolist()


def _got(cols: batch_read.FileColumns, i: int) -> dict:
    decoded, rec = cols.pixel_hash[i] is not None, cols.record(i)
    return {
        "size_bytes": rec["size_bytes"],
        "mtime_ns": rec["mtime_ns"],
        "pixel_hash": cols.pixel_hash[i],
        "reason": cols.reason[i],
        "detail": cols.detail[i],
        "moments": cols.moments[i].tolist() if decoded else None,
    }


def _mixed_folder(folder: Path, shared_data_dir: str | None) -> list[str]:
    """Files of every kind, interleaved so that each group holds several writers and some bad files."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    genuine = sorted(Path(shared_data_dir, "kaggle_genuine").glob("*/*.tif")) if shared_data_dir else []
    for k, p in enumerate(genuine):
        files[f"genuine{k:03d}.tif"] = p.read_bytes()
    for k in range(150):
        files[f"writer{k:03d}.tif"] = _tiff(_rgb(k), photometric="rgb")
    for k in range(6):
        files[f"described{k:03d}.tif"] = _tiff(_rgb(500 + k), photometric="rgb", description=f"patch {k:04d}")
        files[f"png{k:03d}.png"] = _pil(_rgb(600 + k), "PNG")
        files[f"jpeg{k:03d}.jpg"] = _pil(_rgb(700 + k), "JPEG")
    for name, (make, _) in test_patches.BAD.items():
        files[f"bad_{name}.tif"] = make()
    for k, data in enumerate(test_fuzz.corpus(300)):
        files[f"fuzz{k:04d}.tif"] = data
    # The same pixels as a writer's file but two bytes of its header flipped: never viewed through a template.
    flipped = bytearray(files["writer000.tif"])
    flipped[10] ^= 0xFF
    files["flipped.tif"] = bytes(flipped)
    # Pixel bytes changed in place: viewed through the template, and hashed as what they are.
    changed = bytearray(files["writer001.tif"])
    changed[-100] ^= 0x55
    files["changed.tif"] = bytes(changed)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "zz_fifo.tif")
    (folder / "zz_dir.tif").mkdir()
    names = sorted(files) + ["zz_fifo.tif", "zz_dir.tif"]
    rng = np.random.default_rng(0)
    rng.shuffle(names)
    return [str(folder / n) for n in names] + [str(folder / "missing.tif")]


def test_every_file_gets_the_record_of_reading_it_alone(tmp_path, kernel, monkeypatch):
    paths = _mixed_folder(tmp_path / "train", os.environ.get("PCAM_SHARED_DATA"))
    kept, decoded = {}, []
    decode = patches.decode_patch
    monkeypatch.setattr(patches, "decode_patch", lambda data: decoded.append(1) or decode(data))
    cols = batch_read.read_columns(paths, layout.TRAIN, keep=lambda i, px: kept.__setitem__(i, bytes(px)))
    # Most of the writers' files were viewed through a template, not decoded one by one.
    assert batch_read._ROWS.templates and len(decoded) < len(paths) - 100
    reasons = set()
    for i, path in enumerate(paths):
        expected = _expected(path)
        assert _got(cols, i) == expected, path
        reasons.add(expected["reason"])
        rec = cols.record(i)
        assert rec["id"] == layout.file_id(path) and rec["valid"] == (expected["reason"] is None)
        if expected["pixel_hash"] is not None:
            assert patches.patch_hash(kept[i]) == expected["pixel_hash"]
    assert set(kept) == {i for i in range(len(paths)) if cols.pixel_hash[i] is not None}
    assert len(reasons) >= 8 and None in reasons  # the folder did hold every kind of file
    table = cols.arrow()
    assert table.column("id").to_pylist() == [layout.file_id(p) for p in paths]
    assert table.column("mean_g").to_pylist() == [
        r["mean"][1] if r["mean"] else None for r in map(cols.record, range(len(paths)))
    ]


def test_templates_are_learned_and_only_trusted_for_the_same_bytes(tmp_path, kernel):
    first = [_tiff(_rgb(k), photometric="rgb") for k in range(3)]
    batch_read._ROWS.templates.clear()
    for k, data in enumerate(first):
        (tmp_path / f"{k}.tif").write_bytes(data)
    cols = batch_read.read_columns([str(tmp_path / f"{k}.tif") for k in range(3)], layout.TEST)
    assert len(batch_read._ROWS.templates) == 1 and batch_read._ROWS.templates[0].size == len(first[0])
    assert cols.pixel_hash == [patches.pixel_hash(_rgb(k)) for k in range(3)]
    # A file of the template's size whose header says 64 columns: its bytes outside the pixels differ, so it is
    # decoded on its own and rejected, not viewed as a 96x96 patch.
    other = _tiff(_rgb(9, (96, 96, 3)).reshape(144, 64, 3), photometric="rgb")
    assert len(other) == len(first[0])
    (tmp_path / "other.tif").write_bytes(other)
    cols = batch_read.read_columns([str(tmp_path / "other.tif"), str(tmp_path / "0.tif")], layout.TEST)
    assert cols.reason == [patches.WRONG_SIZE, None]


def test_a_layout_whose_ifd_lies_in_the_pixels_is_no_template():
    data = bytearray(_tiff(_rgb(1), photometric="rgb"))
    assert tiff_layout.layout_spans(bytes(data), patches.PATCH_SHAPE) is not None
    # Point the strip at the IFD itself: the file still decodes as a patch, but its pixels include the IFD, so
    # the bytes outside the pixels do not decide the layout and it must not become a template.
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    for pos in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, typ, num = struct.unpack_from("<HHI", data, pos)
        if tag == 273:
            assert num == 1
            struct.pack_into("<I" if typ == 4 else "<H", data, pos + 8, ifd)
    assert patches.decode_patch(bytes(data)).shape == patches.PATCH_SHAPE
    assert tiff_layout.layout_spans(bytes(data), patches.PATCH_SHAPE) is None


def test_a_file_too_large_for_a_row_is_read_whole(tmp_path, kernel):
    big = _tiff(_rgb(3), photometric="rgb", description="x" * 40_000)
    (tmp_path / "big.tif").write_bytes(big)
    cols = batch_read.read_columns([str(tmp_path / "big.tif")], layout.TRAIN)
    assert cols.pixel_hash == [patches.pixel_hash(_rgb(3))] and cols.record(0)["size_bytes"] == len(big)


@pytest.mark.parametrize("simd", [True, False])
@pytest.mark.parametrize("kind", ["random", "flat", "extremes"])
def test_hashes_and_moments_of_patches_in_rows_are_exact(kernel, kind, simd):
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 256, (9, 28_672), dtype=np.uint8)
    if kind == "flat":
        rows[:] = 200
        rows[:, 300] = 201
    elif kind == "extremes":
        rows = rng.choice(np.array([0, 255], np.uint8), rows.shape)
    offsets = np.array([j * 28_672 + (287 if j % 2 else 272) for j in range(9)], np.int64)
    offsets[4] = -1
    flat = rows.reshape(-1)
    hexes = np.zeros((9, 32), np.uint8)
    if kernel == "native":  # the sums (with AVX2, and the plain loop) and the hashes, as batch_read takes them
        sums = np.zeros((9, 6), np.int64)
        was = patches._native.simd(simd)
        try:
            patches._native.scan_patches(flat, offsets, patches.PATCH_HASH_PREFIX, hexes, sums)
        finally:
            patches._native.simd(was)
        got = np.full((9, 6), np.nan)
        got[offsets >= 0] = moments.from_sums(sums[offsets >= 0])
    else:  # numpy's one way, whatever SIMD says
        got = moments.moments_at(rows, offsets)
    for j, o in enumerate(offsets.tolist()):
        if o < 0:
            assert np.isnan(got[j]).all() and not hexes[j].any()
            continue
        assert got[j].tolist() == _exact_moments(flat[o : o + patches.PATCH_BYTES])
        if kernel == "native":
            assert hexes[j].tobytes().decode() == patches.patch_hash(flat[o : o + patches.PATCH_BYTES].data)


def test_read_file_into_a_row(tmp_path, monkeypatch):
    data = _tiff(_rgb(2), photometric="rgb")
    (tmp_path / "a.tif").write_bytes(data)
    row = memoryview(bytearray(28_672))
    got, mtime = patches.read_file(str(tmp_path / "a.tif"), into=row)
    assert isinstance(got, memoryview) and bytes(got) == data and mtime == (tmp_path / "a.tif").stat().st_mtime_ns
    got, _ = patches.read_file(str(tmp_path / "a.tif"), into=row[: len(data)])  # no room for the extra byte
    assert isinstance(got, bytes) and got == data
    monkeypatch.delattr(os, "readv")  # Windows has none: the file is read as bytes, and a group still reads
    got, _ = patches.read_file(str(tmp_path / "a.tif"), into=row)
    assert isinstance(got, bytes) and got == data
    monkeypatch.setattr(patches, "_native", None)
    cols = batch_read.read_columns([str(tmp_path / "a.tif")] * 3, layout.TEST)
    assert cols.pixel_hash == [patches.pixel_hash(_rgb(2))] * 3


@pytest.mark.parametrize(
    "paths",
    [
        ["/d/train/a.tif", "/d/train/b.tif"],
        ["/d/train/a.tif", "/d/train/.tif"],
        ["/d/train/a.tif", "/d/train/b.png"],
        ["/d/train/a.tif", "/d/train/c\\d.tif"],
        ["/d/train/a.tif", "/d/test/b.tif"],
        ["/d/train/a.tif", "/d/train/c/d.tif"],
        ["/d/train/x.y.tif", "/é/日本/ü.tif"],
        ["/é/日本/ü.tif", "/é/日本/x.y.tif"],
        ["C:\\d\\x.tif", "C:\\d\\y.tif"],
        ["a.tif"],
        [],
    ],
)
def test_the_ids_of_a_batch_are_file_ids(paths):
    import pyarrow as pa

    assert batch_read._file_ids(pa.array(paths, pa.string())).to_pylist() == [layout.file_id(p) for p in paths]
