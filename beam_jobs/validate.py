"""Validates a Kaggle-layout PCam folder: every file decoded, hashed, labelled and accounted for.

On this machine (no Beam option: the local executor of pcam_tfds.core.local_validation, one process per core):

    python -m beam_jobs.validate --manual_dir=data/demo --output_dir=out/validate

On Beam's DirectRunner here (any Beam option selects Beam, e.g. `--direct_running_mode=in_memory`):

    python -m beam_jobs.validate --manual_dir=data/demo --output_dir=out/validate --runner=DirectRunner

On a cluster, any Beam runner; e.g. a Flink job server (see BUILD.md):

    python -m beam_jobs.validate --manual_dir=gs://bucket/pcam --output_dir=gs://bucket/validate \\
        --runner=PortableRunner --job_endpoint=localhost:8099 --environment_type=DOCKER

Writes to OUTPUT_DIR:
    manifest.parquet  one row per file: id, source, label, path, pixel hash, valid, reason, channel mean/std
    rejected.csv      every rejected file and label row: kind, source, id, path, reason, detail
    duplicates.csv    every file whose pixels another file repeats, by group
    summary.json      counts: total = valid + rejected, by reason, labels, duplicate groups
    report.md         the same for a person
    inputs.json       the size and SHA-256 of train_labels.csv as validated

A `tfds build` of pcam_tfds/pcam given this folder (PCAM_VALIDATION_DIR) reuses it instead of
validating again, after checking that the files still match it (pcam_tfds/core/validated.py).

The job checks its own accounting: the files it listed must all come out as
valid or rejected, and every CSV row as matched or rejected; otherwise it
fails. With --strict the exit status is 1 when anything was rejected.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import shutil
import sys

from beam_jobs import cli, pipeline_options
from pcam_tfds.core import fileio, layout, outputs, records
from pcam_tfds.core.progress import Progress
from pcam_tfds.core.summary import AccountingError


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manual_dir", required=True, help="Kaggle-layout folder: train/, test/, train_labels.csv")
    parser.add_argument("--output_dir", required=True, help="where the manifest, summary and report go")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any file or row was rejected")
    parser.add_argument("--batch_size", type=int, default=records.BATCH_SIZE, help="files read per Beam element")
    cli.add_log_level(parser)
    cli.refuse_data_dir(parser, "pcam-validate")
    return parser.parse_known_args(argv)


@contextlib.contextmanager
def _owned_output_dir(output_dir: str):
    """A local output folder is locked for the run, and Beam's beam-temp-* folders are removed before (left by a
    run that was killed) and after (left by a run that failed). Remote folders are left to the runner."""
    if "://" in output_dir:
        yield
        return
    from pcam_tfds.core.folder_lock import FolderLock

    def clean():
        for stale in glob.glob(os.path.join(output_dir, "beam-temp-*")):
            shutil.rmtree(stale, ignore_errors=True)

    with FolderLock(output_dir, "python -m beam_jobs.validate"):
        clean()
        try:
            yield
        finally:
            clean()


def run(argv=None, save_main_session=True) -> dict:
    """Runs the job; returns the summary. Beam options not known here go to PipelineOptions."""
    args, beam_args = parse_args(argv)
    if not beam_args and "://" not in args.output_dir:
        summary = _run_local(args)
    else:
        summary = _run_beam(args, beam_args, save_main_session)
    # Checked again here: on Beam the step that wrote summary.json ran on a worker.
    if summary["valid"] + summary["rejected"] != summary["total"]:
        raise AccountingError(f"summary.json: {summary['valid']} valid + {summary['rejected']} rejected != total")
    print(
        f"{summary['total']} files: {summary['valid']} valid, {summary['rejected']} rejected "
        f"{summary['rejected_by_reason']}; label rows rejected: {summary['label_rows']['rejected']}; "
        f"report: {layout.join(args.output_dir, outputs.REPORT)}"
    )
    if args.strict and (summary["rejected"] or summary["label_rows"]["rejected"]):
        print("--strict: rejected files or label rows, see rejected.csv", file=sys.stderr)
        sys.exit(1)
    return summary


def _run_local(args) -> dict:
    """No Beam option and a local output folder: the local executor (pcam_tfds.core.local_validation), one worker process
    per core, reading each file once; the same outputs as on Beam (tests/test_executors.py), without the
    DirectRunner's per-element overhead."""
    from pcam_tfds.core import local_validation

    with _owned_output_dir(args.output_dir):
        logging.info("validating the files under %s on this machine", args.manual_dir)
        progress = Progress("validate", None)
        check = local_validation.LocalValidation(args.manual_dir)
        progress.finish(check.num_listed)  # the closing line the Beam path prints too
        return check.write_outputs(args.output_dir)


def _run_beam(args, beam_args, save_main_session) -> dict:
    # Beam only here: the local path above never loads it (tests/test_no_beam.py).
    from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly, before the imports below

    # isort: split
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from beam_jobs.transforms import ValidateKaggleLayout, WriteValidationOutputs

    options = PipelineOptions(
        pipeline_options.with_local_defaults(beam_args, args.log_level), save_main_session=save_main_session
    )
    tally = cli.new_tally(options.view_as(StandardOptions).runner)
    validate = ValidateKaggleLayout(args.manual_dir, args.batch_size, tally)
    logging.info("validating %d files under %s", validate.num_files, args.manual_dir)
    with _owned_output_dir(args.output_dir):
        p = beam.Pipeline(options=options)
        validated = p | "Validate" >> validate
        _ = validated | "Write" >> WriteValidationOutputs(args.output_dir, validate.num_files, args.manual_dir)
        cli.run_pipeline(p, Progress("validate", validate.num_files), tally)
    with fileio.open_read(layout.join(args.output_dir, outputs.SUMMARY)) as f:
        summary = json.load(f)
    if summary["total"] != validate.num_files:
        raise AccountingError(f"{validate.num_files} files listed, summary says {summary['total']}")
    return summary


def main():
    cli.main(run)


if __name__ == "__main__":
    main()
