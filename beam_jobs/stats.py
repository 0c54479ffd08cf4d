"""Exact pixel statistics of a Kaggle-layout PCam folder, by label, for EDA and normalisation.

Locally (DirectRunner, one process per core):

    python -m beam_jobs.stats --data_dir=data/demo --output_dir=out/stats

Reusing the labels and validity that `beam_jobs.validate` already decided (no label join):

    python -m beam_jobs.stats --manifest=out/validate/manifest.parquet --output_dir=out/stats

On a cluster, any Beam runner, as for `beam_jobs.validate` (see BUILD.md):

    python -m beam_jobs.stats --data_dir=gs://bucket/pcam --output_dir=gs://bucket/stats \\
        --runner=PortableRunner --job_endpoint=localhost:8099 --environment_type=DOCKER

Writes OUTPUT_DIR/stats.json. Patches fall into three groups: `negative`
(label 0), `positive` (label 1) and `test` (no label, -1); `train` is
negative + positive and `all` is train + test. For each group:

    patches, pixels                 valid files counted, and pixels per channel
    mean, std                       per channel (r, g, b), population std, on the 0..255 scale
    sum, sum_sq                     the exact running sums of x and x^2 per channel they come from
    histogram                       256 bins per channel: how many pixels have each value
    near_white_pixel_share          share of pixels whose three channels are all > WHITE_LEVEL
    background / dark / blank / dark_or_blank
                                    patches flagged as below, and their share of the group

A patch is
    background  if more than BACKGROUND_SHARE of its pixels are near-white
                (all channels > WHITE_LEVEL): mostly glass, no tissue;
    dark        if the mean of all its values (every pixel, every channel) is < DARK_MEAN;
    blank       if the standard deviation of all its values is < BLANK_STD: a flat
                image, e.g. all black or all white, whatever its brightness.
The thresholds (defaults 220, 0.5, 40, 10) are flags and go into stats.json.

Exactness: the combiner adds 256-bin histograms as int64 (at most 2**63 pixels
per bin); sum and sum_sq are the histogram's first two moments computed in
Python ints, so mean and std are exact up to the final float rounding, over
every valid pixel, not a sample. Per-file work is vectorised over batches of
files (one `np.bincount` per channel per batch); the `PatchStatsFn` combiner
runs before the shuffle (combiner lifting), so only one accumulator of a few
KB per group and bundle moves between workers, never per-file results.

Only valid files count. Without --manifest the job lists the folder and joins
train_labels.csv with the same rules as `beam_jobs.validate`
(`beam_jobs.transforms.JoinLabels`), then decodes; a file that both lacks a
label and does not decode is counted under the join's reason (validate names
the decoding one), so the per-reason counts may differ, the totals do not.
With --manifest, rejected rows keep their manifest reason, and a file that no
longer decodes is rejected again with its reason.

`load_channel_stats(path)` gives a trainer the train mean and std.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import math
from fractions import Fraction

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import cli, pipeline_options
from beam_jobs.transforms import DEFAULT_BATCH_SIZE, NAMESPACE, JoinLabels, ReadLabelRows, file_record
from pcam_tfds.core import layout, patches

STATS_JSON = "stats.json"
CHANNELS = ("r", "g", "b")
NUM_BINS = 256
NEGATIVE, POSITIVE, TEST = "negative", "positive", "test"
LABEL_GROUPS = (NEGATIVE, POSITIVE, TEST)  # the groups the combiner sees
MERGED_GROUPS = {"train": (NEGATIVE, POSITIVE), "all": (NEGATIVE, POSITIVE, TEST)}  # derived at the end
GROUP_LABEL = {NEGATIVE: 0, POSITIVE: 1, TEST: layout.NO_LABEL}
FLAGS = ("background", "dark", "blank", "dark_or_blank")

logger = logging.getLogger(__name__)


class StatsError(RuntimeError):
    """The job lost or invented files, or its output is not what `load_channel_stats` expects."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a patch counts as background, dark or blank (see the module docstring)."""

    white_level: int = 220
    background_share: float = 0.5
    dark_mean: float = 40.0
    blank_std: float = 10.0

    def __post_init__(self):
        if not 0 <= self.white_level < 255:
            raise ValueError(f"white_level ({self.white_level}) must be in 0..254: pixels above it are near-white")
        if not 0 <= self.background_share < 1:
            raise ValueError(f"background_share ({self.background_share}) must be in [0, 1)")
        if not 0 <= self.dark_mean <= 255 or self.blank_std < 0:
            raise ValueError(f"dark_mean ({self.dark_mean}) must be in 0..255 and blank_std ({self.blank_std}) >= 0")

    def describe(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "near_white_pixel": f"all three channels > {self.white_level}",
            "background": f"more than {self.background_share:.0%} of the pixels are near-white",
            "dark": f"mean of all values (every pixel and channel) < {self.dark_mean}",
            "blank": f"standard deviation of all values < {self.blank_std}",
            "dark_or_blank": "dark or blank",
        }


