"""Exact pixel statistics of a Kaggle-layout PCam folder, by label, for EDA and normalisation.

Locally (DirectRunner, one process per core):

    python -m beam_jobs.stats --manual_dir=data/demo --output_dir=out/stats

Reusing the labels and validity that `beam_jobs.validate` already decided (no label join):

    python -m beam_jobs.stats --manifest=out/validate/manifest.parquet --output_dir=out/stats

On a cluster, any Beam runner, as for `beam_jobs.validate` (see BUILD.md):

    python -m beam_jobs.stats --manual_dir=gs://bucket/pcam --output_dir=gs://bucket/stats \\
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

The accumulator, stats.json and `load_channel_stats(path)` (the train mean and std a trainer
normalises with) are in `pcam_tfds.core.channel_stats`; the transforms in `beam_jobs.channel_stats`.
"""

from __future__ import annotations

import argparse
import logging

from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly, before the imports below

# isort: split
import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs import cli, pipeline_options
from beam_jobs.channel_stats import ComputeChannelStats, ReadManifestFiles, SelectLabelledFiles, WriteStats
from pcam_tfds.core import channel_stats, counters, layout, records
from pcam_tfds.core.channel_stats import Thresholds
from pcam_tfds.core.progress import Progress

logger = logging.getLogger(__name__)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--manual_dir", help="Kaggle-layout folder: train/, test/, train_labels.csv")
    where.add_argument("--manifest", help="manifest.parquet of beam_jobs.validate: reuse its labels and validity")
    parser.add_argument("--output_dir", required=True, help="where stats.json goes")
    parser.add_argument("--batch_size", type=int, default=records.BATCH_SIZE, help="files read per Beam element")
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
    cli.add_log_level(parser)
    cli.refuse_data_dir(parser, "pcam-stats")
    args, beam_args = parser.parse_known_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size ({args.batch_size}) must be at least 1")
    return args, beam_args


def run(argv=None, save_main_session=True) -> dict:
    """Runs the job; returns stats.json as a dict. Beam options not known here go to PipelineOptions."""
    args, beam_args = parse_args(argv)
    thresholds = Thresholds(args.white_level, args.background_share, args.dark_mean, args.blank_std)
    options = PipelineOptions(
        pipeline_options.with_local_defaults(beam_args, args.log_level), save_main_session=save_main_session
    )
    tally = cli.new_tally(options.view_as(StandardOptions).runner)
    if args.manifest:
        select, num_listed = ReadManifestFiles(args.manifest, tally), None
        source = {"manifest": args.manifest}
    else:
        select = SelectLabelledFiles(args.manual_dir, args.batch_size, tally)
        num_listed = select.num_files
        source = {"manual_dir": args.manual_dir}
    logger.info("computing statistics of %d files in %s", select.num_files, args.manifest or args.manual_dir)
    p = beam.Pipeline(options=options)
    files = p | "SelectFiles" >> select
    computed = files["valid"] | "ComputeChannelStats" >> ComputeChannelStats(thresholds, args.batch_size, tally)
    all_rejected = (files["rejected"], computed["rejected"]) | "AllRejected" >> beam.Flatten()
    _ = {"stats": computed["stats"], "rejected": all_rejected} | "WriteStats" >> WriteStats(
        args.output_dir, thresholds, num_listed, source
    )
    result = cli.run_pipeline(p, Progress("stats", select.num_files), tally)
    logger.info("counters: %s", counter_totals(result))
    stats = channel_stats.load_stats(layout.join(args.output_dir, channel_stats.STATS_JSON))
    f, train = stats["files"], stats["groups"]["train"]
    print(
        f"{f['total']} files: {f['valid']} valid, {f['rejected']} rejected {f['rejected_by_reason']}; "
        f"labels {stats['label_counts']}, test {stats['test_files']}; "
        f"train mean {_fmt(train['mean'])} std {_fmt(train['std'])}; "
        f"stats: {layout.join(args.output_dir, channel_stats.STATS_JSON)}"
    )
    return stats


def counter_totals(result) -> dict[str, int]:
    """The job's counters ({name: total over steps}); empty where the runner reports no metrics."""
    try:
        queried = result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE))["counters"]
    except (NotImplementedError, AttributeError):
        return {}
    totals: dict[str, int] = {}
    for c in queried:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + (value or 0)
    return dict(sorted(totals.items()))


def _fmt(values) -> str:
    return "n/a" if values is None else "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def main():
    cli.main(run)


if __name__ == "__main__":
    main()
