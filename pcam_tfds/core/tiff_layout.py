"""Where a baseline little-endian TIFF keeps its pixels, read from its IFD with `struct`: no TIFF library.

    pixels = view_pixels(data)            # a view of DATA's pixel bytes, or None: let tifffile decode it
    offset, spans = layout_spans(data, shape)   # the bytes that decide where the pixels are (or None)

Kaggle ships each patch as such a file (uncompressed, chunky, 8-bit, one strip). The pixel offset is read
from the IFD, never assumed: genuine Kaggle files put the pixels at byte 287, tifffile-written ones at 272.
Anything else (compressed, tiled, planar, several images, a malformed layout tag) is left to tifffile
(pcam_tfds.core.patches). A file that ends before what its header points to raises `Truncated`, which
patches reports as a truncated file.
"""

from __future__ import annotations

import math
import struct
from typing import NamedTuple

import numpy as np

TIFF_LE = b"II*\x00"


class Truncated(ValueError):
    """The file ends before a structure its header points to."""


# TIFF tags the fast path reads.
_WIDTH, _HEIGHT, _BITS, _COMPRESSION = 256, 257, 258, 259
_STRIP_OFFSETS, _SAMPLES, _ROWS_PER_STRIP, _STRIP_COUNTS = 273, 277, 278, 279
_PLANAR, _TILE_WIDTH, _SAMPLE_FORMAT = 284, 322, 339
_PHOTOMETRIC = 262
_TYPE_SIZE = {1: 1, 3: 2, 4: 4}  # BYTE, SHORT, LONG: the types baseline tags use
# Tags the pixel layout depends on (the ones above, the other tile tags, photometric interpretation).
_LAYOUT_TAGS = frozenset(
    {
        _WIDTH,
        _HEIGHT,
        _BITS,
        _COMPRESSION,
        _PHOTOMETRIC,
        _STRIP_OFFSETS,
        _SAMPLES,
        _ROWS_PER_STRIP,
        _STRIP_COUNTS,
        _PLANAR,
        _TILE_WIDTH,
        323,
        324,
        325,
        _SAMPLE_FORMAT,
    }
)
_TYPE_FMT = {1: "B", 3: "H", 4: "I"}


class Layout(NamedTuple):
    """Where a baseline TIFF keeps its pixels; None fields mean 'fall back to tifffile'."""

    offset: int | None
    shape: tuple[int, ...] | None
    # The out-of-IFD bytes the layout was read from, as (position, bytes), to check on a cache hit.
    extra: tuple[tuple[int, bytes], ...]


def view_pixels(data: bytes, cache: dict | None = None) -> np.ndarray | None:
    """Views the pixels of a baseline little-endian TIFF, or returns None to fall back.

    Returns None for anything but a single image with contiguous uncompressed
    chunky 8-bit strips; raises Truncated only for truncation, which tifffile
    would report less clearly. The parsed layout is cached by the bytes of the
    IFD (plus the out-of-line tag values it points to): all files from one
    writer share it, and parsing costs more than the rest of decoding.
    """
    n = len(data)
    ifd, count, end = _first_ifd(data)
    cache = _LAYOUTS if cache is None else cache
    key = bytes(data[ifd:end])
    layout = cache.get(key)
    if layout is None or any(data[pos : pos + len(b)] != b for pos, b in layout.extra):
        layout = _parse_ifd(data, ifd, count)
        if len(cache) < _MAX_LAYOUTS:
            cache[key] = layout
    if layout.offset is None:
        return None
    if end + 4 <= n and struct.unpack_from("<I", data, end)[0] != 0:
        return None  # a next image follows: tifffile counts the pages
    size = math.prod(layout.shape)
    if layout.offset + size > n:
        raise Truncated(f"pixels end at byte {layout.offset + size} but the file has {n} bytes")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=layout.offset).reshape(layout.shape)


# Layouts seen so far, by IFD bytes. Bounded: a handful of writers produce every file of a data set.
_LAYOUTS: dict[bytes, Layout] = {}
_MAX_LAYOUTS = 256