def group_of(source: str, label: int) -> str:
    """The statistics group of a valid file."""
    if source == layout.TEST:
        return TEST
    if label == 0:
        return NEGATIVE
    if label == 1:
        return POSITIVE
    raise ValueError(f"a valid {source} file has label {label!r}; expected 0 or 1")


@dataclasses.dataclass(eq=False)  # no elementwise == on the histogram; compare summary() instead
class PatchStats:
    """Exact running sums over a set of patches: the combiner's accumulator."""

    patches: int = 0
    histogram: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((len(CHANNELS), NUM_BINS), np.int64))
    near_white_pixels: int = 0
    flags: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(FLAGS, 0))

    def add(self, pixels: np.ndarray, thresholds: Thresholds) -> PatchStats:
        """Adds one patch (H, W, 3) or a stack of patches (N, H, W, 3) of uint8, vectorised over the stack."""
        if pixels.ndim not in (3, 4) or pixels.shape[-1] != len(CHANNELS) or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 patches of shape (N, H, W, 3), got {pixels.dtype} {pixels.shape}")
        if pixels.ndim == 3:
            pixels = pixels[np.newaxis]
        n = pixels.shape[0]
        if n == 0:
            return self
        for c in range(len(CHANNELS)):
            self.histogram[c] += np.bincount(pixels[..., c].ravel(), minlength=NUM_BINS)
        # Three elementwise minimums: much faster than .all(axis=-1) over an axis of length 3.
        darkest = np.minimum(np.minimum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])
        white = (darkest > thresholds.white_level).reshape(n, -1)
        white_per_patch = white.sum(axis=1)
        self.near_white_pixels += int(white_per_patch.sum())
        flat = pixels.reshape(n, -1)
        # Exact per-patch sums in int64 (a 96x96x3 patch sums to at most 27648 * 255**2).
        s1 = flat.sum(axis=1, dtype=np.int64)
        s2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64, casting="unsafe")
        values = flat.shape[1]
        mean = s1 / values
        std = np.sqrt(np.maximum(s2 / values - mean * mean, 0.0))
        background = white_per_patch > thresholds.background_share * white.shape[1]
        dark, blank = mean < thresholds.dark_mean, std < thresholds.blank_std
        for name, hit in (
            ("background", background),
            ("dark", dark),
            ("blank", blank),
            ("dark_or_blank", dark | blank),
        ):
            self.flags[name] += int(hit.sum())
        self.patches += n
        return self

    def merge(self, other: PatchStats) -> PatchStats:
        self.patches += other.patches
        self.histogram += other.histogram
        self.near_white_pixels += other.near_white_pixels
        for k in FLAGS:
            self.flags[k] += other.flags[k]
        return self

    def summary(self) -> dict:
        """The JSON form: counts, exact sums, mean and std per channel, histograms, flag shares."""
        pixels = int(self.histogram[0].sum())
        sums = [sum(int(c) * v for v, c in enumerate(h)) for h in self.histogram]
        sums_sq = [sum(int(c) * v * v for v, c in enumerate(h)) for h in self.histogram]
        if pixels:
            mean = [float(Fraction(s, pixels)) for s in sums]
            std = [math.sqrt(Fraction(pixels * q - s * s, pixels * pixels)) for s, q in zip(sums, sums_sq)]
        else:
            mean = std = None
        out = {
            "patches": self.patches,
            "pixels": pixels,
            "channels": list(CHANNELS),
            "mean": mean,
            "std": std,
            "sum": sums,
            "sum_sq": sums_sq,
            "near_white_pixel_share": self.near_white_pixels / pixels if pixels else None,
        }
        for k in FLAGS:
            out[f"{k}_patches"] = self.flags[k]
            out[f"{k}_share"] = self.flags[k] / self.patches if self.patches else None
        out["histogram"] = self.histogram.tolist()
        return out


