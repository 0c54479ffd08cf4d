"""Exploratory data analysis of a Kaggle-layout PCam folder as one HTML report a person opens in a browser.

Runs `beam_jobs.validate` and then `beam_jobs.stats` on its manifest (DirectRunner by
default; Beam options are passed to both), then draws the report:

    python -m beam_jobs.eda --data_dir=data/demo --output_dir=out/eda

or reuses outputs that exist already (no pipeline runs):

    python -m beam_jobs.eda --validation_dir=out/validate --stats=out/stats/stats.json --output_dir=out/eda

Writes to OUTPUT_DIR (one folder, movable as a whole):
    report.html         self-contained: figures inline as base64 PNG, no script, no external resource
    sample_patches.png  NUM_EXAMPLES negative and positive patches, centre 32x32 outlined
    channels.png        one patch and its red, green and blue channels
    histograms.png      exact 256-bin RGB histograms by label
    labels.png          the label distribution
    flags.png           shares of background, dark and blank patches by label
    validate/, stats/   the job outputs, when this command ran the jobs

Sample patches are drawn with `--seed` from the valid rows of the manifest, so
the same inputs give the same report. Check that the page renders with
`python -m beam_jobs.report.browser OUTPUT_DIR/report.html` (needs Chromium).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import logging

import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_jobs import cli, stats, validate
from beam_jobs.report import figures, page
from pcam_tfds.core import channel_stats, layout, outputs, patches

REPORT = "report.html"
TABLE_ROWS = 20  # rows of rejected.csv and duplicates.csv shown in the page

logger = logging.getLogger(__name__)


class ReportError(RuntimeError):
    """An input of the report is missing or not what the jobs write."""


def read_text(path: str) -> str:
    if not FileSystems.exists(path):
        raise ReportError(f"{path}: no such file")
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read().decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path) as f:
        f.write(data)


def read_csv_head(path: str, limit: int) -> tuple[list[dict], int]:
    """(the first LIMIT rows as dicts, the number of rows) of a CSV with a header."""
    rows = list(csv.DictReader(io.StringIO(read_text(path))))
    return rows[:limit], len(rows)


def read_manifest(path: str):
    """The id, source, label, path and valid columns of a validate manifest, as a pyarrow Table."""
    if not FileSystems.exists(path):
        raise ReportError(f"{path}: no such file; expected the manifest.parquet of beam_jobs.validate")
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return pq.read_table(io.BytesIO(f.read()), columns=["id", "source", "label", "path", "valid"])


def pick_examples(manifest, per_label: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """{group: [(id, path)]}: PER_LABEL valid train files of each label, drawn with SEED from the sorted ids."""
    rng = np.random.default_rng(seed)
    m = manifest.to_pydict()
    out = {}
    for group, label in ((channel_stats.NEGATIVE, 0), (channel_stats.POSITIVE, 1)):
        rows = sorted(
            (i, p)
            for i, s, lab, p, v in zip(m["id"], m["source"], m["label"], m["path"], m["valid"])
            if v and s == layout.TRAIN and lab == label
        )
        chosen = sorted(rng.choice(len(rows), size=min(per_label, len(rows)), replace=False)) if rows else []
        out[group] = [rows[k] for k in chosen]
    return out


def load_examples(picked: dict[str, list[tuple[str, str]]]) -> dict[str, list[tuple[str, np.ndarray]]]:
    loaded = {}
    for group, rows in picked.items():
        loaded[group] = []
        for id_, path in rows:
            try:
                loaded[group].append((id_, patches.read_patch(path)))
            except (OSError, patches.PatchError) as e:
                # The manifest said valid: the folder changed since validation.
                raise ReportError(f"{path}: sample patch no longer readable ({e}); rerun beam_jobs.validate") from None
    return loaded


def build_figures(examples: dict, stats_doc: dict) -> dict[str, tuple[bytes, str]]:
    """{name: (PNG bytes, caption)} of every figure of the report."""
    out = {}
    n = sum(len(v) for v in examples.values())
    if n:
        fig = figures.sample_grid(examples)
        out["sample_patches"] = (
            figures.png_bytes(fig),
            "Random valid patches of each label; the cyan square is the centre 32x32",
        )
        group = channel_stats.POSITIVE if examples.get(channel_stats.POSITIVE) else channel_stats.NEGATIVE
        id_, pixels = examples[group][0]
        fig = figures.channel_split(id_, channel_stats.GROUP_LABEL[group], pixels)
        out["channels"] = (figures.png_bytes(fig), f"Patch {id_} and its red, green and blue channels")
    out["labels"] = (figures.png_bytes(figures.label_distribution(stats_doc)), "Valid patches per label")
    out["histograms"] = (
        figures.png_bytes(figures.rgb_histograms(stats_doc)),
        "Share of pixels at each intensity, per channel and label, over every valid patch",
    )
    out["flags"] = (
        figures.png_bytes(figures.patch_flags(stats_doc)),
        "Share of background, dark and blank patches per label",
    )
    return out


def write_report(
    output_dir: str, validation_dir: str, stats_path: str, per_label: int = 8, seed: int = 0, title: str | None = None
) -> str:
    """Draws the figures and writes report.html and the PNGs into OUTPUT_DIR; returns the report's path."""
    summary = json.loads(read_text(layout.join(validation_dir, outputs.SUMMARY)))
    stats_doc = channel_stats.load_stats(stats_path)
    manifest = read_manifest(layout.join(validation_dir, outputs.MANIFEST))
    examples = load_examples(pick_examples(manifest, per_label, seed))
    rendered = build_figures(examples, stats_doc)
    for name, (png, _) in rendered.items():
        write_bytes(layout.join(output_dir, f"{name}.png"), png)
    html = page.render(
        title=title or f"PCam exploratory data analysis: {stats_doc.get('data_dir') or validation_dir}",
        stats=stats_doc,
        summary=summary,
        rejected=read_csv_head(layout.join(validation_dir, outputs.REJECTED), TABLE_ROWS),
        duplicates=read_csv_head(layout.join(validation_dir, outputs.DUPLICATES), TABLE_ROWS),
        figures=rendered,
        sources=[("validation (beam_jobs.validate)", validation_dir), ("statistics (beam_jobs.stats)", stats_path)],
        generated=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    path = layout.join(output_dir, REPORT)
    write_bytes(path, html.encode("utf-8"))
    return path


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", help="Kaggle-layout folder; the jobs run on it unless their outputs are given")
    parser.add_argument("--output_dir", required=True, help="where report.html, the PNGs and the job outputs go")
    parser.add_argument("--validation_dir", help="existing output of beam_jobs.validate (skips that job)")
    parser.add_argument("--stats", help="existing stats.json of beam_jobs.stats, or its folder (skips that job)")
    parser.add_argument("--num_examples", type=int, default=8, help="sample patches shown per label")
    parser.add_argument("--seed", type=int, default=0, help="which sample patches are shown")
    args, beam_args = parser.parse_known_args(argv)
    if not args.data_dir and not (args.validation_dir and args.stats):
        parser.error("give --data_dir, or both --validation_dir and --stats")
    if args.num_examples < 1:
        parser.error(f"--num_examples ({args.num_examples}) must be at least 1")
    return args, beam_args


def run(argv=None) -> str:
    """Runs whichever jobs are needed, then writes the report; returns its path."""
    args, beam_args = parse_args(argv)
    validation_dir = args.validation_dir
    if not validation_dir:
        validation_dir = layout.join(args.output_dir, "validate")
        validate.run([f"--data_dir={args.data_dir}", f"--output_dir={validation_dir}", *beam_args])
    stats_path = args.stats
    if not stats_path:
        stats_dir = layout.join(args.output_dir, "stats")
        manifest = layout.join(validation_dir, outputs.MANIFEST)
        stats.run([f"--manifest={manifest}", f"--output_dir={stats_dir}", *beam_args])
        stats_path = layout.join(stats_dir, channel_stats.STATS_JSON)
    title = f"PCam exploratory data analysis: {args.data_dir}" if args.data_dir else None
    path = write_report(args.output_dir, validation_dir, stats_path, args.num_examples, args.seed, title)
    print(f"report: {path}")
    return path


def main():
    cli.main(run)


if __name__ == "__main__":
    main()