def layout_spans(data: bytes, shape: tuple[int, ...]) -> tuple[int, tuple[tuple[int, int], ...]] | None:
    """(pixel offset, the byte ranges that decide the layout) of a TIFF that `view_pixels` views as an 8-bit
    image of SHAPE, when all those ranges lie outside its pixels; else None.

    The ranges are the header, the IFD with the next-IFD pointer, and the out-of-line values of the tags
    `view_pixels` reads (not those of descriptive tags such as DateTime, which Kaggle's files each set to the
    second they were written). Any file of the same size with the same bytes in these ranges views the pixels
    at the same offset (pcam_tfds.core.batch_read's templates).
    """
    if bytes(data[:4]) != TIFF_LE:
        return None
    try:
        ifd, count, end = _first_ifd(data)
        layout = _parse_ifd(data, ifd, count)
    except Truncated:
        return None
    if end + 4 > len(data) or struct.unpack_from("<I", data, end)[0] != 0:
        return None  # no next-IFD pointer, or a next image: view_pixels does not view it alike
    lo, hi = layout.offset, (layout.offset or 0) + math.prod(shape)
    if lo is None or layout.shape != tuple(shape) or hi > len(data):
        return None
    spans = ((0, 8), (ifd, end + 4)) + tuple((pos, pos + len(b)) for pos, b in layout.extra)
    if any(a < hi and lo < b for a, b in spans):
        return None
    return lo, spans


def _first_ifd(data: bytes) -> tuple[int, int, int]:
    """(where the first IFD starts, its number of entries, where its entries end); Truncated when the file
    ends before them."""
    n = len(data)
    if n < 8:
        raise Truncated(f"{n} bytes is shorter than a TIFF header")
    (ifd,) = struct.unpack_from("<I", data, 4)
    if ifd + 2 > n:
        raise Truncated(f"first IFD at byte {ifd} is beyond the end of a {n}-byte file")
    (count,) = struct.unpack_from("<H", data, ifd)
    end = ifd + 2 + 12 * count
    if end > n:
        raise Truncated(f"IFD of {count} entries at byte {ifd} runs past the end of a {n}-byte file")
    return ifd, count, end


def _parse_ifd(data: bytes, ifd: int, count: int) -> Layout:
    n = len(data)
    tags, extra = {}, []
    for pos in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, typ, num = struct.unpack_from("<HHI", data, pos)
        size = _TYPE_SIZE.get(typ)
        if tag in _LAYOUT_TAGS and (typ not in (3, 4) or tag in tags):
            # A layout tag of a type the spec does not allow, or given twice: malformed, so tifffile decides.
            return Layout(None, None, ())
        if size is None:
            continue  # ASCII, RATIONAL, ...: descriptive tags the pixels do not depend on
        if num == 0:
            return Layout(None, None, ())  # a tag without values is malformed: tifffile decides (the fuzz test)
        where = pos + 8 if size * num <= 4 else struct.unpack_from("<I", data, pos + 8)[0]
        if where + size * num > n:
            raise Truncated(f"tag {tag} values at byte {where} run past the end of a {n}-byte file")
        if where != pos + 8:
            extra.append((where, bytes(data[where : where + size * num])))
        tags[tag] = struct.unpack_from(f"<{num}{_TYPE_FMT[typ]}", data, where)
    fallback = Layout(None, None, tuple(extra))

    def one(tag, default=None):
        v = tags.get(tag)
        return default if v is None else v[0]

    width, height, samples = one(_WIDTH), one(_HEIGHT), one(_SAMPLES, 1)
    bits = tags.get(_BITS, (1,))
    if (
        width is None
        or height is None
        or one(_COMPRESSION, 1) != 1
        or one(_PHOTOMETRIC, 2) != 2
        or one(_PLANAR, 1) != 1
        or _TILE_WIDTH in tags
        or one(_SAMPLE_FORMAT, 1) != 1
        or any(b != 8 for b in bits)
        or _STRIP_OFFSETS not in tags
        or _STRIP_COUNTS not in tags
    ):
        return fallback
    offsets, counts = tags[_STRIP_OFFSETS], tags[_STRIP_COUNTS]
    # Several strips are viewable only when they lie back to back.
    for i in range(1, len(offsets)):
        if offsets[i] != offsets[i - 1] + counts[i - 1]:
            return fallback
    if sum(counts) != width * height * samples:
        return fallback
    shape = (height, width, samples) if samples > 1 else (height, width)
    return Layout(offsets[0], shape, tuple(extra))
