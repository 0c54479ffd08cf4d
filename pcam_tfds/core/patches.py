"""Decoding PCam patches, fast, with a specific reason for every bad file.

Kaggle ships each patch as a baseline, uncompressed, little-endian RGB TIFF of
96x96x3 uint8. For those files `decode_patch` parses the IFD with `struct`,
finds the strip and views the pixel bytes with `np.frombuffer`: no copy, no
TIFF library. The pixel offset is read from the header, never assumed:
genuine Kaggle files put the pixels at byte 287, tifffile-written ones at 272.
Every other TIFF (compressed, tiled, big-endian, planar, multi-strip with
gaps) falls back to `tifffile` (with `imagecodecs` for LZW, JPEG and Deflate);
PNG and JPEG go through Pillow. Sizes are checked before any decoder
allocates, only regular files are opened, and any exception a decoder raises
on hostile bytes becomes a PatchError naming its type and message.

A file that cannot become a 96x96x3 uint8 array raises `PatchError` with one
of the `REASONS` below and a detail naming what was found. Grayscale and RGBA
patches are rejected (`wrong_channels`), not converted: every Kaggle and PCam
patch is RGB, so a different channel layout means a file from another source,
and silently converting it would hide that.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
from typing import NamedTuple

import numpy as np
import xxhash

from pcam_tfds.core import fileio

PATCH_SHAPE = (96, 96, 3)
PATCH_BYTES = math.prod(PATCH_SHAPE)
PATCH_MPP = 0.972  # microns per pixel of every PCam patch: Camelyon16's 0.243 um/px scans at level 2 (10x)

# Reasons a file is rejected by the decoder, in the order they are checked.
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
UNREADABLE = "unreadable"
WRONG_CHANNELS = "wrong_channels"
WRONG_DTYPE = "wrong_dtype"
WRONG_SIZE = "wrong_size"
NOT_A_REGULAR_FILE = "not_a_regular_file"  # a directory, FIFO, socket or device where a patch file should be
TOO_LARGE = "too_large"  # a file, or the image its header declares, far beyond any patch
MULTI_PAGE = "multi_page"  # a TIFF with several images: which one is the patch is not ours to guess
REASONS = (
    EMPTY_FILE,
    NOT_AN_IMAGE,
    TRUNCATED,
    UNREADABLE,
    WRONG_CHANNELS,
    WRONG_DTYPE,
    WRONG_SIZE,
    NOT_A_REGULAR_FILE,
    TOO_LARGE,
    MULTI_PAGE,
)

# Limits checked before anything is read or allocated: a 96x96x3 patch is 27.6 kB raw, so no valid file
# comes near them, and no header can make a decoder ask for gigabytes.
MAX_FILE_BYTES = 16 << 20
MAX_DECODED_BYTES = 16 << 20

_TIFF_LE = b"II*\x00"
_TIFF_BE = b"MM\x00*"
_BIGTIFF = (b"II+\x00", b"MM\x00+")
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"

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


class PatchError(ValueError):
    """A file that is not a valid patch; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_patch(data: bytes, shape: tuple[int, int, int] = PATCH_SHAPE) -> np.ndarray:
    """Returns the pixels of one encoded patch as a read-only uint8 array of `shape`.

    Raises PatchError for anything that is not exactly such a patch.
    """
    if not data:
        raise PatchError(EMPTY_FILE, "the file has 0 bytes")
    if len(data) > MAX_FILE_BYTES:
        raise PatchError(TOO_LARGE, f"{len(data)} bytes; a patch file is far below {MAX_FILE_BYTES} bytes")
    head = bytes(data[:8])
    try:
        if head.startswith(_TIFF_LE):
            pixels = _fast_tiff(data)
            if pixels is None:
                pixels = _tifffile_decode(data)
        elif head.startswith(_TIFF_BE) or head[:4] in _BIGTIFF:
            pixels = _tifffile_decode(data)
        elif head.startswith(_PNG) or head.startswith(_JPEG):
            pixels = _pillow_decode(data)
        else:
            raise PatchError(NOT_AN_IMAGE, f"unknown signature {head[:4]!r} ({len(data)} bytes)")
        return check_pixels(pixels, shape)
    except PatchError:
        raise
    except MemoryError as e:
        raise PatchError(TOO_LARGE, f"decoding needed more memory than there is: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on hostile bytes is this file's rejection
        raise PatchError(UNREADABLE, f"{type(e).__name__}: {e}") from None


def check_pixels(pixels: np.ndarray, shape: tuple[int, int, int] = PATCH_SHAPE) -> np.ndarray:
    """Checks channels, dtype and size of decoded pixels, in that order."""
    if pixels.ndim == 2:
        raise PatchError(WRONG_CHANNELS, f"grayscale image of shape {pixels.shape}, expected RGB")
    if pixels.ndim != 3 or pixels.shape[-1] != shape[-1]:
        raise PatchError(WRONG_CHANNELS, f"shape {pixels.shape} has {pixels.shape[-1]} channels, expected {shape[-1]}")
    if pixels.dtype != np.uint8:
        raise PatchError(WRONG_DTYPE, f"dtype {pixels.dtype}, expected uint8")
    if pixels.shape != tuple(shape):
        raise PatchError(WRONG_SIZE, f"shape {pixels.shape}, expected {tuple(shape)}")
    return pixels


# The content hash of the pixels, as manifest version 2 records it (pcam_tfds.core.outputs.MANIFEST_VERSION).
# It decides duplicate groups and so split membership: changing it is a new manifest and dataset version.
PIXEL_HASH = "xxh3_128"


def pixel_hash(pixels: np.ndarray) -> str:
    """A content hash of the pixels (not the file bytes), for exact-duplicate search: XXH3-128 of the shape's
    repr and the pixel bytes, 32 hex digits.

    XXH3-128 because it hashes a patch far faster than a cryptographic hash and 128 bits make an accidental
    collision among 10**8 patches negligible; it finds a data set's duplicates, it is not meant to stand
    against a forged collision.
    """
    h = xxhash.xxh3_128(repr(pixels.shape).encode())
    h.update(pixels.data if pixels.flags.c_contiguous else np.ascontiguousarray(pixels).data)
    return h.hexdigest()


_PATCH_HASH = xxhash.xxh3_128(repr(PATCH_SHAPE).encode())  # the hash state after the shape, copied per patch


def patch_hash(pixels) -> str:
    """`pixel_hash` of a PATCH_SHAPE patch given as its PATCH_BYTES bytes (any buffer): the hash state after
    the shape is copied instead of hashed again."""
    h = _PATCH_HASH.copy()
    h.update(pixels)
    return h.hexdigest()


class _TiffLayout(NamedTuple):
    """Where a baseline TIFF keeps its pixels; None fields mean 'fall back to tifffile'."""

    offset: int | None
    shape: tuple[int, ...] | None
    # The out-of-IFD bytes the layout was read from, as (position, bytes), to check on a cache hit.
    extra: tuple[tuple[int, bytes], ...]


def _fast_tiff(data: bytes, cache: dict | None = None) -> np.ndarray | None:
    """Views the pixels of a baseline little-endian TIFF, or returns None to fall back.

    Returns None for anything but a single image with contiguous uncompressed
    chunky 8-bit strips; raises PatchError only for truncation, which tifffile
    would report less clearly. The parsed layout is cached by the bytes of the
    IFD (plus the out-of-line tag values it points to): all files from one
    writer share it, and parsing costs more than the rest of decoding.
    """
    n = len(data)
    if n < 8:
        raise PatchError(TRUNCATED, f"{n} bytes is shorter than a TIFF header")
    (ifd,) = struct.unpack_from("<I", data, 4)
    if ifd + 2 > n:
        raise PatchError(TRUNCATED, f"first IFD at byte {ifd} is beyond the end of a {n}-byte file")
    (count,) = struct.unpack_from("<H", data, ifd)
    end = ifd + 2 + 12 * count
    if end > n:
        raise PatchError(TRUNCATED, f"IFD of {count} entries at byte {ifd} runs past the end of a {n}-byte file")
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
        raise PatchError(TRUNCATED, f"pixels end at byte {layout.offset + size} but the file has {n} bytes")
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=layout.offset).reshape(layout.shape)


