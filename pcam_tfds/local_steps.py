"""The single-machine half of the `pcam` builder: the same validation, join and splits, without Beam.

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full

On one machine Beam's DirectRunner moves every serialized example through its
shuffle in memory: at 25k files it used 7 GB and 5x the time of this path, and
in multi_processing mode it dropped examples (bench/RESULTS.md). Here a thread
pool reads and checks the files with the
same functions as `beam_jobs` (`read_record`, `resolve_id`, `duplicate_group`),
the same `assign_splits` decides membership, the same validation outputs are
written, and TFDS' ordinary writer, which spills its shuffle to disk, writes
the shards. The dataset is identical to the Beam build's.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from beam_jobs import validate
from beam_jobs.transforms import duplicate_group, read_record
from pcam_tfds import validated
from pcam_tfds.core import layout, patches, splits

_CHUNK = 512  # files per task
_READ_THREADS, _READ_AHEAD = 4, 256  # pixel reads in flight while the writer works


def _read_chunk(chunk: tuple[str, list[str]]) -> list[dict]:
    source, paths = chunk
    return [read_record(p, source)[0] for p in paths]


def read_label_rows(csv_path: str) -> list[dict]:
    layout.check_labels_header(csv_path)
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(csv_path, compression_type="uncompressed") as f:
        lines = f.read().decode("utf-8-sig").splitlines()
    return [layout.parse_label_line(line) for line in lines[1:]]


class LocalValidation:
    """Validates a Kaggle folder with a thread pool; the results of beam_jobs.validate, in memory."""

    def __init__(self, data_dir: str, workers: int | None = None):
        self.data_dir = data_dir
        paths = {s: layout.list_files(data_dir, s) for s in layout.SOURCES}
        self.num_listed = sum(len(p) for p in paths.values())
        chunks = [(s, p[i : i + _CHUNK]) for s, p in sorted(paths.items()) for i in range(0, len(p), _CHUNK)]
        rows = read_label_rows(layout.join(data_dir, layout.LABELS_CSV))
        self.num_rows = len(rows)
        # Threads, not processes: reads, hashing and numpy release the GIL, and worker processes
        # would each re-import the caller (TFDS and TensorFlow under `tfds build`), which cost more
        # than they saved (bench/RESULTS.md).
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            decoded = [rec for batch in pool.map(_read_chunk, chunks) for rec in batch]
        files_by_id, rows_by_id = collections.defaultdict(list), collections.defaultdict(list)
        for rec in decoded:
            files_by_id[rec["id"]].append(rec)
        for row in rows:
            rows_by_id[row["id"]].append(row)
        self.files, self.rejected_rows = [], []
        for id_ in sorted(files_by_id.keys() | rows_by_id.keys()):
            files, bad_rows = layout.resolve_id(id_, files_by_id.get(id_, []), rows_by_id.get(id_, []))
            self.files += files
            self.rejected_rows += bad_rows
        by_hash = collections.defaultdict(list)
        for f in self.files:
            if f["pixel_hash"] is not None:
                by_hash[f["pixel_hash"]].append(f)
        self.duplicates = [duplicate_group(h, m) for h, m in sorted(by_hash.items()) if len(m) > 1]

    def summary(self) -> dict:
        counts = collections.Counter(validate.file_count_key(f) for f in self.files)
        counts.update(("row", r["reason"]) for r in self.rejected_rows)
        kinds = [(g["kind"], g["conflicting_labels"], len(g["members"])) for g in self.duplicates]
        return validate.build_summary(list(counts.items()), self.num_rows, kinds, self.num_listed)

    def write_outputs(self, output_dir: str) -> dict:
        """The files beam_jobs.validate writes, from this validation."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        os.makedirs(output_dir, exist_ok=True)
        summary = self.summary()
        table = pa.Table.from_pylist([validate.manifest_row(f) for f in self.files], schema=validate.MANIFEST_SCHEMA)
        pq.write_table(table, os.path.join(output_dir, "manifest.parquet"))
        lines = [",".join(validate.REJECTED_HEADER)]
        lines += [validate.rejected_file_line(f) for f in self.files if not f["valid"]]
        lines += [validate.rejected_row_line(r) for r in self.rejected_rows]
        validate.write_lines(os.path.join(output_dir, "rejected.csv"), lines)
        dup_lines = [validate.DUPLICATES_HEADER] + [
            line for g in self.duplicates for line in validate.duplicate_lines(g)
        ]
        validate.write_lines(os.path.join(output_dir, "duplicates.csv"), dup_lines)
        validate.write_summary_files(summary, output_dir, self.data_dir)
        return summary


def split_generators(
    data_dir, checks_dir, validation_fraction, sample_fraction, seed, slides=None, counts=None, validation_dir=None
):
    """Returns {'train', 'validation', 'test'}: generators of (key, example).

    `counts` (a dict) receives the number of examples each generator yielded. `validation_dir`: a
    beam_jobs.validate output to reuse instead of validating (pcam_tfds.validated checks it first).
    """
    start = time.monotonic()
    if validation_dir:
        files = validated.load_records(validation_dir, data_dir)
        summary = validated.copy_outputs(validation_dir, checks_dir)
        verb = f"reused the validation in {validation_dir} of"
    else:
        check = LocalValidation(data_dir)
        files, summary = check.files, check.write_outputs(checks_dir)
        verb = "validated"
    logging.info(
        "%s %d files in %.1f s: %d valid, %d rejected %s; listed in %s",
        verb,
        summary["total"],
        time.monotonic() - start,
        summary["valid"],
        summary["rejected"],
        summary["rejected_by_reason"],
        checks_dir,
    )
    if len(files) != summary["total"]:
        raise validate.AccountingError(f"{len(files)} file records but summary.json counts {summary['total']} files")
    valid = [f for f in files if f["valid"]]
    for source in (layout.TRAIN, layout.TEST):
        if not any(f["source"] == source for f in valid):
            listed = sum(f["source"] == source for f in files)
            raise ValueError(
                f"{os.path.join(data_dir, source)} has no valid patch file ({listed} files listed, all rejected: "
                f"see {os.path.join(checks_dir, 'rejected.csv')}); the dataset would have an empty split"
            )
    assignment = splits.assign_splits(
        [(f["id"], f["label"], f["pixel_hash"]) for f in valid if f["source"] == layout.TRAIN],
        validation_fraction=validation_fraction,
        seed=seed,
        sample_fraction=sample_fraction,
        slides=slides,
    )
    by_split = collections.defaultdict(list)
    for f in valid:
        by_split[layout.TEST if f["source"] == layout.TEST else assignment[f["id"]]].append(f)
    if counts is not None:
        counts[splits.UNUSED] = len(by_split[splits.UNUSED])
    names = (splits.TRAIN, splits.VALIDATION, layout.TEST)
    return {name: _examples(by_split[name], name, counts) for name in names}


def _examples(records: list[dict], split: str, counts: dict | None) -> Iterator[tuple[str, dict]]:
    # Reads run ahead in threads (file reads release the GIL) while TFDS serializes and writes.
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        window: collections.deque = collections.deque()
        todo = iter(records)
        for r in itertools.islice(todo, _READ_AHEAD):
            window.append((r, pool.submit(patches.read_patch, r["path"])))
        while window:
            r, future = window.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                window.append((nxt, pool.submit(patches.read_patch, nxt["path"])))
            # The file passed validation moments ago; failing to read it now is an error, not a rejection.
            pixels = future.result()
            if counts is not None:
                counts[split] = counts.get(split, 0) + 1
            yield r["id"], {"image": pixels, "label": r["label"], "id": r["id"]}
