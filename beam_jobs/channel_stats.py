"""The Beam executor of the channel statistics: transforms that spread `pcam_tfds.core.channel_stats` over workers.

    files = pipeline | SelectLabelledFiles(manual_dir)            # or ReadManifestFiles(manifest)
    computed = files["valid"] | ComputeChannelStats(thresholds)
    {"stats": computed["stats"], "rejected": ...} | WriteStats(output_dir, thresholds, num_listed, source)

The accumulator, the per-batch read, the stats.json document and its loader are plain
functions in `pcam_tfds.core.channel_stats`; the accumulators cross worker processes by pickle,
which finds them there by module name. `beam_jobs.stats` is the job that runs these.
"""

from __future__ import annotations

import json

from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly, before the imports below

# isort: split
import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from beam_jobs.transforms import JoinLabels, ReadLabelRows, ReadManifestRows
from pcam_tfds.core import channel_stats, counters, fileio, layout, outputs, records
from pcam_tfds.core.channel_stats import DEFAULT_THRESHOLDS, PatchStats, Thresholds
from pcam_tfds.core.progress import Tally


class PatchStatsFn(beam.CombineFn):
    """Combines uint8 patches, one (H, W, 3) or a stack (N, H, W, 3) per input, into a PatchStats."""

    def __init__(self, thresholds: Thresholds = DEFAULT_THRESHOLDS):
        super().__init__()
        self.thresholds = thresholds
        self.patches_added = Metrics.counter(counters.NAMESPACE, counters.PATCHES_SUMMARISED)

    def create_accumulator(self):
        return PatchStats()

    def add_input(self, acc, pixels):
        n = acc.patches
        acc.add(pixels, self.thresholds)
        self.patches_added.inc(acc.patches - n)
        return acc

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        acc = next(accumulators)
        for other in accumulators:
            acc.merge(other)
        return acc

    def extract_output(self, acc):
        return acc


class _ReadPatchBatch(beam.DoFn):
    """A batch of valid file records -> (group, stack of their pixels) per group, rejected files tagged."""

    def __init__(self, tally: Tally | None = None):
        self.read = Metrics.counter(counters.NAMESPACE, counters.FILES_READ)
        self.rejected = Metrics.counter(counters.NAMESPACE, counters.FILES_REJECTED_ON_READ)
        self.tally = tally

    def process(self, batch):
        by_group, rejected = channel_stats.read_groups(batch)
        self.read.inc(len(batch))
        self.rejected.inc(len(rejected))
        if self.tally is not None:
            self.tally.add(len(batch))
        for rec in rejected:
            yield pvalue.TaggedOutput("rejected", rec)
        yield from by_group.items()


class ComputeChannelStats(beam.PTransform):
    """Valid file records (id, source, label, path) -> {'stats': (group, PatchStats), 'rejected': records}.

    `tally`: where local workers add the files they have read, for the job's progress lines.
    """

    def __init__(
        self,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        batch_size: int = records.BATCH_SIZE,
        tally: Tally | None = None,
    ):
        super().__init__()
        self.thresholds, self.batch_size, self.tally = thresholds, batch_size, tally

    def expand(self, files):
        read = (
            files
            # Beam's per-element cost is larger than decoding one 28 KB patch: read and count in batches.
            | "Batch" >> beam.BatchElements(min_batch_size=self.batch_size, max_batch_size=self.batch_size)
            | "ReadPixels"
            >> beam.ParDo(_ReadPatchBatch(self.tally))
            # Inference sees TaggedOutput among the yields; the main output is (group, pixels).
            .with_output_types(tuple[str, np.ndarray])
            .with_outputs("rejected", main="pixels")
        )
        stats = read.pixels | "Combine" >> beam.CombinePerKey(PatchStatsFn(self.thresholds))
        return {"stats": stats, "rejected": read.rejected}


class _SplitByValidity(beam.DoFn):
    """Joined or manifest file records -> valid ones, and tagged 'rejected' ones (done, for the progress count)."""

    def __init__(self, tally: Tally | None = None):
        self.rejected = Metrics.counter(counters.NAMESPACE, counters.FILES_REJECTED_BEFORE_READ)
        self.tally = tally

    def process(self, rec):
        if rec["valid"]:
            yield {k: rec[k] for k in ("id", "source", "label", "path")}
        else:
            self.rejected.inc()
            if self.tally is not None:
                self.tally.add(1)
            yield pvalue.TaggedOutput(
                "rejected", channel_stats.rejected_record(rec, rec["reason"], rec.get("detail") or "")
            )


