"""Validates a Kaggle-layout PCam folder: every file decoded, hashed, labelled and accounted for.

Locally (DirectRunner, one process per core):

    python -m beam_jobs.validate --data_dir=data/demo --output_dir=out/validate

On a cluster, any Beam runner; e.g. a Flink job server (see BUILD.md):

    python -m beam_jobs.validate --data_dir=gs://bucket/pcam --output_dir=gs://bucket/validate \\
        --runner=PortableRunner --job_endpoint=localhost:8099 --environment_type=DOCKER

Writes to OUTPUT_DIR:
    manifest.parquet  one row per file: id, source, label, path, pixel hash, valid, reason, channel mean/std
    rejected.csv      every rejected file and label row: kind, source, id, path, reason, detail
    duplicates.csv    every file whose pixels another file repeats, by group
    summary.json      counts: total = valid + rejected, by reason, labels, duplicate groups
    report.md         the same for a person
    inputs.json       the size and SHA-256 of train_labels.csv as validated

A `tfds build` of pcam_tfds/pcam given this folder (PCAM_VALIDATION_DIR) reuses it instead of
validating again, after checking that the files still match it (pcam_tfds/validated.py).

The job checks its own accounting: the files it listed must all come out as
valid or rejected, and every CSV row as matched or rejected; otherwise it
fails. With --strict the exit status is 1 when anything was rejected.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import io
import json
import logging
import os
import shutil
import sys

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import cli, pipeline_options
from beam_jobs.transforms import DEFAULT_BATCH_SIZE, ValidateKaggleLayout
from pcam_tfds.core import layout

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
    + [(f"{stat}_{c}", pa.float64()) for stat in ("mean", "std") for c in "rgb"]
)
REJECTED_HEADER = ["kind", "source", "id", "path", "reason", "detail"]
DUPLICATES_HEADER = "pixel_hash,kind,conflicting_labels,source,id,label"


class AccountingError(RuntimeError):
    """The job lost or invented records: its outputs must not be trusted."""


def manifest_row(f: dict) -> dict:
    row = {
        k: f[k]
        for k in ("id", "source", "label", "path", "pixel_hash", "valid", "reason", "detail", "size_bytes", "mtime_ns")
    }
    for stat in ("mean", "std"):
        values = f[stat] or (None, None, None)
        row.update({f"{stat}_{c}": v for c, v in zip("rgb", values)})
    return row


def csv_line(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def rejected_file_line(f: dict) -> str:
    return csv_line(["file", f["source"], f["id"], f["path"], f["reason"], f["detail"]])


def rejected_row_line(r: dict) -> str:
    return csv_line(["label_row", layout.LABELS_CSV, r["id"], r["raw"], r["reason"], ""])


def duplicate_lines(group: dict):
    for m in group["members"]:
        yield csv_line(
            [group["pixel_hash"], group["kind"], group["conflicting_labels"], m["source"], m["id"], m["label"]]
        )


def file_count_key(f: dict) -> tuple:
    return ("file", f["source"], f["valid"], f["reason"] or "", f["label"])


def build_summary(counts, num_rows: int, duplicate_kinds, num_listed: int) -> dict:
    """Turns the counted keys into summary.json, checking that every input is accounted for."""
    files = {"valid": 0, "rejected": 0, "by_source": {}, "rejected_by_reason": {}}
    labels = {}
    rows_rejected_by_reason = {}
    for key, n in counts:
        if key[0] == "row":
            rows_rejected_by_reason[key[1]] = rows_rejected_by_reason.get(key[1], 0) + n
            continue
        _, source, valid, reason, label = key
        src = files["by_source"].setdefault(source, {"total": 0, "valid": 0, "rejected": 0})
        src["total"] += n
        src["valid" if valid else "rejected"] += n
        files["valid" if valid else "rejected"] += n
        if valid and source == layout.TRAIN:
            labels[str(label)] = labels.get(str(label), 0) + n
        if not valid:
            files["rejected_by_reason"][reason] = files["rejected_by_reason"].get(reason, 0) + n
    total = files["valid"] + files["rejected"]
    if total != num_listed:
        raise AccountingError(f"{num_listed} files were listed but {total} came out of the pipeline (valid + rejected)")
    rows_rejected = sum(rows_rejected_by_reason.values())
    rows_matched = sum(
        n for key, n in counts if key[0] == "file" and key[1] == layout.TRAIN and key[4] != layout.NO_LABEL
    )
    if rows_matched + rows_rejected != num_rows:
        raise AccountingError(
            f"train_labels.csv has {num_rows} rows but {rows_matched} matched + {rows_rejected} rejected"
        )
    dup = {"within_train": 0, "within_test": 0, "across_train_test": 0, "conflicting_labels": 0, "files_in_groups": 0}
    for kind, conflicting, size in duplicate_kinds:
        dup[kind] += 1
        dup["conflicting_labels"] += int(conflicting)
        dup["files_in_groups"] += size
    return {
        "total": total,
        "valid": files["valid"],
        "rejected": files["rejected"],
        "rejected_by_reason": dict(sorted(files["rejected_by_reason"].items())),
        "by_source": dict(sorted(files["by_source"].items())),
        "train_labels": dict(sorted(labels.items())),
        "label_rows": {
            "total": num_rows,
            "matched": rows_matched,
            "rejected": rows_rejected,
            "rejected_by_reason": dict(sorted(rows_rejected_by_reason.items())),
        },
        "duplicate_groups": dup,
    }


def render_report(summary: dict, data_dir: str) -> str:
    """summary.json as Markdown."""
    s = summary
    lines = [
        f"# Validation of `{data_dir}`",
        "",
        f"**{s['total']:,} files: {s['valid']:,} valid, {s['rejected']:,} rejected.**",
        "",
        "| source | files | valid | rejected |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {k} | {v['total']:,} | {v['valid']:,} | {v['rejected']:,} |" for k, v in s["by_source"].items()]
    lines += ["", "## Valid train labels", "", "| label | files |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,} |" for k, v in s["train_labels"].items()]
    lines += ["", "## Rejected files by reason", ""]
    if s["rejected_by_reason"]:
        lines += ["| reason | files |", "| --- | ---: |"] + [
            f"| {k} | {v:,} |" for k, v in s["rejected_by_reason"].items()
        ]
    else:
        lines.append("None.")
    r = s["label_rows"]
    lines += [
        "",
        "## train_labels.csv",
        "",
        f"{r['total']:,} rows: {r['matched']:,} matched a file, {r['rejected']:,} rejected.",
        "",
    ]
    if r["rejected_by_reason"]:
        lines += ["| reason | rows |", "| --- | ---: |"] + [
            f"| {k} | {v:,} |" for k, v in r["rejected_by_reason"].items()
        ]
    d = s["duplicate_groups"]
    lines += [
        "",
        "## Exact-duplicate pixels",
        "",
        "| groups within train | within test | across train and test | with conflicting labels | files in groups |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {d['within_train']:,} | {d['within_test']:,} | {d['across_train_test']:,} "
        f"| {d['conflicting_labels']:,} | {d['files_in_groups']:,} |",
        "",
        "Rejected files and rows are listed in `rejected.csv`, duplicate groups in `duplicates.csv`, "
        "every file in `manifest.parquet`.",
        "",
    ]
    return "\n".join(lines)


def write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode())


def write_lines(path: str, lines: list[str]) -> None:
    write_text(path, "\n".join(lines) + "\n")


def inputs_fingerprint(data_dir: str) -> dict:
    """What the validation saw of train_labels.csv (inputs.json); the files' own sizes and mtimes are in the manifest."""
    import hashlib

    path = layout.join(data_dir, layout.LABELS_CSV)
    with FileSystems.open(path, compression_type="uncompressed") as f:
        data = f.read()
    return {"data_dir": data_dir, "labels_csv": {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}}


