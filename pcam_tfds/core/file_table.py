"""The local validation's records as Arrow columns: `records.join_labels`, `records.find_duplicates`, the
summary's counts and the manifest, without a Python object per file.

    table, rejected_rows = join_columns(batches, label_rows)   # batches: batch_read.FileColumns.arrow(), listed order
    table.manifest()        outputs.MANIFEST_SCHEMA's table, in the order records.join_labels returns the files
    table.duplicates()      records.find_duplicates' groups
    table.counts()          summary.file_key of every file, counted
    table.valid_records()   what the build routes and writes by, of each valid file, in the manifest's order
    table.records()         the file records themselves, as dicts

At Kaggle scale a dict per file cost the parent about 3 s of serial work after the files were read (the join
1 s, the manifest and outputs 1.6 s, the duplicates and counts 0.4 s; 0.7 s here). Here the two shapes of
almost every id (a train file with its one good label row, a test file with no row) are joined by Arrow's hash
lookups (`index_in`), and every other id (several files, several rows, a bad row, a row without a file) goes through
`layout.resolve_id` with its own records, exactly as `records.join_labels` joins it; the workers made the
columns (`batch_read.FileColumns.arrow`), so the join turns only those ids' files and rows into Python objects.
Both joins give the same results (tests/test_file_table.py).
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pcam_tfds.core import batch_read, layout, outputs, records, summary

_STATS = [f"{stat}_{c}" for stat in ("mean", "std") for c in "rgb"]


class FileTable:
    """Every file's record as columns (batch_read.ARROW_SCHEMA plus `label`), in listing order."""

    def __init__(self, table: pa.Table, label: np.ndarray, order: pa.Array | None = None):
        self.table = table
        self.label = label  # int64, one per file
        self._order = order  # `order`, when the join knows it
        self._sorting = threading.Lock()  # the manifest's thread and the summary's both need `order`: sorted once

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def order(self) -> pa.Array:
        """records.join_labels' order of the files: by id, then test before train, then path."""
        with self._sorting:
            if self._order is None:
                ranks = [("id", "ascending"), ("source", "ascending"), ("path", "ascending")]
                self._order = pc.sort_indices(self.table.select(["id", "source", "path"]), sort_keys=ranks)
        return self._order

    def manifest(self) -> pa.Table:
        """The manifest (outputs.MANIFEST_SCHEMA), one row per file, in `order`."""
        return self._manifest_columns().take(self.order)

    def _manifest_columns(self) -> pa.Table:
        """The manifest's columns in listing order (Arrow's columns themselves, but for label and valid)."""
        t = self.table
        columns = [
            t["id"],
            t["source"],
            pa.array(self.label, pa.int64()),
            t["path"],
            t["pixel_hash"],
            pc.is_null(t["reason"]),
            t["reason"],
            t["detail"],
            t["size_bytes"],
            t["mtime_ns"],
        ] + [t[name] for name in _STATS]
        return pa.Table.from_arrays(columns, schema=outputs.MANIFEST_SCHEMA)

    def records(self, indices=None) -> list[dict]:
        """The file records of INDICES (default: every file, in `order`), as records.file_record lays them out."""
        if indices is None:
            indices = self.order
        if isinstance(indices, pa.ChunkedArray):
            indices = indices.combine_chunks()
        indices = indices.cast(pa.int64()) if isinstance(indices, pa.Array) else pa.array(indices, pa.int64())
        t = self._manifest_columns().take(indices).to_pydict()
        stats = [t.pop(name) for name in _STATS]
        decoded = [h is not None for h in t["pixel_hash"]]
        means = [list(v) if d else None for v, d in zip(zip(*stats[:3]), decoded)]
        stds = [list(v) if d else None for v, d in zip(zip(*stats[3:]), decoded)]
        keys = list(t) + ["mean", "std"]
        return [dict(zip(keys, row)) for row in zip(*t.values(), means, stds)]

    def valid_records(self, source: str | None = None) -> list[dict]:
        """The valid files (of SOURCE, or all), in `order`, each as what the build routes and writes by: {id, source,
        label, path, pixel_hash, valid} (the keys of a file record that pcam_tfds.core.examples reads)."""
        keep = pc.is_null(self.table["reason"])
        if source is not None:
            keep = pc.and_(keep, pc.equal(self.table["source"], source))
        keep = keep.take(self.order)
        at = pc.filter(self.order, keep)
        t = self.table.select(["id", "source", "path", "pixel_hash"]).take(at)
        labels = self.label[at.to_numpy()].tolist()
        keys = ("id", "source", "label", "path", "pixel_hash", "valid")
        columns = [
            t["id"].to_pylist(),
            t["source"].to_pylist(),
            labels,
            t["path"].to_pylist(),
            t["pixel_hash"].to_pylist(),
        ]
        return [dict(zip(keys, (*row, True))) for row in zip(*columns)]

    def rejected(self) -> list[dict]:
        """The records of the rejected files, in `order`."""
        rejected = pc.is_valid(self.table["reason"].take(self.order))
        return self.records(pc.filter(self.order, rejected)) if pc.any(rejected).as_py() else []

    def counts(self) -> list[tuple[tuple, int]]:
        """summary.file_key of every file, counted."""
        t = pa.table(
            {
                "source": self.table["source"],
                "valid": pc.is_null(self.table["reason"]),
                "reason": pc.fill_null(self.table["reason"], ""),
                "label": self.label,
            }
        )
        counted = t.group_by(["source", "valid", "reason", "label"]).aggregate([([], "count_all")])
        return [((summary.FILE, *row[:4]), row[4]) for row in zip(*counted.to_pydict().values())]

    def duplicates(self) -> list[dict]:
        """records.find_duplicates of these files: a group per pixel hash that two or more files share."""
        at = _sharing(self.table["pixel_hash"])
        if not len(at):
            return []
        t = pa.table(
            {
                "pixel_hash": self.table["pixel_hash"].take(at),
                "source": self.table["source"].take(at),
                "id": self.table["id"].take(at),
                "label": self.label[at],
            }
        ).sort_by([(name, "ascending") for name in ("pixel_hash", "source", "id", "label")])
        hashes, members = (
            t["pixel_hash"].to_pylist(),
            [
                {"source": s, "id": i, "label": lab}
                for s, i, lab in zip(*(t[k].to_pylist() for k in ("source", "id", "label")))
            ],
        )
        starts = [i for i in range(len(hashes)) if not i or hashes[i] != hashes[i - 1]] + [len(hashes)]
        return [records.duplicate_group(hashes[a], members[a:b]) for a, b in zip(starts, starts[1:])]


