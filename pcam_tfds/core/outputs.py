"""The files a validation writes, their names and row formats; both executors write them from these.

    manifest.parquet  one row per file (`manifest_row`, MANIFEST_SCHEMA, version MANIFEST_VERSION in its metadata)
    rejected.csv      REJECTED_HEADER, then `rejected_file_line` per rejected file and `rejected_row_line` per row
    duplicates.csv    DUPLICATES_HEADER, then `duplicate_lines` per group
    summary.json, report.md, inputs.json   `write_summary_files`

`write_manifest` and `write_validation` write them from a validation held in memory (the local executor, whose
manifest is already a table: pcam_tfds.core.file_table);
`beam_jobs.transforms.WriteValidationOutputs` writes the same rows from PCollections, in the
order its workers produce them. Local paths are written with `open`; remote ones (`gs://`) through
Beam's FileSystems (`fileio`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os

import pyarrow as pa

from pcam_tfds.core import fileio, layout, patches
from pcam_tfds.core.summary import render_report

MANIFEST, SUMMARY, REJECTED, DUPLICATES, REPORT, INPUTS = (
    "manifest.parquet",
    "summary.json",
    "rejected.csv",
    "duplicates.csv",
    "report.md",
    "inputs.json",
)
OUTPUT_FILES = (MANIFEST, SUMMARY, REJECTED, DUPLICATES, REPORT, INPUTS)

# The manifest's version, in its Parquet metadata. Version 2 (issue 39) hashes the pixels with XXH3-128
# (core.patches.pixel_hash); version 1, whose files carry no version, with BLAKE2b-128. The hash decides the
# duplicate groups and so the splits: a build refuses to reuse a manifest of another version (core.validated).
MANIFEST_VERSION = 2
_VERSION_KEY, _HASH_KEY = b"pcam.manifest_version", b"pcam.pixel_hash"
_HASH_OF_VERSION = {1: "blake2b_128", 2: patches.PIXEL_HASH}

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("label", pa.int64()),
        ("path", pa.string()),
        ("pixel_hash", pa.string()),
        ("valid", pa.bool_()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
    ]
    + [(f"{stat}_{c}", pa.float64()) for stat in ("mean", "std") for c in "rgb"],
    metadata={_VERSION_KEY: str(MANIFEST_VERSION).encode(), _HASH_KEY: patches.PIXEL_HASH.encode()},
)
REJECTED_HEADER = ["kind", "source", "id", "path", "reason", "detail"]
DUPLICATES_HEADER = "pixel_hash,kind,conflicting_labels,source,id,label"


_RECORD_COLUMNS = ("id", "source", "label", "path", "pixel_hash", "valid", "reason", "detail", "size_bytes", "mtime_ns")
_STATS = ("mean", "std")


def manifest_row(f: dict) -> dict:
    row = {k: f[k] for k in _RECORD_COLUMNS}
    for stat in _STATS:
        values = f[stat] or (None, None, None)
        row.update({f"{stat}_{c}": v for c, v in zip("rgb", values)})
    return row


def csv_line(values) -> str:
    """VALUES as one CSV line, without its newline (None as an empty field)."""
    return csv_text([values])[:-1]


def is_rejected(f: dict) -> bool:
    return not f["valid"]


def rejected_file_line(f: dict) -> str:
    return csv_line(["file", f["source"], f["id"], f["path"], f["reason"], f["detail"]])


def rejected_row_line(r: dict) -> str:
    return csv_line(["label_row", layout.LABELS_CSV, r["id"], r["raw"], r["reason"], ""])


def duplicate_rows(group: dict):
    """The values of each of GROUP's lines in duplicates.csv."""
    for m in group["members"]:
        yield [group["pixel_hash"], group["kind"], group["conflicting_labels"], m["source"], m["id"], m["label"]]


def duplicate_lines(group: dict):
    return map(csv_line, duplicate_rows(group))


