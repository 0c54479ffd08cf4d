"""Validation records: one per file and one per rejected label row, and the steps that make them.

Both executors run these steps, in this order, on the same records:

    batch_paths      the listed files of train/ and test/, in batches of BATCH_SIZE
    read_batch       each file read, checked and hashed (`batch_read.read_columns`): one record per path
    join_labels      files and label rows grouped by id and joined (`layout.resolve_id`)
    find_duplicates  files with identical pixels grouped (`duplicate_member`, `duplicate_group`)

The Beam executor (`beam_jobs.transforms`) calls the per-element ones inside its DoFns and lets
GroupByKey and CoGroupByKey do the grouping. The local executor (`local_validation`) reads with the same
kernel and joins the same way on Arrow columns (`file_table`: the common ids by lookup, every other id
through `layout.resolve_id`), with the same results (tests/test_file_table.py). A file record:

    id, source, label, path, pixel_hash, valid, reason, detail, size_bytes, mtime_ns, mean, std
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import numpy as np

from pcam_tfds.core import batch_read, layout, patches

# Files are read in batches: Beam's per-element cost is larger than decoding one 28 KB patch.
BATCH_SIZE = 256

WITHIN_TRAIN, WITHIN_TEST, ACROSS_TRAIN_TEST = "within_train", "within_test", "across_train_test"
DUPLICATE_KINDS = (WITHIN_TRAIN, WITHIN_TEST, ACROSS_TRAIN_TEST)


def list_paths(manual_dir: str) -> dict[str, list[str]]:
    """{source: every path under MANUAL_DIR/source, sorted} for train/ and test/."""
    return {source: layout.list_files(manual_dir, source) for source in layout.SOURCES}


def batch_paths(paths_by_source: dict[str, list[str]], batch_size: int = BATCH_SIZE) -> list[tuple[str, list[str]]]:
    """(source, up to BATCH_SIZE paths) batches, in a fixed order."""
    return [
        (source, paths[i : i + batch_size])
        for source, paths in sorted(paths_by_source.items())
        for i in range(0, len(paths), batch_size)
    ]


def file_record(path: str, source: str) -> dict:
    """The manifest row of one file, before it is read."""
    return {
        "id": layout.file_id(path),
        "source": source,
        "label": layout.NO_LABEL,
        "path": path,
        "pixel_hash": None,
        "valid": True,
        "reason": None,
        "detail": "",
        "size_bytes": 0,
        "mtime_ns": None,  # local files only: lets a build reuse this validation safely (pcam_tfds.core.validated)
        "mean": None,
        "std": None,
    }


def read_record(path: str, source: str) -> tuple[dict, object]:
    """Reads and checks one file: (its record, a copy of its pixels or None when it is rejected)."""
    kept = []
    cols = batch_read.read_columns([path], source, keep=lambda i, px: kept.append(bytes(px)))
    pixels = np.frombuffer(kept[0], np.uint8).reshape(patches.PATCH_SHAPE) if kept else None
    return cols.record(0), pixels


def read_batch(batch: tuple[str, list[str]]) -> list[dict]:
    """The records of one (source, paths) batch: one per path, never an exception for a bad file
    (`batch_read.read_columns`, the kernel of both executors)."""
    source, paths = batch
    cols = batch_read.read_columns(paths, source)
    return [cols.record(i) for i in range(len(cols))]


def join_labels(files: Iterable[dict], rows: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """(file records with labels, rejected label rows): every id's files and rows through `layout.resolve_id`,
    in id order. Beam does the grouping with CoGroupByKey and calls resolve_id per id."""
    files_by_id, rows_by_id = collections.defaultdict(list), collections.defaultdict(list)
    for f in files:
        files_by_id[f["id"]].append(f)
    for r in rows:
        rows_by_id[r["id"]].append(r)
    joined, rejected_rows = [], []
    for id_ in sorted(files_by_id.keys() | rows_by_id.keys()):
        id_files, id_rows = files_by_id.get(id_, ()), rows_by_id.get(id_, ())
        if len(id_files) == 1 and len(id_rows) <= 1:
            # The two shapes of almost every id, joined as resolve_id joins them (tests/test_layout.py) in a
            # third of its time: a train file with its one good row, a test file with no row.
            (f,), row = id_files, id_rows[0] if id_rows else None
            if f["source"] == layout.TRAIN and row is not None and row["reason"] is None:
                joined.append(dict(f, label=row["label"]))
                continue
            if f["source"] == layout.TEST and row is None:
                joined.append(dict(f, label=layout.NO_LABEL))
                continue
        id_files, bad_rows = layout.resolve_id(id_, id_files, id_rows)
        joined += id_files
        rejected_rows += bad_rows
    return joined, rejected_rows


def has_pixels(f: dict) -> bool:
    """Whether a file decoded, so that it can repeat another's pixels."""
    return f["pixel_hash"] is not None


def duplicate_member(f: dict) -> tuple[str, dict]:
    """(pixel hash, what a duplicate group lists of the file) of a file that decoded."""
    return f["pixel_hash"], {k: f[k] for k in ("source", "id", "label")}


def duplicate_group(pixel_hash: str, members: Iterable[dict]) -> dict:
    """Describes one set of files with identical pixels."""
    members = sorted((m["source"], m["id"], m["label"]) for m in members)
    sources = {s for s, _, _ in members}
    train_labels = {lab for s, _, lab in members if s == layout.TRAIN and lab != layout.NO_LABEL}
    if sources == {layout.TRAIN}:
        kind = WITHIN_TRAIN
    elif sources == {layout.TEST}:
        kind = WITHIN_TEST
    else:
        kind = ACROSS_TRAIN_TEST
    return {
        "pixel_hash": pixel_hash,
        "kind": kind,
        "conflicting_labels": len(train_labels) > 1,
        "members": [{"source": s, "id": i, "label": lab} for s, i, lab in members],
    }


def find_duplicates(files: Iterable[dict]) -> list[dict]:
    """One group per pixel hash shared by two or more decodable files, by hash."""
    by_hash = collections.defaultdict(list)
    for f in files:
        if has_pixels(f):
            by_hash[f["pixel_hash"]].append(f)
    shared = sorted((h, group) for h, group in by_hash.items() if len(group) > 1)
    return [duplicate_group(h, [duplicate_member(f)[1] for f in group]) for h, group in shared]
