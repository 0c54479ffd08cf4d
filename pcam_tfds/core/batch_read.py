"""Reading patch files a group at a time: the per-file kernel that every validation runs (both executors).

    cols = read_columns(paths, source)     # FileColumns: one entry per path, in order
    cols.record(i)                         # the file record of paths[i] (records.file_record's keys)
    cols.arrow()                           # the same as an Arrow batch (what the local validation's workers return)
    read_columns(paths, source, keep=fn)   # fn(i, pixel bytes) for each valid file (the spill; a build's rewrite)

A group of GROUP files is read into the rows of a buffer this thread keeps, each with one read of its size and
one byte more (`patches.read_rows`: the native kernel, open, fstat, read, close, without the GIL; without it
`patches.read_file(path, into=row)`, stat, open, readv, close). Kaggle's files come from one writer, so the
bytes that decide their layout are all alike: once a file has decoded through `patches.decode_patch` and those
bytes lie outside its pixels (`tiff_layout.layout_spans`: the header, the IFD, the values of the layout tags; not
the DateTime that each Kaggle file sets to the second it was written), any later file of the same size with
the same bytes there has the same layout, and its pixels are a view of its row. A group's files are checked
against the templates seen so far in one numpy comparison per template. Every other file (another writer, PNG,
JPEG, a broken file, one too large for a row, a remote path) goes through `patches.read_file` and
`decode_patch` on its own, with the reasons and details that reading it alone gives (tests/test_batch_read.py).
Then the group's valid files are hashed (`pixel_hash`'s value) and their channel sums taken in one call of the
native kernel (`scan_patches`: XXH3-128 as hex digits and exact integer sums, without the GIL), or through
`patches.patch_hash` and `moments.moments_at` where it is not built. The columns are numpy arrays filled in place
(`FileColumns`); `arrow()` makes the batch without a Python object per valid file.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pcam_tfds.core import layout, patches, tiff_layout
from pcam_tfds.core import moments as _moments

GROUP = 64  # files per set of numpy calls: the group's rows (1.8 MB) stay in the cache between read and hash
ROW_BYTES = 28_672  # bytes per row of the buffer: a Kaggle TIFF (27,935 bytes) and a read of one byte more fit
_PIXEL_BYTES = patches.PATCH_BYTES
_MAX_TEMPLATES = 4  # layouts remembered: a folder holds the files of a handful of writers


class FileColumns:
    """The records of a list of files, a column each, in the order of `paths`: numpy arrays, filled a group of
    files at a time, with no Python object per valid file; `pixel_hash` gives the hashes as a list, `record` a file's record."""

    def __init__(self, source: str, paths: list[str]):
        n = len(paths)
        self.source, self.paths = source, paths
        self.sizes = np.zeros(n, np.int64)
        self.mtimes = np.zeros(n, np.int64)
        self.has_mtime = np.zeros(n, bool)  # False where the file was not read (rejected first) or is remote
        self.valid = np.zeros(n, bool)
        self.hexes = np.zeros((n, 32), np.uint8)  # each valid file's pixel hash, 32 ASCII hex digits
        self.reason: list[str | None] = [None] * n  # None where it is valid
        self.detail: list[str] = [""] * n
        self.moments = np.full((n, 6), np.nan)  # mean of r, g, b, then std; NaN where rejected

    def __len__(self) -> int:
        return len(self.paths)

    @functools.cached_property
    def pixel_hash(self) -> list[str | None]:
        """Each file's pixel hash (`patches.pixel_hash`'s value), None where it was rejected."""
        hexes = self.hexes.view("S32")[:, 0].tolist()
        return [h.decode() if v else None for h, v in zip(hexes, self.valid.tolist())]

    def arrow(self) -> pa.RecordBatch:
        """These columns as an Arrow batch of ARROW_SCHEMA (what the local validation's workers hand back)."""
        n, valid = len(self.paths), self.valid
        m, rejected = self.moments, ~valid
        # The pixel hashes as an Arrow string array over the bytes of the valid rows: no str per file.
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(valid * 32, out=offsets[1:])
        hashes = pa.Array.from_buffers(
            pa.string(),
            n,
            [pa.array(valid).buffers()[1], pa.py_buffer(offsets), pa.py_buffer(self.hexes[valid].tobytes())],
            null_count=int(rejected.sum()),
        )
        paths = pa.array(self.paths, pa.string())
        return pa.RecordBatch.from_arrays(
            [
                _file_ids(paths),
                pa.array([self.source] * n, pa.string()),
                paths,
                hashes,
                pa.array(self.reason, pa.string()),
                pa.array(self.detail, pa.string()),
                pa.array(self.sizes),
                pa.array(self.mtimes, mask=~self.has_mtime),
            ]
            + [pa.array(m[:, k], mask=rejected) for k in range(6)],
            schema=ARROW_SCHEMA,
        )

    def record(self, i: int) -> dict:
        """The file record of paths[i], as `records.file_record` lays it out."""
        rec = {
            "id": layout.file_id(self.paths[i]),
            "source": self.source,
            "label": layout.NO_LABEL,
            "path": self.paths[i],
            "pixel_hash": self.pixel_hash[i],
            "valid": self.reason[i] is None,
            "reason": self.reason[i],
            "detail": self.detail[i],
            "size_bytes": int(self.sizes[i]),
            "mtime_ns": int(self.mtimes[i]) if self.has_mtime[i] else None,
            "mean": None,
            "std": None,
        }
        if rec["valid"]:
            m = self.moments[i].tolist()
            rec["mean"], rec["std"] = m[:3], m[3:]
        return rec


ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("path", pa.string()),
        ("pixel_hash", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
    ]
    + [(f"{stat}_{c}", pa.float64()) for stat in ("mean", "std") for c in "rgb"]
)