# Layouts seen so far, by IFD bytes. Bounded: a handful of writers produce every file of a data set.
_LAYOUTS: dict[bytes, _TiffLayout] = {}
_MAX_LAYOUTS = 256


def layout_spans(data: bytes) -> tuple[int, tuple[tuple[int, int], ...]] | None:
    """(pixel offset, the byte ranges that decide the layout) of a TIFF that `decode_patch` views as a
    PATCH_SHAPE patch, when all those ranges lie outside its pixels; else None.

    The ranges are the header, the IFD with the next-IFD pointer, and the out-of-line values of the tags
    `_fast_tiff` reads (not those of descriptive tags such as DateTime, which Kaggle's files each set to the
    second they were written). Any file of the same size with the same bytes in these ranges decodes to the
    pixels at the same offset (pcam_tfds.core.batch_read's templates).
    """
    if len(data) < 8 or bytes(data[:4]) != _TIFF_LE:
        return None
    (ifd,) = struct.unpack_from("<I", data, 4)
    if ifd + 2 > len(data):
        return None
    (count,) = struct.unpack_from("<H", data, ifd)
    end = ifd + 2 + 12 * count
    if end + 4 > len(data) or struct.unpack_from("<I", data, end)[0] != 0:
        return None
    try:
        layout = _parse_ifd(data, ifd, count)
    except PatchError:
        return None
    if layout.offset is None or layout.shape != PATCH_SHAPE or layout.offset + PATCH_BYTES > len(data):
        return None
    lo, hi = layout.offset, layout.offset + PATCH_BYTES
    spans = ((0, 8), (ifd, end + 4)) + tuple((pos, pos + len(b)) for pos, b in layout.extra)
    if any(a < hi and lo < b for a, b in spans):
        return None
    return lo, spans


