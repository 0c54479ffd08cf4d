"""The local validation's columnar join (core.file_table) against the record-by-record rules every executor shares
(records.join_labels, layout.resolve_id, records.find_duplicates, summary.file_key), on random folders whose ids
collide on purpose; and the label CSV read as columns against `layout.parse_label_line` on each line."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from pcam_tfds.core import batch_read, file_table, layout, outputs, records, summary

TRICKY_LINES = [
    "plain0,0",
    "plain1,1",
    '"quoted",1',
    " spaced , 0",
    "..,1",
    "a..b,1",
    ".hidden,0",
    "two,2",
    "float,1.0",
    "",
    "only_id",
    "extra,1,2",
    "ünïcode,1",
    "tab\t,1",
    "plain0,1",
    ",1",
    "x/y,0",
    'broken"quote,1',
]


def _label_rows(path) -> list[dict]:
    """The rows of a label CSV after its header, a line at a time: the rule read_label_columns must give."""
    layout.check_labels_header(str(path))
    return [layout.parse_label_line(line) for line in path.read_bytes().decode("utf-8-sig").splitlines()[1:]]


@pytest.mark.parametrize(
    "newline, last, extra",
    [("\r\n", "\n", []), ("\n", "\n", []), ("\n", "", []), ("\n", "\n\n", []), ("\n", "\n", ["x\x1cy,1"])],
)
def test_the_label_csv_as_columns_is_each_line_parsed(tmp_path, newline, last, extra):
    # Lines end in '\n' (Arrow splits them), '\r\n' or another of str.splitlines' breaks (Python splits them).
    path = tmp_path / "train_labels.csv"
    path.write_bytes(("\ufeffid,label" + newline + newline.join(TRICKY_LINES + extra) + last).encode())
    expected = _label_rows(path)
    got = layout.read_label_columns(str(path))
    assert len(got) == len(expected) == len(TRICKY_LINES) + (last == "\n\n") + 2 * len(extra)
    assert got.records(list(range(len(got)))) == expected
    assert got.good.tolist() == [r["reason"] is None for r in expected]


def _random_folder(rng: np.random.Generator, n_files: int, n_rows: int, unique_ids: bool = False):
    """(FileColumns per source, label rows as CSV lines): ids drawn from a small pool, so that ids repeat across
    files and rows, with bad rows, decode rejections and shared pixel hashes; with UNIQUE_IDS, no two files share
    an id (a Kaggle folder), in no order."""
    pool = [f"{k:04x}" for k in range(n_files)]
    columns = []
    for n, source in enumerate(layout.SOURCES):
        if unique_ids:
            names = [f"{k:04x}.tif" for k in rng.permutation(n_files)[n * n_files // 2 : (n + 1) * n_files // 2]]
        else:
            draws = [f"{rng.choice(pool)}{rng.choice(['.tif', '.tif', '.tif', '.png'])}" for _ in range(n_files)]
            names = sorted(set(draws))
        k = len(names)
        rejected = rng.random(k) < 0.05
        hashes = [None if bad else f"{rng.integers(0, k):032x}" for bad in rejected]
        cols = batch_read.FileColumns(source, [f"/d/{source}/{name}" for name in names])
        cols.sizes[:] = rng.integers(100, 30_000, k)
        cols.mtimes[:] = rng.integers(0, 2**62, k)
        cols.has_mtime[:] = rng.random(k) < 0.9
        cols.valid[:] = ~rejected
        for i, h in enumerate(hashes):
            if h is not None:
                cols.hexes[i] = np.frombuffer(h.encode(), np.uint8)
        cols.reason[:] = ["truncated" if bad else None for bad in rejected]
        cols.detail[:] = ["cut short" if bad else "" for bad in rejected]
        cols.moments[:] = rng.random((k, 6))
        cols.moments[rejected] = np.nan
        columns.append(cols)
    lines = []
    for _ in range(n_rows):
        id_ = str(rng.choice(pool))
        lines.append(str(rng.choice([f"{id_},0", f"{id_},1", f"{id_},1", f"{id_},7", f"{id_}", f"{id_},1"])))
    return columns, lines


@pytest.mark.parametrize("seed, unique_ids", [(seed, False) for seed in range(6)] + [(6, True), (7, True)])
def test_the_columnar_join_is_join_labels(tmp_path, seed, unique_ids):
    rng = np.random.default_rng(seed)
    columns, lines = _random_folder(rng, n_files=300, n_rows=260, unique_ids=unique_ids)
    csv_path = tmp_path / "train_labels.csv"
    csv_path.write_text("id,label\n" + "\n".join(lines) + "\n")
    files = [c.record(i) for c in sorted(columns, key=lambda c: c.source) for i in range(len(c))]
    expected_files, expected_rows = records.join_labels(files, _label_rows(csv_path))

    batches = [c.arrow() for c in sorted(columns, key=lambda c: c.source)]
    table, rejected_rows = file_table.join_columns(batches, layout.read_label_columns(str(csv_path)))
    assert table.records() == expected_files
    assert rejected_rows == expected_rows
    assert table.duplicates() == records.find_duplicates(expected_files)
    assert sorted(table.counts()) == sorted(collections.Counter(map(summary.file_key, expected_files)).items())
    assert table.rejected() == [f for f in expected_files if not f["valid"]]
    assert table.manifest().to_pylist() == [outputs.manifest_row(f) for f in expected_files]
    keys = ("id", "source", "label", "path", "pixel_hash", "valid")
    assert table.valid_records() == [{k: f[k] for k in keys} for f in expected_files if f["valid"]]
    # Every kind of join was met: labelled train files, test files, and ids resolve_id had to settle.
    reasons = collections.Counter(f["reason"] for f in expected_files)
    assert reasons[None] and reasons[layout.MISSING_LABEL] and (unique_ids or reasons[layout.DUPLICATE_ID])
    assert {r["reason"] for r in expected_rows} >= {layout.MISSING_FILE, layout.BAD_LABEL, layout.DUPLICATE_ID}


def test_a_folder_without_label_rows_or_files_joins(tmp_path):
    (tmp_path / "train_labels.csv").write_text("id,label\n")
    cols = batch_read.FileColumns(layout.TEST, ["/d/test/a.tif"])
    cols.valid[0], cols.hexes[0], cols.moments[0] = True, ord("a"), 0
    table, rows = file_table.join_columns([cols.arrow()], layout.read_label_columns(str(tmp_path / "train_labels.csv")))
    assert [f["label"] for f in table.records()] == [layout.NO_LABEL] and rows == []
    table, rows = file_table.join_columns([], layout.read_label_columns(str(tmp_path / "train_labels.csv")))
    assert table.records() == [] and table.duplicates() == [] and rows == []


@pytest.mark.parametrize("width", [32, 5])
def test_the_shared_hashes_are_found_whatever_their_width(width):
    # 32 hex digits: batch_read's hashes, keyed in numpy; any other width goes through Arrow's kernels.
    import pyarrow as pa

    rng = np.random.default_rng(width)
    pool = [f"{k:0{width}x}"[-width:] for k in rng.integers(0, 2**62, 40).tolist()]
    values = [None if rng.random() < 0.1 else str(rng.choice(pool)) for _ in range(300)]
    counted = collections.Counter(v for v in values if v is not None)
    expected = [i for i, v in enumerate(values) if v is not None and counted[v] > 1]
    chunked = pa.chunked_array([pa.array(values[:100], pa.string()), pa.array(values[100:], pa.string())])
    assert file_table._sharing(chunked).tolist() == expected
    assert file_table._sharing(pa.chunked_array([pa.array(values[:1], pa.string())], pa.string())).tolist() == []
