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
Then each valid file's pixels are hashed (`patches.patch_hash`, `pixel_hash`'s value) and the group's channel
moments taken at once (`moments.moments_at`: the native kernel's integer sums, or numpy's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from pcam_tfds.core import layout, moments, patches, tiff_layout

GROUP = 64  # files per set of numpy calls: the group's rows (1.8 MB) stay in the cache between read and moments
ROW_BYTES = 28_672  # bytes per row of the buffer: a Kaggle TIFF (27,935 bytes) and a read of one byte more fit
_PIXEL_BYTES = patches.PATCH_BYTES
_MAX_TEMPLATES = 4  # layouts remembered: a folder holds the files of a handful of writers


class FileColumns(NamedTuple):
    """The records of a list of files, a column each, in the order of `paths`."""

    source: str
    paths: list[str]
    size_bytes: list[int]
    mtime_ns: list[int | None]
    pixel_hash: list[str | None]  # None where the file was rejected
    reason: list[str | None]  # None where it is valid
    detail: list[str]
    moments: np.ndarray  # (n, 6) float64: mean of r, g, b, then std; NaN where rejected

    def __len__(self) -> int:
        return len(self.paths)

    def arrow(self) -> pa.RecordBatch:
        """These columns as an Arrow batch of ARROW_SCHEMA (what the local validation's workers hand back)."""
        m, rejected = self.moments, np.isnan(self.moments[:, 0])
        paths = pa.array(self.paths, pa.string())
        return pa.RecordBatch.from_arrays(
            [
                pa.array([layout.file_id(p) for p in self.paths], pa.string()),
                pa.array([self.source] * len(self.paths), pa.string()),
                paths,
                pa.array(self.pixel_hash, pa.string()),
                pa.array(self.reason, pa.string()),
                pa.array(self.detail, pa.string()),
                pa.array(self.size_bytes, pa.int64()),
                pa.array(self.mtime_ns, pa.int64()),
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
            "size_bytes": self.size_bytes[i],
            "mtime_ns": self.mtime_ns[i],
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
    n = len(paths)
    cols = FileColumns(
        source,
        list(paths),
        [0] * n,
        [None] * n,
        [None] * n,
        [None] * n,
        [""] * n,
        np.full((n, 6), np.nan),
    )
    for start in range(0, n, GROUP):
        _read_group(cols, start, min(n, start + GROUP), keep, moments)
    return cols


def _read_group(cols: FileColumns, start: int, stop: int, keep, with_moments: bool) -> None:
    rows = _ROWS
    k = stop - start
    paths = cols.paths[start:stop]
    got, mtimes = patches.read_rows(paths, rows.buf)  # -1 where read_file must read the file itself
    whole: dict[int, bytes] = {}  # files read through patches.read_file instead of into their rows
    read_file, views = patches.read_file, rows.views
    for j in [j for j, n in enumerate(got) if n < 0]:
        try:
            data, mtimes[j] = read_file(paths[j], into=views[j])
        except OSError as e:
            _reject(cols, start + j, patches.UNREADABLE, f"{type(e).__name__}: {e}")
            continue
        except patches.PatchError as e:  # not a regular file, or far too large to read
            _reject(cols, start + j, e.reason, e.detail)
            continue
        if type(data) is memoryview:  # read into its row
            got[j] = len(data)
        else:  # a file too large for a row, or a remote one
            whole[j] = data
    cols.mtime_ns[start:stop] = [m if n >= 0 or j in whole else None for j, (n, m) in enumerate(zip(got, mtimes))]
    sizes = np.array(got, np.int64)
    offsets = np.full(k, -1, np.int64)  # where each valid file's pixels start in its row
    for n, t in enumerate(list(rows.templates)):
        if _match(t, sizes, offsets) and n:  # most recently used first
            rows.templates.insert(0, rows.templates.pop(n))
    home = int(np.bincount(offsets[offsets >= 0]).argmax()) if (offsets >= 0).any() else 0
    for j in range(k):
        i = start + j
        if offsets[j] >= 0 or (sizes[j] < 0 and j not in whole):
            continue  # a template's file, or one already rejected
        data = whole.pop(j) if j in whole else bytes(rows.views[j][: sizes[j]])
        if sizes[j] < 0:
            cols.size_bytes[i] = len(data)  # the rows' files are sized below
        try:
            pixels = patches.decode_patch(data)
        except patches.PatchError as e:
            _reject(cols, i, e.reason, e.detail)
            continue
        if sizes[j] >= 0:  # read into its row: the group's later files like it are viewed there
            learned = _learn(data)
            if learned is not None:
                _match(learned, sizes, offsets, after=j)
        rows.buf[j, home : home + _PIXEL_BYTES] = pixels.reshape(-1)
        offsets[j] = home
    for j in np.flatnonzero(sizes >= 0).tolist():
        cols.size_bytes[start + j] = int(sizes[j])
    valid = np.flatnonzero(offsets >= 0)
    if not len(valid):
        return
    if with_moments:
        at = np.where(offsets >= 0, offsets + np.arange(k) * ROW_BYTES, -1)  # in the flat bytes of the rows
        cols.moments[start:stop] = moments.moments_at(rows.buf[:k], at)
    for j in valid.tolist():
        px = rows.views[j][offsets[j] : offsets[j] + _PIXEL_BYTES]
        cols.pixel_hash[start + j] = patches.patch_hash(px)
        if keep is not None:
            keep(start + j, px)


def _reject(cols: FileColumns, i: int, reason: str, detail: str) -> None:
    cols.reason[i], cols.detail[i] = reason, detail


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
