"""Composite Beam transforms shared by `beam_jobs.validate`, `beam_jobs.stats` and the TFDS builder.

    files, rejected_rows, duplicates = pipeline | ValidateKaggleLayout(data_dir)

`files` holds one record per file under train/ and test/ (valid or not, with
its reason), `rejected_rows` every unusable row of train_labels.csv, and
`duplicates` one record per group of files with identical pixels.
"""

from __future__ import annotations

import os

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from pcam_tfds.core import layout, patches

NAMESPACE = "pcam"
# Files are read in batches: Beam's per-element cost is larger than decoding one 28 KB patch.
DEFAULT_BATCH_SIZE = 256


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
        "mtime_ns": None,  # local files only: lets a build reuse this validation safely (pcam_tfds.validated)
        "mean": None,
        "std": None,
    }


def read_record(path: str, source: str) -> tuple[dict, object]:
    """Reads and checks one file: (its record, its pixels or None when it is rejected)."""
    rec = file_record(path, source)
    try:
        if "://" not in path:
            rec["mtime_ns"] = os.stat(path).st_mtime_ns
        data = patches.read_bytes(path)
    except OSError as e:
        rec.update(valid=False, reason=patches.UNREADABLE, detail=f"{type(e).__name__}: {e}")
        return rec, None
    except patches.PatchError as e:  # not a regular file, or far too large to read
        rec.update(valid=False, reason=e.reason, detail=e.detail)
        return rec, None
    rec["size_bytes"] = len(data)  # kept in the manifest, so the bytes are read here, not via try_read_patch
    try:
        pixels = patches.decode_patch(data)
    except patches.PatchError as e:
        rec.update(valid=False, reason=e.reason, detail=e.detail)
        return rec, None
    mean, std = patches.channel_moments(pixels)
    rec.update(pixel_hash=patches.pixel_hash(pixels), mean=mean, std=std)
    return rec, pixels


class _ReadBatch(beam.DoFn):
    """Reads a batch of paths of one source folder; one record per path, never an exception."""

    def __init__(self):
        self.read = Metrics.counter(NAMESPACE, "files_read")
        self.rejected = Metrics.counter(NAMESPACE, "files_rejected_on_read")

    def process(self, batch):
        source, paths = batch
        for path in paths:
            rec, pixels = read_record(path, source)
            self.read.inc()
            if pixels is None:
                self.rejected.inc()
            yield rec


class ReadPatchFiles(beam.PTransform):
    """PBegin -> one record per file, read and checked, spread over the workers."""

    def __init__(self, paths_by_source: dict[str, list[str]], batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self.batches = [
            (source, paths[i : i + batch_size])
            for source, paths in sorted(paths_by_source.items())
            for i in range(0, len(paths), batch_size)
        ]

    def expand(self, pbegin):
        return (
            pbegin
            | "CreateBatches" >> beam.Create(self.batches, reshuffle=False)
            # Spread the batches over the workers before the expensive step.
            | "Spread" >> beam.Reshuffle()
            | "DecodeAndCheck" >> beam.ParDo(_ReadBatch())
        )


class ReadLabelRows(beam.PTransform):
    """PBegin -> one parsed row (see layout.parse_label_line) per line of train_labels.csv."""

    def __init__(self, csv_path: str):
        super().__init__()
        self.csv_path = csv_path

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadLines" >> beam.io.ReadFromText(self.csv_path, skip_header_lines=1, strip_trailing_newlines=True)
            | "Parse" >> beam.Map(layout.parse_label_line)
        )


class _Resolve(beam.DoFn):
    def __init__(self):
        self.rows_rejected = Metrics.counter(NAMESPACE, "label_rows_rejected")
        self.files_rejected = Metrics.counter(NAMESPACE, "files_rejected_on_join")

    def process(self, element):
        id_, grouped = element
        before = [f for f in grouped["files"] if f["valid"]]
        files, bad_rows = layout.resolve_id(id_, grouped["files"], grouped["rows"])
        self.files_rejected.inc(len(before) - sum(f["valid"] for f in files))
        yield from files
        for r in bad_rows:
            self.rows_rejected.inc()
            yield pvalue.TaggedOutput("rejected_rows", r)


class JoinLabels(beam.PTransform):
    """(file records, label rows) -> files with labels, plus tagged 'rejected_rows'."""

    def expand(self, inputs):
        files, rows = inputs
        keyed_files = files | "KeyFiles" >> beam.Map(lambda f: (f["id"], f))
        keyed_rows = rows | "KeyRows" >> beam.Map(lambda r: (r["id"], r))
        return (
            {"files": keyed_files, "rows": keyed_rows}
            | "GroupById" >> beam.CoGroupByKey()
            | "Resolve" >> beam.ParDo(_Resolve()).with_outputs("rejected_rows", main="files")
        )


def duplicate_group(pixel_hash: str, members) -> dict:
    """Describes one set of files with identical pixels."""
    members = sorted((m["source"], m["id"], m["label"]) for m in members)
    sources = {s for s, _, _ in members}
    train_labels = {lab for s, _, lab in members if s == layout.TRAIN and lab != layout.NO_LABEL}
    if sources == {layout.TRAIN}:
        kind = "within_train"
    elif sources == {layout.TEST}:
        kind = "within_test"
    else:
        kind = "across_train_test"
    return {
        "pixel_hash": pixel_hash,
        "kind": kind,
        "conflicting_labels": len(train_labels) > 1,
        "members": [{"source": s, "id": i, "label": lab} for s, i, lab in members],
    }


class FindDuplicates(beam.PTransform):
    """File records -> one record per pixel hash shared by two or more decodable files."""

    def expand(self, files):
        return (
            files
            | "HasPixels" >> beam.Filter(lambda f: f["pixel_hash"] is not None)
            | "KeyByHash" >> beam.Map(lambda f: (f["pixel_hash"], {k: f[k] for k in ("source", "id", "label")}))
            | "GroupByHash" >> beam.GroupByKey()
            | "Shared" >> beam.Filter(lambda kv: len(kv[1]) > 1)
            | "Describe" >> beam.MapTuple(lambda h, members: duplicate_group(h, list(members)))
        )


class ValidateKaggleLayout(beam.PTransform):
    """PBegin -> {'files', 'rejected_rows', 'duplicates'} for a Kaggle-layout folder.

    The folder is listed when the pipeline is built, so `num_files` is known
    up front and the job can check that every file came out the other end.
    """

    def __init__(self, data_dir: str, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self.data_dir = data_dir
        self.paths = {source: layout.list_files(data_dir, source) for source in layout.SOURCES}
        self.num_files = sum(len(p) for p in self.paths.values())
        self.csv_path = layout.join(data_dir, layout.LABELS_CSV)
        layout.check_labels_header(self.csv_path)
        self.batch_size = batch_size

    def expand(self, pbegin):
        files = pbegin | "ReadPatchFiles" >> ReadPatchFiles(self.paths, self.batch_size)
        rows = pbegin | "ReadLabelRows" >> ReadLabelRows(self.csv_path)
        joined = (files, rows) | "JoinLabels" >> JoinLabels()
        duplicates = joined.files | "FindDuplicates" >> FindDuplicates()
        return {"files": joined.files, "rejected_rows": joined.rejected_rows, "rows": rows, "duplicates": duplicates}