def _parse_ifd(data: bytes, ifd: int, count: int) -> _TiffLayout:
    n = len(data)
    tags, extra = {}, []
    for pos in range(ifd + 2, ifd + 2 + 12 * count, 12):
        tag, typ, num = struct.unpack_from("<HHI", data, pos)
        size = _TYPE_SIZE.get(typ)
        if tag in _LAYOUT_TAGS and (typ not in (3, 4) or tag in tags):
            # A layout tag of a type the spec does not allow, or given twice: malformed, so tifffile decides.
            return _TiffLayout(None, None, ())
        if size is None:
            continue  # ASCII, RATIONAL, ...: descriptive tags the pixels do not depend on
        if num == 0:
            return _TiffLayout(None, None, ())  # a tag without values is malformed: tifffile decides (the fuzz test)
        where = pos + 8 if size * num <= 4 else struct.unpack_from("<I", data, pos + 8)[0]
        if where + size * num > n:
            raise PatchError(TRUNCATED, f"tag {tag} values at byte {where} run past the end of a {n}-byte file")
        if where != pos + 8:
            extra.append((where, bytes(data[where : where + size * num])))
        tags[tag] = struct.unpack_from(f"<{num}{_TYPE_FMT[typ]}", data, where)
    fallback = _TiffLayout(None, None, tuple(extra))

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
    return _TiffLayout(offsets[0], shape, tuple(extra))


def _tifffile_decode(data: bytes) -> np.ndarray:
    import tifffile  # only the fallback needs it

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            if not tif.pages:
                raise PatchError(NOT_AN_IMAGE, "TIFF without image pages")
            if len(tif.pages) > 1:
                raise PatchError(MULTI_PAGE, f"{len(tif.pages)} images in one TIFF; a patch file holds one")
            page = tif.pages[0]
            itemsize = page.dtype.itemsize if page.dtype is not None else 8
            declared = int(np.prod(page.shape, dtype=np.float64)) * itemsize
            if declared > MAX_DECODED_BYTES:
                raise PatchError(TOO_LARGE, f"the header declares a {page.shape} image ({declared} bytes)")
            pixels = page.asarray()
            # Planar configuration 2 keeps each colour plane apart: (samples, height, width).
            if int(page.planarconfig) == 2 and pixels.ndim == 3 and pixels.shape[0] == page.samplesperpixel > 1:
                pixels = np.ascontiguousarray(np.moveaxis(pixels, 0, -1))
            return pixels
    except PatchError:
        raise
    except (ValueError, OSError, EOFError, IndexError, KeyError, struct.error) as e:
        # tifffile reports a cut-off file as several different exceptions.
        if "EOF" in str(e) or "truncat" in str(e).lower() or isinstance(e, (EOFError, struct.error)):
            raise PatchError(TRUNCATED, f"tifffile: {e}") from None
        raise PatchError(UNREADABLE, f"tifffile: {type(e).__name__}: {e}") from None


