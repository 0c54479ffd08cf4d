"""The Beam executor of the validation: composite transforms that spread `pcam_tfds.core`'s steps over workers.

    outputs = pipeline | ValidateKaggleLayout(manual_dir)
    outputs | WriteValidationOutputs(output_dir, num_listed, manual_dir)

`files` holds one record per file under train/ and test/ (valid or not, with
its reason), `rejected_rows` every unusable row of train_labels.csv, `rows` every
row, and `duplicates` one record per group of files with identical pixels. Every
rule is a function of `pcam_tfds.core` (records, summary, outputs) that the local
build (`pcam_tfds.local_steps`) calls too; here Beam only batches, groups and counts.
Used by `beam_jobs.validate`, `beam_jobs.stats` and the `pcam` builder's Beam path.
"""

from __future__ import annotations

from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly, before the imports below

# isort: split
import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from pcam_tfds.core import counters, layout, outputs, records, summary
from pcam_tfds.core.progress import Tally


class _ReadBatch(beam.DoFn):
    """Reads a batch of paths of one source folder; one record per path, never an exception."""

    def __init__(self, tally: Tally | None = None):
        self.read = Metrics.counter(counters.NAMESPACE, counters.FILES_READ)
        self.rejected = Metrics.counter(counters.NAMESPACE, counters.FILES_REJECTED_ON_READ)
        self.tally = tally

    def process(self, batch):
        recs = records.read_batch(batch)
        self.read.inc(len(recs))
        self.rejected.inc(sum(not r["valid"] for r in recs))
        if self.tally is not None:
            self.tally.add(len(recs))
        yield from recs