class PatchStatsFn(beam.CombineFn):
    """Combines uint8 patches, one (H, W, 3) or a stack (N, H, W, 3) per input, into a PatchStats."""

    def __init__(self, thresholds: Thresholds = Thresholds()):
        super().__init__()
        self.thresholds = thresholds
        self.patches_added = Metrics.counter(NAMESPACE, "patches_summarised")

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


def rejected(rec: dict, reason: str, detail: str = "") -> dict:
    return {"source": rec["source"], "id": rec["id"], "path": rec["path"], "reason": reason, "detail": detail}


class _ReadPatchBatch(beam.DoFn):
    """A batch of valid file records -> (group, stack of their pixels) per group, rejected files tagged."""

    def __init__(self):
        self.read = Metrics.counter(NAMESPACE, "files_read")
        self.rejected = Metrics.counter(NAMESPACE, "files_rejected_on_read")

    def process(self, batch):
        by_group = {}
        for rec in batch:
            pixels, reason, detail = patches.try_read_patch(rec["path"])
            self.read.inc()
            if pixels is None:
                self.rejected.inc()
                yield pvalue.TaggedOutput("rejected", rejected(rec, reason, detail))
            else:
                try:
                    group = group_of(rec["source"], rec["label"])
                except ValueError as e:
                    raise ValueError(f"{rec['path']}: {e}") from None
                by_group.setdefault(group, []).append(pixels)
        for group, arrays in by_group.items():
            yield group, np.stack(arrays)