def _pillow_decode(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only
            width, height = im.size
            declared = width * height * max(len(im.getbands()), 1)
            if declared > MAX_DECODED_BYTES:
                raise PatchError(TOO_LARGE, f"the header declares a {width}x{height} {im.mode} image")
            im.load()
            if im.mode == "P":
                raise PatchError(WRONG_CHANNELS, f"palette {im.format} image, expected RGB")
            return np.asarray(im)
    except PatchError:
        raise
    except UnidentifiedImageError:  # its message names the BytesIO's address: not the same twice, so not kept
        raise PatchError(NOT_AN_IMAGE, "Pillow cannot identify the image behind its PNG or JPEG signature") from None
    except Image.DecompressionBombError as e:
        raise PatchError(TOO_LARGE, f"Pillow: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = TRUNCATED if "truncat" in str(e).lower() else UNREADABLE
        raise PatchError(reason, f"Pillow: {e}") from None


def read_patch(path: str) -> np.ndarray:
    """Reads and decodes one patch file (any Beam-supported path); PatchError for a bad file or an OSError."""
    try:
        data = read_bytes(path)
    except OSError as e:
        raise PatchError(UNREADABLE, f"{type(e).__name__}: {e}") from None
    return decode_patch(data)


def try_read_patch(path: str) -> tuple[np.ndarray | None, str | None, str]:
    """(pixels, None, "") for a valid patch file, else (None, reason, detail); never raises for a bad file.

    The one place where reading a file can fail: every reader of patch files (validate, both builds,
    stats, predict) comes through here or `read_patch`.
    """
    try:
        return read_patch(path), None, ""
    except PatchError as e:
        return None, e.reason, e.detail


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: str) -> bytes:
    """The whole file; plain `open` for local paths, Beam FileSystems otherwise.

    Only regular files are opened (opening a FIFO would block for ever), and none larger than
    MAX_FILE_BYTES is read: both are PatchErrors with their own reason.
    """
    return read_file(path)[0]


def read_file(path: str, into: memoryview | None = None) -> tuple[bytes | memoryview, int | None]:
    """(the whole file, as `read_bytes`; its modification time in ns from the same stat, None when remote).

    A local file costs four system calls: stat, open, one read, close. The read asks for one byte more than
    the stat's size, so a file that has not grown is read whole by it (a regular file returns less than asked
    only at its end), without the buffered-file machinery or a join of chunks; a file that changed size
    since the stat is read on to its end. With INTO (a writable buffer), a local file smaller than it is read
    straight into it (`readv`, where the OS has it), and the file comes back as the memoryview of INTO that
    holds it, no bytes object made (batch_read's rows).
    """
    if "://" not in path:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise PatchError(NOT_A_REGULAR_FILE, f"{path} is {_kind(st.st_mode)}")
        if st.st_size > MAX_FILE_BYTES:
            raise PatchError(TOO_LARGE, f"{st.st_size} bytes; a patch file is far below {MAX_FILE_BYTES} bytes")
        fd = os.open(path, OPEN_FLAGS)
        try:
            if into is not None and st.st_size < len(into) and hasattr(os, "readv"):  # no readv on Windows
                got = os.readv(fd, [into[: st.st_size + 1]])
                if got == st.st_size:
                    return into[:got], st.st_mtime_ns
                os.lseek(fd, 0, os.SEEK_SET)  # it changed since the stat: read below, whole
            data = os.read(fd, st.st_size + 1)
            if len(data) != st.st_size:  # it changed since the stat: read on to the end, within the limit
                chunks = [data]
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                    if sum(map(len, chunks)) > MAX_FILE_BYTES:
                        raise PatchError(TOO_LARGE, f"{path} grew past {MAX_FILE_BYTES} bytes while it was read")
                data = b"".join(chunks)
            return data, st.st_mtime_ns
        finally:
            os.close(fd)
    with fileio.open_read(path) as f:
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise PatchError(TOO_LARGE, f"more than {MAX_FILE_BYTES} bytes; a patch file is far below that")
    return data, None


def read_rows(paths: list[str], rows: np.ndarray) -> tuple[list[int], list[int]]:
    """(sizes, mtimes) after reading each local regular file of PATHS smaller than a row of ROWS (a C-contiguous
    uint8 array, a row per path) whole into its row, as `read_file` would read it; -1 as the size of every
    other file, which `read_file` must then read (or reject) itself.

    The native kernel (_kernel.c) does it with the GIL released and no Python object per file; without it every
    size is -1, and `read_file(path, into=row)` reads each file into its row instead.
    """
    k = len(paths)
    sizes, mtimes = np.full(k, -1, np.int64), np.zeros(k, np.int64)
    if _native is not None and k:
        _native.read_rows(paths if type(paths) is list else list(paths), rows[:k], sizes, mtimes)
    return sizes.tolist(), mtimes.tolist()


try:  # the native kernel, built by setup.py where a C compiler is found
    from pcam_tfds.core import _kernel as _native
except ImportError:
    _native = None

# O_NONBLOCK: a file swapped for a FIFO after the stat still cannot block the open. O_BINARY: Windows.
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