def csv_text(rows) -> str:
    """`csv_line` of each of ROWS, each ended by a newline, by one writer."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(["" if v is None else v for v in values] for values in rows)
    return buf.getvalue()


def write_text(path: str, text: str) -> None:
    fileio.write_bytes(path, text.encode())


def write_lines(path: str, lines: list[str]) -> None:
    write_text(path, "\n".join(lines) + "\n")


def inputs_fingerprint(manual_dir: str) -> dict:
    """What the validation saw of train_labels.csv (inputs.json); the files' own sizes and mtimes are in the manifest."""
    data = fileio.read_bytes(layout.join(manual_dir, layout.LABELS_CSV))
    return {
        "manual_dir": manual_dir,
        "labels_csv": {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
    }


def write_summary_files(summary: dict, output_dir: str, manual_dir: str) -> None:
    write_text(layout.join(output_dir, INPUTS), json.dumps(inputs_fingerprint(manual_dir), indent=2) + "\n")
    write_text(layout.join(output_dir, SUMMARY), json.dumps(summary, indent=2) + "\n")
    write_text(layout.join(output_dir, REPORT), render_report(summary, manual_dir))


def _parquet_file(path: str):
    """A pyarrow ParquetFile over PATH that holds no Python object: pyarrow's own file for a local path; for a
    remote one (`gs://`, read through `fileio`), the bytes copied into a buffer pyarrow allocated.

    Why: a ParquetFile over a Python file object (or over `bytes`) keeps Python buffers inside pyarrow.
    When one of pyarrow's threads drops the last reference to such a buffer while the interpreter shuts
    down, it needs the GIL (PyGILState_Ensure while finalizing) and the process aborts at exit after doing
    all its work ("terminate called without an active exception", status -6; apache/arrow#34314).
    `pq.read_table` over a Python file did so about one exit in five, `ParquetFile.read` about one in a
    hundred, and even `use_threads=False` row-group reads now and then (bench/bench_manifest_exit.py,
    bench/RESULTS.md). With no Python object inside pyarrow there is nothing for its threads to release.
    """
    import pyarrow.parquet as pq

    if not fileio.is_remote(path):
        return pq.ParquetFile(path)
    data = fileio.read_bytes(path)
    buffer = pa.allocate_buffer(len(data))
    memoryview(buffer).cast("B")[:] = data
    return pq.ParquetFile(pa.BufferReader(buffer))


def read_manifest(path: str, columns: list[str]) -> pa.Table:
    """`columns` of the manifest.parquet at PATH (local, or `gs://`), on one thread: a manifest is small
    enough that threads gain nothing (`_parquet_file` says why no Python object is handed to pyarrow)."""
    with _parquet_file(path) as parquet:
        return parquet.read(columns=columns, use_threads=False)


def manifest_version(schema: pa.Schema) -> tuple[int, str]:
    """(version, pixel hash) of a manifest, from the metadata of its schema (a table read by `read_manifest`
    has it); a manifest without them is version 1 (BLAKE2b-128)."""
    meta = schema.metadata or {}
    version = int(meta.get(_VERSION_KEY, b"1"))
    return version, meta.get(_HASH_KEY, _HASH_OF_VERSION.get(version, "unknown").encode()).decode()


def manifest_rows(path: str, columns: list[str]):
    """The rows of the manifest.parquet at PATH as dicts, one row group at a time (bounded memory): what the Beam
    jobs read instead of `beam.io.ReadFromParquet`, which hands pyarrow Beam's Python file objects."""
    with _parquet_file(path) as parquet:
        for i in range(parquet.num_row_groups):
            yield from parquet.read_row_group(i, columns=columns, use_threads=False).to_pylist()


def count_manifest_rows(path: str) -> int:
    """The number of rows of the manifest.parquet at PATH, from its footer."""
    with _parquet_file(path) as parquet:
        return parquet.metadata.num_rows


def write_manifest(output_dir: str, manifest: pa.Table) -> None:
    """MANIFEST (a table of MANIFEST_SCHEMA) into the local folder OUTPUT_DIR."""
    import pyarrow.parquet as pq

    pq.write_table(manifest, os.path.join(output_dir, MANIFEST))


def write_validation(
    output_dir: str,
    manual_dir: str,
    rejected_files: list[dict],
    rejected_rows: list[dict],
    duplicates: list[dict],
    summary: dict,
) -> None:
    """Every output of a validation held in memory but the manifest (`write_manifest`), into the local folder
    OUTPUT_DIR: from the records of the rejected files and rows, the duplicate groups and the summary."""
    os.makedirs(output_dir, exist_ok=True)
    lines = [",".join(REJECTED_HEADER)]
    lines += [rejected_file_line(f) for f in rejected_files]
    lines += [rejected_row_line(r) for r in rejected_rows]
    write_lines(os.path.join(output_dir, REJECTED), lines)
    rows = (row for g in duplicates for row in duplicate_rows(g))
    write_text(os.path.join(output_dir, DUPLICATES), DUPLICATES_HEADER + "\n" + csv_text(rows))
    write_summary_files(summary, output_dir, manual_dir)