def _file_ids(paths: pa.StringArray) -> pa.StringArray:
    """`layout.file_id` of each of PATHS: by Arrow's string kernels where they all are FOLDER/NAME.tif in one
    folder with no backslash in NAME (a Kaggle folder), by file_id itself otherwise."""
    if len(paths):
        first = paths[0].as_py()
        folder = first[: max(first.rfind("/"), first.rfind("\\")) + 1]
        if folder and first.endswith(".tif"):
            stems = pc.utf8_slice_codeunits(paths, len(folder), -len(".tif"))
            if (
                pc.all(pc.and_(pc.starts_with(paths, folder), pc.ends_with(paths, ".tif"))).as_py()
                and not pc.any(pc.match_substring_regex(stems, r"[/\\]|^$")).as_py()
            ):
                return stems
    return pa.array([layout.file_id(p) for p in paths.to_pylist()], pa.string())


class _Template(NamedTuple):
    """A file's size and the bytes that decide its layout (`tiff_layout.layout_spans`): any file alike in both
    has its pixels at `offset`."""

    size: int
    offset: int
    at: np.ndarray  # intp: the positions of the deciding bytes
    expected: np.ndarray  # uint8: their values


class _Rows(threading.local):
    """Per thread, the group's buffer (a row per file) and the templates seen so far."""

    def __init__(self):
        self.buf = np.empty((GROUP, ROW_BYTES), np.uint8)
        self.views = [memoryview(row) for row in self.buf]
        self.templates: list[_Template] = []


_ROWS = _Rows()


def read_columns(
    paths: list[str], source: str, keep: Callable[[int, memoryview], None] | None = None, moments: bool = True
) -> FileColumns:
    """Reads and checks every file of PATHS (all of one SOURCE folder); never raises for a bad file.

    KEEP, when given, is called as keep(i, pixels) for each valid file, in order, with its 27,648 pixel bytes
    (valid only during the call). MOMENTS=False leaves the moments out (NaN): a build reading its files again
    to write them needs only their pixels and hashes.
    """
    cols = FileColumns(source, list(paths))
    n = len(cols)
    sums = np.zeros((n, 6), np.int64) if moments and patches._native is not None else None
    for start in range(0, n, GROUP):
        _read_group(cols, start, min(n, start + GROUP), keep, moments, sums)
    if sums is not None and cols.valid.any():
        cols.moments[cols.valid] = _moments.from_sums(sums[cols.valid])
    return cols