class SelectLabelledFiles(beam.PTransform):
    """PBegin -> {'valid', 'rejected'} file records of a Kaggle folder, labelled by train_labels.csv.

    The folder is listed when the pipeline is built (`num_files`); the files
    are not read here, only joined with their label rows (the join of beam_jobs.transforms).
    """

    def __init__(self, manual_dir: str, batch_size: int = records.BATCH_SIZE, tally: Tally | None = None):
        super().__init__()
        self.tally = tally
        paths = records.list_paths(manual_dir)
        self.num_files = sum(len(p) for p in paths.values())
        self.batches = records.batch_paths(paths, batch_size)
        self.csv_path = layout.join(manual_dir, layout.LABELS_CSV)
        layout.check_labels_header(self.csv_path)

    def expand(self, pbegin):
        files = (
            pbegin
            # Batches of paths keep the pipeline small; records are made on the workers.
            | "CreatePathBatches" >> beam.Create(self.batches, reshuffle=False)
            | "ToRecords" >> beam.FlatMapTuple(lambda source, paths: (records.file_record(p, source) for p in paths))
        )
        rows = pbegin | "ReadLabelRows" >> ReadLabelRows(self.csv_path)
        joined = (files, rows) | "JoinLabels" >> JoinLabels()
        split = joined.files | "SplitByValidity" >> beam.ParDo(_SplitByValidity(self.tally)).with_outputs(
            "rejected", main="valid"
        )
        return {"valid": split.valid, "rejected": split.rejected}


MANIFEST_COLUMNS = ["id", "source", "label", "path", "valid", "reason", "detail"]


class ReadManifestFiles(beam.PTransform):
    """PBegin -> {'valid', 'rejected'} file records from a `beam_jobs.validate` manifest.parquet (`num_files` rows)."""

    def __init__(self, manifest: str, tally: Tally | None = None):
        super().__init__()
        if not fileio.exists(manifest):
            raise FileNotFoundError(f"{manifest}: no such file; expected the manifest.parquet of beam_jobs.validate")
        self.manifest, self.tally = manifest, tally
        self.num_files = outputs.count_manifest_rows(manifest)

    def expand(self, pbegin):
        rows = pbegin | "ReadManifest" >> ReadManifestRows(self.manifest, MANIFEST_COLUMNS)
        # The manifest holds one file per row in arbitrary bundles: spread them before the expensive read.
        split = (
            rows
            | "Spread" >> beam.Reshuffle()
            | "SplitByValidity" >> beam.ParDo(_SplitByValidity(self.tally)).with_outputs("rejected", main="valid")
        )
        return {"valid": split.valid, "rejected": split.rejected}


def _write_stats(group_stats, rejected_counts, thresholds, num_listed, source, output_dir):
    stats = channel_stats.build_stats(group_stats, rejected_counts, thresholds, num_listed, source)
    fileio.write_bytes(layout.join(output_dir, channel_stats.STATS_JSON), (json.dumps(stats, indent=1) + "\n").encode())


class WriteStats(beam.PTransform):
    """{'stats', 'rejected'} -> OUTPUT_DIR/stats.json, checking that every listed file is accounted for."""

    def __init__(self, output_dir: str, thresholds: Thresholds, num_listed: int | None, source: dict):
        super().__init__()
        self.output_dir, self.thresholds, self.num_listed, self.source = output_dir, thresholds, num_listed, source

    def expand(self, outputs):
        counts = (
            outputs["rejected"]
            | "Reason" >> beam.Map(lambda r: r["reason"])
            | "CountReasons" >> beam.combiners.Count.PerElement()
        )
        return (
            outputs["stats"]
            | "StatsList" >> beam.combiners.ToList()
            | "WriteJson"
            >> beam.Map(
                _write_stats,
                rejected_counts=pvalue.AsList(counts),
                thresholds=self.thresholds,
                num_listed=self.num_listed,
                source=self.source,
                output_dir=self.output_dir,
            )
        )