def write_summary_files(summary: dict, output_dir: str, data_dir: str) -> None:
    write_text(layout.join(output_dir, "inputs.json"), json.dumps(inputs_fingerprint(data_dir), indent=2) + "\n")
    write_text(layout.join(output_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    write_text(layout.join(output_dir, "report.md"), render_report(summary, data_dir))


def _write_summary(counts, num_rows, duplicate_kinds, num_listed, output_dir, data_dir):
    write_summary_files(build_summary(counts, num_rows, duplicate_kinds, num_listed), output_dir, data_dir)


def single_file(prefix: str, suffix: str) -> dict:
    """WriteTo* arguments that produce exactly PREFIX+SUFFIX, one file, no shard numbers."""
    return {"file_path_prefix": prefix, "file_name_suffix": suffix, "num_shards": 1, "shard_name_template": ""}


class WriteValidationOutputs(beam.PTransform):
    """The outputs of ValidateKaggleLayout -> the files in OUTPUT_DIR."""

    def __init__(self, output_dir: str, num_listed: int, data_dir: str):
        super().__init__()
        self.output_dir, self.num_listed, self.data_dir = output_dir, num_listed, data_dir

    def expand(self, outputs):
        files, rejected_rows, rows, dups = (outputs[k] for k in ("files", "rejected_rows", "rows", "duplicates"))
        out = self.output_dir
        _ = (
            files
            | "ToManifestRow" >> beam.Map(manifest_row)
            | "WriteManifest"
            >> beam.io.WriteToParquet(schema=MANIFEST_SCHEMA, **single_file(layout.join(out, "manifest"), ".parquet"))
        )
        rejected_files = (
            files | "Rejected" >> beam.Filter(lambda f: not f["valid"]) | "FileLine" >> beam.Map(rejected_file_line)
        )
        rejected_lines = rejected_rows | "RowLine" >> beam.Map(rejected_row_line)
        _ = (
            (rejected_files, rejected_lines)
            | "AllRejected" >> beam.Flatten()
            | "WriteRejected"
            >> beam.io.WriteToText(
                header=",".join(REJECTED_HEADER), **single_file(layout.join(out, "rejected"), ".csv")
            )
        )
        _ = (
            dups
            | "DuplicateLines" >> beam.FlatMap(duplicate_lines)
            | "WriteDuplicates"
            >> beam.io.WriteToText(header=DUPLICATES_HEADER, **single_file(layout.join(out, "duplicates"), ".csv"))
        )
        file_keys = files | "FileKey" >> beam.Map(file_count_key)
        row_keys = rejected_rows | "RowKey" >> beam.Map(lambda r: ("row", r["reason"]))
        counts = (file_keys, row_keys) | "AllKeys" >> beam.Flatten() | "Count" >> beam.combiners.Count.PerElement()
        num_rows = rows | "CountRows" >> beam.combiners.Count.Globally()
        dup_kinds = dups | "DupKind" >> beam.Map(lambda g: (g["kind"], g["conflicting_labels"], len(g["members"])))
        return (
            counts
            | "CountList" >> beam.combiners.ToList()
            | "WriteSummary"
            >> beam.Map(
                _write_summary,
                num_rows=beam.pvalue.AsSingleton(num_rows),
                duplicate_kinds=beam.pvalue.AsList(dup_kinds),
                num_listed=self.num_listed,
                output_dir=self.output_dir,
                data_dir=self.data_dir,
            )
        )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Kaggle-layout folder: train/, test/, train_labels.csv")
    parser.add_argument("--output_dir", required=True, help="where the manifest, summary and report go")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when any file or row was rejected")
    parser.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE, help="files read per Beam element")
    return parser.parse_known_args(argv)


@contextlib.contextmanager
def _owned_output_dir(output_dir: str):
    """A local output folder is locked for the run, and Beam's beam-temp-* folders are removed before (left by a
    run that was killed) and after (left by a run that failed). Remote folders are left to the runner."""
    if "://" in output_dir:
        yield
        return
    from pcam_tfds.folder_lock import FolderLock

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
    options = PipelineOptions(pipeline_options.with_local_defaults(beam_args), save_main_session=save_main_session)
    validate = ValidateKaggleLayout(args.data_dir, args.batch_size)
    logging.info("validating %d files under %s", validate.num_files, args.data_dir)
    with _owned_output_dir(args.output_dir):
        with beam.Pipeline(options=options) as p:
            outputs = p | "Validate" >> validate
            _ = outputs | "Write" >> WriteValidationOutputs(args.output_dir, validate.num_files, args.data_dir)
    with FileSystems.open(layout.join(args.output_dir, "summary.json")) as f:
        summary = json.load(f)
    # Checked again here: the step that wrote summary.json ran on a worker.
    if summary["total"] != validate.num_files or summary["valid"] + summary["rejected"] != summary["total"]:
        raise AccountingError(f"{validate.num_files} files listed, summary says {summary['total']}")
    print(
        f"{summary['total']} files: {summary['valid']} valid, {summary['rejected']} rejected "
        f"{summary['rejected_by_reason']}; label rows rejected: {summary['label_rows']['rejected']}; "
        f"report: {layout.join(args.output_dir, 'report.md')}"
    )
    if args.strict and (summary["rejected"] or summary["label_rows"]["rejected"]):
        print("--strict: rejected files or label rows, see rejected.csv", file=sys.stderr)
        sys.exit(1)
    return summary


def main():
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # the worker harness logs every bundle
    cli.main(run)


if __name__ == "__main__":
    main()