class ReadPatchFiles(beam.PTransform):
    """PBegin -> one record per file, read and checked, spread over the workers.

    `tally`: where local workers add the files they have read, for the job's progress lines.
    """

    def __init__(
        self,
        paths_by_source: dict[str, list[str]],
        batch_size: int = records.BATCH_SIZE,
        tally: Tally | None = None,
    ):
        super().__init__()
        self.batches = records.batch_paths(paths_by_source, batch_size)
        self.tally = tally

    def expand(self, pbegin):
        return (
            pbegin
            | "CreateBatches" >> beam.Create(self.batches, reshuffle=False)
            # Spread the batches over the workers before the expensive step.
            | "Spread" >> beam.Reshuffle()
            | "DecodeAndCheck" >> beam.ParDo(_ReadBatch(self.tally))
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


class ReadManifestRows(beam.PTransform):
    """PBegin -> one dict per row of a beam_jobs.validate manifest.parquet, with COLUMNS.

    Instead of `beam.io.ReadFromParquet`, which hands pyarrow Beam's Python file objects and reads with
    pyarrow's threads: a process that did so could abort at exit (`pcam_tfds.core.outputs._parquet_file`).
    The manifest is read by one worker, row group by row group; the steps after it spread the rows.
    """

    def __init__(self, manifest: str, columns: list[str]):
        super().__init__()
        self.manifest, self.columns = manifest, list(columns)

    def expand(self, pbegin):
        return (
            pbegin
            | "ManifestPath" >> beam.Create([self.manifest])
            | "ReadRows" >> beam.FlatMap(outputs.manifest_rows, self.columns)
        )


class _Resolve(beam.DoFn):
    def __init__(self):
        self.rows_rejected = Metrics.counter(counters.NAMESPACE, counters.LABEL_ROWS_REJECTED)
        self.files_rejected = Metrics.counter(counters.NAMESPACE, counters.FILES_REJECTED_ON_JOIN)

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
    """(file records, label rows) -> files with labels, plus tagged 'rejected_rows' (records.join_labels, grouped
    by CoGroupByKey)."""

    def expand(self, inputs):
        files, rows = inputs
        keyed_files = files | "KeyFiles" >> beam.Map(lambda f: (f["id"], f))
        keyed_rows = rows | "KeyRows" >> beam.Map(lambda r: (r["id"], r))
        return (
            {"files": keyed_files, "rows": keyed_rows}
            | "GroupById" >> beam.CoGroupByKey()
            | "Resolve" >> beam.ParDo(_Resolve()).with_outputs("rejected_rows", main="files")
        )


class FindDuplicates(beam.PTransform):
    """File records -> one record per pixel hash shared by two or more decodable files (records.find_duplicates,
    grouped by GroupByKey)."""

    def expand(self, files):
        return (
            files
            | "HasPixels" >> beam.Filter(records.has_pixels)
            | "KeyByHash" >> beam.Map(records.duplicate_member)
            | "GroupByHash" >> beam.GroupByKey()
            | "Shared" >> beam.Filter(lambda kv: len(kv[1]) > 1)
            | "Describe" >> beam.MapTuple(records.duplicate_group)
        )


class ValidateKaggleLayout(beam.PTransform):
    """PBegin -> {'files', 'rejected_rows', 'rows', 'duplicates'} for a Kaggle-layout folder.

    The folder is listed when the pipeline is built, so `num_files` is known
    up front and the job can check that every file came out the other end.
    """

    def __init__(self, manual_dir: str, batch_size: int = records.BATCH_SIZE, tally: Tally | None = None):
        super().__init__()
        self.manual_dir = manual_dir
        self.tally = tally
        self.paths = records.list_paths(manual_dir)
        self.num_files = sum(len(p) for p in self.paths.values())
        self.csv_path = layout.join(manual_dir, layout.LABELS_CSV)
        layout.check_labels_header(self.csv_path)
        self.batch_size = batch_size

    def expand(self, pbegin):
        files = pbegin | "ReadPatchFiles" >> ReadPatchFiles(self.paths, self.batch_size, self.tally)
        rows = pbegin | "ReadLabelRows" >> ReadLabelRows(self.csv_path)
        joined = (files, rows) | "JoinLabels" >> JoinLabels()
        duplicates = joined.files | "FindDuplicates" >> FindDuplicates()
        return {"files": joined.files, "rejected_rows": joined.rejected_rows, "rows": rows, "duplicates": duplicates}


def single_file(prefix: str, suffix: str) -> dict:
    """WriteTo* arguments that produce exactly PREFIX+SUFFIX, one file, no shard numbers."""
    return {"file_path_prefix": prefix, "file_name_suffix": suffix, "num_shards": 1, "shard_name_template": ""}


def _write_summary(counts, num_rows, duplicate_facts, num_listed, output_dir, manual_dir):
    doc = summary.build_summary(counts, num_rows, duplicate_facts, num_listed)
    outputs.write_summary_files(doc, output_dir, manual_dir)


def _prefix(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    return stem, dot + ext


class WriteValidationOutputs(beam.PTransform):
    """The outputs of ValidateKaggleLayout -> the files in OUTPUT_DIR (pcam_tfds.core.outputs), rows in the
    order the workers produce them."""

    def __init__(self, output_dir: str, num_listed: int, manual_dir: str):
        super().__init__()
        self.output_dir, self.num_listed, self.manual_dir = output_dir, num_listed, manual_dir

    def _single_file(self, name: str) -> dict:
        stem, suffix = _prefix(name)
        return single_file(layout.join(self.output_dir, stem), suffix)

    def expand(self, validated):
        files, rejected_rows, rows, dups = (validated[k] for k in ("files", "rejected_rows", "rows", "duplicates"))
        _ = (
            files
            | "ToManifestRow" >> beam.Map(outputs.manifest_row)
            | "WriteManifest"
            >> beam.io.WriteToParquet(schema=outputs.MANIFEST_SCHEMA, **self._single_file(outputs.MANIFEST))
        )
        rejected_files = (
            files | "Rejected" >> beam.Filter(outputs.is_rejected) | "FileLine" >> beam.Map(outputs.rejected_file_line)
        )
        rejected_lines = rejected_rows | "RowLine" >> beam.Map(outputs.rejected_row_line)
        _ = (
            (rejected_files, rejected_lines)
            | "AllRejected" >> beam.Flatten()
            | "WriteRejected"
            >> beam.io.WriteToText(header=",".join(outputs.REJECTED_HEADER), **self._single_file(outputs.REJECTED))
        )
        _ = (
            dups
            | "DuplicateLines" >> beam.FlatMap(outputs.duplicate_lines)
            | "WriteDuplicates"
            >> beam.io.WriteToText(header=outputs.DUPLICATES_HEADER, **self._single_file(outputs.DUPLICATES))
        )
        file_keys = files | "FileKey" >> beam.Map(summary.file_key)
        row_keys = rejected_rows | "RowKey" >> beam.Map(summary.row_key)
        counts = (file_keys, row_keys) | "AllKeys" >> beam.Flatten() | "Count" >> beam.combiners.Count.PerElement()
        num_rows = rows | "CountRows" >> beam.combiners.Count.Globally()
        dup_facts = dups | "DupKind" >> beam.Map(summary.duplicate_fact)
        return (
            counts
            | "CountList" >> beam.combiners.ToList()
            | "WriteSummary"
            >> beam.Map(
                _write_summary,
                num_rows=beam.pvalue.AsSingleton(num_rows),
                duplicate_facts=beam.pvalue.AsList(dup_facts),
                num_listed=self.num_listed,
                output_dir=self.output_dir,
                manual_dir=self.manual_dir,
            )
        )