class ComputeChannelStats(beam.PTransform):
    """Valid file records (id, source, label, path) -> {'stats': (group, PatchStats), 'rejected': records}."""

    def __init__(self, thresholds: Thresholds = Thresholds(), batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        self.thresholds, self.batch_size = thresholds, batch_size

    def expand(self, records):
        read = (
            records
            # Beam's per-element cost is larger than decoding one 28 KB patch: read and count in batches.
            | "Batch" >> beam.BatchElements(min_batch_size=self.batch_size, max_batch_size=self.batch_size)
            | "ReadPixels"
            >> beam.ParDo(_ReadPatchBatch())
            # Inference sees TaggedOutput among the yields; the main output is (group, pixels).
            .with_output_types(tuple[str, np.ndarray])
            .with_outputs("rejected", main="pixels")
        )
        stats = read.pixels | "Combine" >> beam.CombinePerKey(PatchStatsFn(self.thresholds))
        return {"stats": stats, "rejected": read.rejected}


class _SplitByValidity(beam.DoFn):
    """Joined or manifest file records -> valid ones, and tagged 'rejected' ones."""

    def __init__(self):
        self.rejected = Metrics.counter(NAMESPACE, "files_rejected_before_read")

    def process(self, rec):
        if rec["valid"]:
            yield {k: rec[k] for k in ("id", "source", "label", "path")}
        else:
            self.rejected.inc()
            yield pvalue.TaggedOutput("rejected", rejected(rec, rec["reason"], rec.get("detail") or ""))


class SelectLabelledFiles(beam.PTransform):
    """PBegin -> {'valid', 'rejected'} file records of a Kaggle folder, labelled by train_labels.csv.

    The folder is listed when the pipeline is built (`num_files`); the files
    are not read here, only joined with their label rows.
    """

    def __init__(self, data_dir: str, batch_size: int = DEFAULT_BATCH_SIZE):
        super().__init__()
        paths = {source: layout.list_files(data_dir, source) for source in layout.SOURCES}
        self.num_files = sum(len(p) for p in paths.values())
        self.batches = [
            (s, p[i : i + batch_size]) for s, p in sorted(paths.items()) for i in range(0, len(p), batch_size)
        ]
        self.csv_path = layout.join(data_dir, layout.LABELS_CSV)
        layout.check_labels_header(self.csv_path)

    def expand(self, pbegin):
        files = (
            pbegin
            # Batches of paths keep the pipeline small; records are made on the workers.
            | "CreatePathBatches" >> beam.Create(self.batches, reshuffle=False)
            | "ToRecords" >> beam.FlatMapTuple(lambda source, paths: (file_record(p, source) for p in paths))
        )
        rows = pbegin | "ReadLabelRows" >> ReadLabelRows(self.csv_path)
        joined = (files, rows) | "JoinLabels" >> JoinLabels()
        split = joined.files | "SplitByValidity" >> beam.ParDo(_SplitByValidity()).with_outputs(
            "rejected", main="valid"
        )
        return {"valid": split.valid, "rejected": split.rejected}


MANIFEST_COLUMNS = ["id", "source", "label", "path", "valid", "reason", "detail"]


class ReadManifestFiles(beam.PTransform):
    """PBegin -> {'valid', 'rejected'} file records from a `beam_jobs.validate` manifest.parquet."""

    def __init__(self, manifest: str):
        super().__init__()
        if not FileSystems.exists(manifest):
            raise FileNotFoundError(f"{manifest}: no such file; expected the manifest.parquet of beam_jobs.validate")
        self.manifest = manifest

    def expand(self, pbegin):
        rows = pbegin | "ReadManifest" >> beam.io.ReadFromParquet(self.manifest, columns=MANIFEST_COLUMNS)
        # The manifest holds one file per row in arbitrary bundles: spread them before the expensive read.
        split = (
            rows
            | "Spread" >> beam.Reshuffle()
            | "SplitByValidity" >> beam.ParDo(_SplitByValidity()).with_outputs("rejected", main="valid")
        )
        return {"valid": split.valid, "rejected": split.rejected}


def build_stats(group_stats, rejected_counts, thresholds: Thresholds, num_listed: int | None, source: dict) -> dict:
    """The stats.json document from the combined (group, PatchStats) and the rejected counts by reason."""
    by_group = {g: PatchStats() for g in LABEL_GROUPS}
    for group, acc in group_stats:
        if group not in by_group:
            raise StatsError(f"unknown group {group!r}; expected one of {LABEL_GROUPS}")
        by_group[group].merge(acc)
    for merged, parts in MERGED_GROUPS.items():
        by_group[merged] = PatchStats()
        for part in parts:
            by_group[merged].merge(by_group[part])
    rejected_by_reason = dict(sorted(rejected_counts))
    valid = by_group["all"].patches
    total = valid + sum(rejected_by_reason.values())
    if num_listed is not None and total != num_listed:
        raise StatsError(f"{num_listed} files were listed but {total} came out of the pipeline (valid + rejected)")
    groups = {g: {"label": GROUP_LABEL.get(g), **acc.summary()} for g, acc in by_group.items()}
    return {
        **source,
        "thresholds": thresholds.describe(),
        "files": {"total": total, "valid": valid, "rejected": total - valid, "rejected_by_reason": rejected_by_reason},
        "label_counts": {"0": by_group[NEGATIVE].patches, "1": by_group[POSITIVE].patches},
        "test_files": by_group[TEST].patches,
        "groups": groups,
    }


def _write_stats(group_stats, rejected_counts, thresholds, num_listed, source, output_dir):
    stats = build_stats(group_stats, rejected_counts, thresholds, num_listed, source)
    with FileSystems.create(layout.join(output_dir, STATS_JSON)) as f:
        f.write((json.dumps(stats, indent=1) + "\n").encode())


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


def load_stats(path: str) -> dict:
    """stats.json as a dict; PATH is the file or the folder that holds it."""
    if not path.endswith(".json"):
        path = layout.join(path, STATS_JSON)
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise StatsError(f"{path}: not JSON ({e}); expected the stats.json of beam_jobs.stats") from None


def load_channel_stats(
    path: str, group: str = "train", scale: float = 1.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean[3], std[3]) per channel (r, g, b) of GROUP from stats.json, times SCALE.

    Values are on the 0..255 pixel scale; pass scale=1/255 for images scaled to [0, 1].
    Use them as `(x - mean) / std`.
    """
    stats = load_stats(path)
    groups = stats.get("groups", {})
    if group not in groups:
        raise StatsError(f"{path}: no group {group!r} in stats.json; it has {sorted(groups)}")
    g = groups[group]
    if not g["patches"]:
        raise StatsError(f"{path}: group {group!r} has no valid patches, so no channel statistics")
    if any(s == 0 for s in g["std"]):
        raise StatsError(f"{path}: group {group!r} has a channel with std 0 {g['std']}; it cannot normalise")
    return tuple(m * scale for m in g["mean"]), tuple(s * scale for s in g["std"])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data_dir", help="Kaggle-layout folder: train/, test/, train_labels.csv")
    where.add_argument("--manifest", help="manifest.parquet of beam_jobs.validate: reuse its labels and validity")
    parser.add_argument("--output_dir", required=True, help="where stats.json goes")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE, help="files read per Beam element")
    defaults = Thresholds()
    parser.add_argument(
        "--white_level", type=int, default=defaults.white_level, help="near-white: all channels above this"
    )
    parser.add_argument(
        "--background_share",
        type=float,
        default=defaults.background_share,
        help="background: more near-white pixels than this share",
    )
    parser.add_argument("--dark_mean", type=float, default=defaults.dark_mean, help="dark: patch mean below this")
    parser.add_argument("--blank_std", type=float, default=defaults.blank_std, help="blank: patch std below this")
    args, beam_args = parser.parse_known_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size ({args.batch_size}) must be at least 1")
    return args, beam_args


def run(argv=None, save_main_session=True) -> dict:
    """Runs the job; returns stats.json as a dict. Beam options not known here go to PipelineOptions."""
    args, beam_args = parse_args(argv)
    thresholds = Thresholds(args.white_level, args.background_share, args.dark_mean, args.blank_std)
    options = PipelineOptions(pipeline_options.with_local_defaults(beam_args), save_main_session=save_main_session)
    if args.manifest:
        select, num_listed = ReadManifestFiles(args.manifest), None
        source = {"manifest": args.manifest}
    else:
        select = SelectLabelledFiles(args.data_dir, args.batch_size)
        num_listed = select.num_files
        source = {"data_dir": args.data_dir}
        logger.info("computing statistics of %d files under %s", num_listed, args.data_dir)
    p = beam.Pipeline(options=options)
    files = p | "SelectFiles" >> select
    computed = files["valid"] | "ComputeChannelStats" >> ComputeChannelStats(thresholds, args.batch_size)
    all_rejected = (files["rejected"], computed["rejected"]) | "AllRejected" >> beam.Flatten()
    _ = {"stats": computed["stats"], "rejected": all_rejected} | "WriteStats" >> WriteStats(
        args.output_dir, thresholds, num_listed, source
    )
    result = p.run()
    result.wait_until_finish()
    logger.info("counters: %s", counter_totals(result))
    stats = load_stats(layout.join(args.output_dir, STATS_JSON))
    f, train = stats["files"], stats["groups"]["train"]
    print(
        f"{f['total']} files: {f['valid']} valid, {f['rejected']} rejected {f['rejected_by_reason']}; "
        f"labels {stats['label_counts']}, test {stats['test_files']}; "
        f"train mean {_fmt(train['mean'])} std {_fmt(train['std'])}; "
        f"stats: {layout.join(args.output_dir, STATS_JSON)}"
    )
    return stats


def counter_totals(result) -> dict[str, int]:
    """The job's counters ({name: total over steps}); empty where the runner reports no metrics."""
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except (NotImplementedError, AttributeError):
        return {}
    totals: dict[str, int] = {}
    for c in counters:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + (value or 0)
    return dict(sorted(totals.items()))


def _fmt(values) -> str:
    return "n/a" if values is None else "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def main():
    # force: importing Beam may already have given the root logger a handler (and level WARNING).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # the worker harness logs every bundle
    cli.main(run)


if __name__ == "__main__":
    # Run the imported module, not __main__: the accumulators (PatchStats) travel between worker
    # processes by pickle, which finds classes by module name, and workers have no such __main__.
    importlib.import_module("beam_jobs.stats").main()