def _read_group(cols: FileColumns, start: int, stop: int, keep, with_moments: bool, sums) -> None:
    rows = _ROWS
    k = stop - start
    paths = cols.paths[start:stop]
    sizes, mtimes = patches.read_rows(paths, rows.buf)  # -1 where read_file must read the file itself
    whole: dict[int, bytes] = {}  # files read through patches.read_file instead of into their rows
    read_file, views = patches.read_file, rows.views
    rejected = np.zeros(k, bool)
    for j in np.flatnonzero(sizes < 0).tolist():
        try:
            data, mtime = read_file(paths[j], into=views[j])
        except OSError as e:
            rejected[j] = _reject(cols, start + j, patches.UNREADABLE, f"{type(e).__name__}: {e}")
            continue
        except patches.PatchError as e:  # not a regular file, or far too large to read
            rejected[j] = _reject(cols, start + j, e.reason, e.detail)
            continue
        if mtime is not None:  # None: a remote file
            mtimes[j] = mtime
            cols.has_mtime[start + j] = True
        if type(data) is memoryview:  # read into its row
            sizes[j] = len(data)
        else:  # a file too large for a row, or a remote one
            whole[j] = data
            cols.sizes[start + j] = len(data)
    in_rows = sizes >= 0
    cols.has_mtime[start:stop] |= in_rows
    cols.mtimes[start:stop] = np.where(cols.has_mtime[start:stop], mtimes, 0)
    cols.sizes[start:stop][in_rows] = sizes[in_rows]
    offsets = np.full(k, -1, np.int64)  # where each valid file's pixels start in its row
    for n, t in enumerate(list(rows.templates)):
        if _match(t, sizes, offsets) and n:  # most recently used first
            rows.templates.insert(0, rows.templates.pop(n))
    home = int(np.bincount(offsets[offsets >= 0]).argmax()) if (offsets >= 0).any() else 0
    for j in np.flatnonzero((offsets < 0) & ~rejected).tolist():
        if offsets[j] >= 0:  # a template learned from an earlier file of this group fitted it
            continue
        data = whole.pop(j) if j in whole else bytes(views[j][: sizes[j]])
        try:
            pixels = patches.decode_patch(data)
        except patches.PatchError as e:
            _reject(cols, start + j, e.reason, e.detail)
            continue
        if sizes[j] >= 0:  # read into its row: the group's later files like it are viewed there
            learned = _learn(data)
            if learned is not None:
                _match(learned, sizes, offsets, after=j)
        rows.buf[j, home : home + _PIXEL_BYTES] = pixels.reshape(-1)
        offsets[j] = home
    valid = offsets >= 0
    if not valid.any():
        return
    cols.valid[start:stop] = valid
    at = np.where(valid, offsets + np.arange(k) * ROW_BYTES, -1)  # in the flat bytes of the rows
    flat = rows.buf[:k].reshape(-1)
    if patches._native is not None:  # the hashes and sums without the GIL, no Python object per file
        patches._native.scan_patches(
            flat, at, patches.PATCH_HASH_PREFIX, cols.hexes[start:stop], None if sums is None else sums[start:stop]
        )
    else:
        hexes = [patches.patch_hash(flat[a : a + _PIXEL_BYTES].data) for a in at[valid].tolist()]
        cols.hexes[start:stop][valid] = np.frombuffer("".join(hexes).encode(), np.uint8).reshape(-1, 32)
        if with_moments:
            cols.moments[start:stop] = _moments.moments_at(rows.buf[:k], at)
    if keep is not None:
        for j in np.flatnonzero(valid).tolist():
            keep(start + j, views[j][offsets[j] : offsets[j] + _PIXEL_BYTES])


def _reject(cols: FileColumns, i: int, reason: str, detail: str) -> bool:
    cols.reason[i], cols.detail[i] = reason, detail
    return True


def _match(t: _Template, sizes: np.ndarray, offsets: np.ndarray, after: int = -1) -> bool:
    """Sets the OFFSETS of the group's undecided files (after row AFTER) that template T fits; whether any did."""
    match = np.flatnonzero((sizes == t.size) & (offsets < 0))
    match = match[match > after]
    if not len(match):
        return False
    same = (_ROWS.buf.reshape(-1)[match[:, None] * ROW_BYTES + t.at] == t.expected).all(axis=1)
    offsets[match[same]] = t.offset
    return bool(same.any())


def _learn(data: bytes) -> _Template | None:
    """Remembers the layout of DATA (a file that decoded) as a template, when the bytes that decide it lie
    outside its pixels; returns it when it is new."""
    found = tiff_layout.layout_spans(data, patches.PATCH_SHAPE)
    if found is None:
        return None
    offset, spans = found
    at = np.concatenate([np.arange(a, b) for a, b in spans])
    expected = np.frombuffer(data, np.uint8)[at]
    templates = _ROWS.templates
    for t in templates:
        if (
            t.size == len(data)
            and t.offset == offset
            and np.array_equal(t.at, at)
            and np.array_equal(t.expected, expected)
        ):
            return None
    templates.insert(0, _Template(len(data), offset, at, expected))
    del templates[_MAX_TEMPLATES:]
    return templates[0]