def _sharing(hashes: pa.ChunkedArray) -> np.ndarray:
    """The positions of the non-null HASHES that occur more than once.

    A pixel hash is 32 hex digits (batch_read writes them so): their 32 bytes, as four uint64, are mixed into one
    uint64 and sorted by numpy, far faster than Arrow's hash kernels on strings; the few keys found more than
    once are then compared whole, so a collision of the mixed keys costs time, never a wrong group.
    """
    flat = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
    present = np.flatnonzero(_numpy(pc.is_valid(flat)))
    decoded = flat.drop_null()
    if len(decoded) < 2:
        return np.zeros(0, np.int64)
    _, offsets, data = decoded.buffers()
    offsets = np.frombuffer(offsets, np.int32, len(decoded) + 1, decoded.offset * 4)
    if not (np.diff(offsets) == 32).all():  # not hashes batch_read wrote: Arrow's kernels
        shared = pa.array(sorted(layout.repeated_values(decoded)), pa.string())
        return np.flatnonzero(_numpy(pc.is_in(flat, value_set=shared)))
    words = np.frombuffer(data, np.uint64, 4 * len(decoded), offsets[0]).reshape(-1, 4)
    key = words[:, 0] ^ (words[:, 1] * np.uint64(0x9E3779B97F4A7C15))
    key ^= (words[:, 2] * np.uint64(0xC2B2AE3D27D4EB4F)) ^ (words[:, 3] * np.uint64(0x165667B19E3779F9))
    order = np.argsort(key)
    same = key[order][1:] == key[order][:-1]
    candidates = np.unique(np.concatenate([order[1:][same], order[:-1][same]]))
    if not len(candidates):
        return np.zeros(0, np.int64)
    texts = decoded.take(pa.array(candidates)).to_pylist()
    counted = collections.Counter(texts)
    return present[candidates[[counted[h] > 1 for h in texts]]]


