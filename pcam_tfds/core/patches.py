"""Decoding PCam patches, fast, with a specific reason for every bad file.

Kaggle ships each patch as a baseline, uncompressed, little-endian RGB TIFF of
96x96x3 uint8. For those files `decode_patch` views the pixel bytes where the
IFD says they are (`tiff_layout.view_pixels`): no copy, no TIFF library.
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

import numpy as np
import xxhash

from pcam_tfds.core import fileio, tiff_layout

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

_TIFF_BE = b"MM\x00*"
_BIGTIFF = (b"II+\x00", b"MM\x00+")
_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


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
        if head.startswith(tiff_layout.TIFF_LE):
            pixels = tiff_layout.view_pixels(data)
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
    except tiff_layout.Truncated as e:
        raise PatchError(TRUNCATED, str(e)) from None
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


PATCH_HASH_PREFIX = repr(PATCH_SHAPE).encode()  # what `pixel_hash` hashes before a patch's pixels
_PATCH_HASH = xxhash.xxh3_128(PATCH_HASH_PREFIX)  # the hash state after the shape, copied per patch


def patch_hash(pixels) -> str:
    """`pixel_hash` of a PATCH_SHAPE patch given as its PATCH_BYTES bytes (any buffer): the hash state after
    the shape is copied instead of hashed again."""
    h = _PATCH_HASH.copy()
    h.update(pixels)
    return h.hexdigest()


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


def read_rows(paths: list[str], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, mtimes), int64 arrays, after reading each local regular file of PATHS smaller than a row of ROWS (a C-contiguous
    uint8 array, a row per path) whole into its row, as `read_file` would read it; -1 as the size of every
    other file, which `read_file` must then read (or reject) itself.

    The native kernel (_kernel.c) does it with the GIL released and no Python object per file; without it every
    size is -1, and `read_file(path, into=row)` reads each file into its row instead.
    """
    k = len(paths)
    sizes, mtimes = np.full(k, -1, np.int64), np.zeros(k, np.int64)
    if _native is not None and k:
        _native.read_rows(paths if type(paths) is list else list(paths), rows[:k], sizes, mtimes)
    return sizes, mtimes


try:  # the native kernel, built by setup.py where a C compiler is found
    from pcam_tfds.core import _kernel as _native
except ImportError:
    _native = None

# O_NONBLOCK: a file swapped for a FIFO after the stat still cannot block the open. O_BINARY: Windows.
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
