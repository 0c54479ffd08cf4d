"""Fuzzing the patch reader: every mutated file decodes exactly as tifffile does, or is rejected with a reason.

The corpus is seeded: byte flips in the TIFF header and IFD, truncations, extreme offsets and counts
written into IFD entries, and hostile PNG/JPEG headers. It starts from the genuine Kaggle TIFFs when
PCAM_SHARED_DATA points at them, else from tifffile-written patches. Memory is bounded per file with
tracemalloc (numpy and Python allocations). bench/bench_fuzz.py runs the same with a larger corpus.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pcam_tfds.core import patches

CORPUS_SIZE = 1200
MEMORY_BOUND = 64 << 20  # bytes allocated while decoding one file


def seed_files() -> list[bytes]:
    root = os.environ.get("PCAM_SHARED_DATA")
    genuine = sorted(Path(root, "kaggle_genuine").glob("*/*.tif")) if root else []
    if genuine:
        return [p.read_bytes() for p in genuine[:8]]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(4):
        buf = io.BytesIO()
        tifffile.imwrite(buf, rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), photometric="rgb")
        out.append(buf.getvalue())
    return out


def _ifd_entries(data: bytes) -> list[int]:
    try:
        (ifd,) = struct.unpack_from("<I", data, 4)
        (count,) = struct.unpack_from("<H", data, ifd)
    except struct.error:
        return []
    return [ifd + 2 + 12 * k for k in range(min(count, 64)) if ifd + 14 + 12 * k <= len(data)]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = rng.integers(0, 5)
    entries = _ifd_entries(data)
    if kind == 0:  # byte flips in the header and the IFD
        end = max(entries, default=8) + 12
        for _ in range(rng.integers(1, 6)):
            out[int(rng.integers(0, min(end, len(out))))] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # truncation
        out = out[: int(rng.integers(0, len(out)))]
    elif kind == 2 and entries:  # an extreme count or value in one IFD entry
        pos = int(rng.choice(entries))
        extreme = int(rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, len(data), len(data) - 1, 520093792]))
        struct.pack_into("<I", out, pos + int(rng.choice([4, 8])), extreme)
    elif kind == 3:  # the first-IFD offset or the next-IFD pointer
        where = 4 if rng.integers(0, 2) or not entries else max(entries) + 12
        if where + 4 <= len(out):
            struct.pack_into(
                "<I", out, where, int(rng.choice([0, 8, len(data), 0xFFFFFFFF, int(rng.integers(0, len(data)))]))
            )
    else:  # a field type or tag changed
        if entries:
            pos = int(rng.choice(entries))
            struct.pack_into("<H", out, pos + int(rng.choice([0, 2])), int(rng.integers(0, 65536)))
    return bytes(out)


def _png(width: int, height: int, color_type: int = 2, bit_depth: int = 8) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 256)) + chunk(b"IEND", b"")
    )


def _jpeg(width: int, height: int) -> bytes:
    # SOI, a baseline SOF0 frame header declaring width x height, then EOI.
    sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 17, 8, height, width, 3) + bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
    return b"\xff\xd8" + sof + b"\xff\xd9"


def hostile_headers() -> list[bytes]:
    sizes = [(30000, 30000), (65535, 65535), (1, 1), (96, 96), (0, 96), (4000, 4000), (96, 1 << 30)]
    return (
        [_png(w, h) for w, h in sizes]
        + [_png(96, 96, c, d) for c, d in ((0, 16), (6, 8), (3, 8), (2, 16))]
        + [_jpeg(w, h) for w, h in sizes if 0 < w <= 65535 and h <= 65535]
    )


def corpus(size: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    seeds = seed_files()
    return [mutate(seeds[i % len(seeds)], rng) for i in range(size)] + hostile_headers()


def _tifffile_reference(data: bytes):
    """tifffile's pixels, colour planes last (planar configuration 2 gives them first)."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            pixels = page.asarray()
            if int(page.planarconfig) == 2 and pixels.ndim == 3 and pixels.shape[0] == page.samplesperpixel > 1:
                pixels = np.moveaxis(pixels, 0, -1)
            return pixels
    except Exception:  # noqa: BLE001 - any failure means tifffile does not accept the file
        return None


def check_corpus(files: list[bytes]) -> dict[str, int]:
    """Decodes every file; returns counts by outcome. Fails on any escape, mismatch or memory breach."""
    counts: dict[str, int] = {}
    tracemalloc.start()
    try:
        for i, data in enumerate(files):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            try:
                pixels = patches.decode_patch(data)
                outcome = "decoded"
            except patches.PatchError as e:
                assert e.reason in patches.REASONS and e.detail, (i, e)
                pixels, outcome = None, e.reason
            peak = tracemalloc.get_traced_memory()[1] - before
            assert peak < MEMORY_BOUND, f"file {i}: {peak} bytes allocated while decoding"
            if pixels is not None and data[:2] in (b"II", b"MM"):
                reference = _tifffile_reference(data)
                assert reference is not None and np.array_equal(pixels, reference), f"file {i} decoded unlike tifffile"
            counts[outcome] = counts.get(outcome, 0) + 1
    finally:
        tracemalloc.stop()
    return counts


def test_mutated_tiffs_and_hostile_headers_decode_exactly_or_are_rejected():
    files = corpus(CORPUS_SIZE)
    assert len(files) >= 1000
    counts = check_corpus(files)
    assert sum(counts.values()) == len(files)
    assert counts.get("decoded", 0) > 0 and len(counts) >= 4, counts  # the corpus reaches several outcomes


def test_the_corpus_is_seeded():
    assert corpus(50, seed=3) == corpus(50, seed=3)
    assert corpus(50, seed=3) != corpus(50, seed=4)


@pytest.mark.parametrize("size", [(30000, 30000), (65535, 65535)])
def test_decompression_bomb_headers_are_too_large(size):
    with pytest.raises(patches.PatchError) as e:
        patches.decode_patch(_png(*size))
    assert e.value.reason == patches.TOO_LARGE