def join_columns(batches: list[pa.RecordBatch], rows: layout.LabelRows) -> tuple[FileTable, list[dict]]:
    """(the files of BATCHES with their labels, the rejected label rows): records.join_labels on columns."""
    table = pa.Table.from_batches(batches, schema=batch_read.ARROW_SCHEMA)
    ids, row_ids = table["id"].combine_chunks(), rows.ids  # one chunk: Arrow's hash kernels run far faster
    n = table.num_rows
    label = np.full(n, layout.NO_LABEL, np.int64)
    # The files by id: where no id repeats, that is their order (`FileTable.order`), and the ids that repeat are
    # next to each other. Arrow sorts them in a thread, without the GIL, while this one looks up their rows.
    with ThreadPoolExecutor(1) as sorter:
        sorting = sorter.submit(pc.sort_indices, ids)
        row_at = _numpy(pc.fill_null(pc.index_in(ids, value_set=row_ids), -1)).astype(np.int64)  # the id's 1st row
        by_id = sorting.result()
    sorted_ids = ids.take(by_id)
    repeated = pc.filter(sorted_ids.slice(1), pc.equal(sorted_ids.slice(1), sorted_ids.slice(0, max(n - 1, 0))))
    # Ids joined otherwise than by lookup: several files or several rows.
    odd = set(repeated.to_pylist()) | rows.repeated
    has_row = row_at >= 0
    train = _numpy(pc.equal(table["source"], layout.TRAIN))
    good_row = rows.good[np.maximum(row_at, 0)] & has_row if len(rows.good) else has_row
    # A train file with a good row, a test file without one: joined here. Any other file's id is odd.
    simple = np.where(train, good_row, ~has_row)
    if odd:
        simple &= ~_numpy(pc.is_in(ids, value_set=pa.array(sorted(odd), pa.string())))
    labelled = simple & train
    label[labelled] = rows.label[row_at[labelled]]
    odd.update(pc.filter(ids, pa.array(~simple)).to_pylist())
    # Rows whose id no simple train file took: a row without a file, a bad row, a test file's row.
    taken = np.zeros(len(row_ids), bool)
    taken[row_at[labelled]] = True
    odd.update(pc.filter(row_ids, pa.array(~taken)).to_pylist())
    rejected_rows: list[dict] = []
    if odd:
        odd_list = pa.array(sorted(odd), pa.string())
        files_of, rows_of = collections.defaultdict(list), collections.defaultdict(list)
        at = pc.indices_nonzero(pc.is_in(ids, value_set=odd_list)).to_pylist()
        for i, f in zip(at, FileTable(table, label).records(at)):
            files_of[f["id"]].append((i, f))
        for r in rows.records(pc.indices_nonzero(pc.is_in(row_ids, value_set=odd_list)).to_pylist()):
            rows_of[r["id"]].append(r)
        reason, detail = table["reason"].to_pylist(), table["detail"].to_pylist()
        for id_ in odd_list.to_pylist():
            index = {f["path"]: i for i, f in files_of[id_]}
            joined, bad = layout.resolve_id(id_, [f for _, f in files_of[id_]], rows_of[id_])
            for f in joined:
                i = index[f["path"]]
                label[i], reason[i], detail[i] = f["label"], f["reason"], f["detail"]
            rejected_rows += bad
        table = table.set_column(table.schema.get_field_index("reason"), "reason", pa.array(reason, pa.string()))
        table = table.set_column(table.schema.get_field_index("detail"), "detail", pa.array(detail, pa.string()))
    return FileTable(table, label, None if len(repeated) else by_id), rejected_rows


def _numpy(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return values.to_numpy() if isinstance(values, pa.ChunkedArray) else values.to_numpy(zero_copy_only=False)
