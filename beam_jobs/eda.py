"""Exploratory data analysis of a Kaggle-layout PCam folder as one HTML report a person opens in a browser.

Runs `beam_jobs.validate` and then `beam_jobs.stats` on its manifest (DirectRunner by
default; Beam options are passed to both), then draws the report:

    python -m beam_jobs.eda --manual_dir=data/demo --output_dir=out/eda

or reuses outputs that exist already (no pipeline runs):

    python -m beam_jobs.eda --validation_dir=out/validate --stats=out/stats/stats.json --output_dir=out/eda

Writes to OUTPUT_DIR (one folder, movable as a whole):
    report.html         self-contained: figures inline as base64 PNG, no script, no external resource
    sample_patches.png  NUM_EXAMPLES negative and positive patches, centre 32x32 outlined
    channels.png        one patch and its red, green and blue channels
    stains.png          H&E colour deconvolution of sample patches: haematoxylin, eosin, DAB alone
    stain_histograms.png  stain amounts by label over SCAN_PATCHES patches read
    histograms.png      exact 256-bin RGB histograms by label
    labels.png          the label distribution
    flags.png           shares of background, dark and blank patches by label
    flagged.png         flagged patches found among SCAN_PATCHES patches read
    duplicates.png      exact-duplicate patches side by side
    validate/, stats/   the job outputs, when this command ran the jobs

Every patch shown is drawn with `--seed` from the valid rows of the manifest sorted by id
(beam_jobs/report/scan.py), so the same inputs and seed give the same report, whatever the
manifest's row order. Statistics and flag shares in stats.json are exact over every file; the
galleries and stain histograms come from the SCAN_PATCHES patches the report reads. Check that the
page renders with `python -m beam_jobs.report.browser OUTPUT_DIR/report.html` (needs Chromium).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import io
import json
import logging

import numpy as np

from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly, before the imports below

# isort: split
from apache_beam.io.filesystems import FileSystems

from beam_jobs import cli, stats, validate
from beam_jobs.report import figures, page, scan
from pcam_tfds.core import channel_stats, layout, outputs, patches

REPORT = "report.html"
TABLE_ROWS = 20  # rows of rejected.csv and duplicates.csv shown in the page
STAIN_EXAMPLES = 2  # sample patches of each label shown separated into their stains

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
    return outputs.read_manifest(path, ["id", "source", "label", "path", "valid"])


def pick_examples(manifest, per_label: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    """{group: [(id, path)]}: PER_LABEL valid train files of each label, drawn with SEED, in the order drawn."""
    out = {}
    for group, label in ((channel_stats.NEGATIVE, 0), (channel_stats.POSITIVE, 1)):
        # One seed per label, so the negatives drawn do not depend on how many positives there are.
        rows = scan.draw(scan.valid_rows(manifest, layout.TRAIN, label), per_label, seed + label)
        out[group] = [(r.id, r.path) for r in rows]
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


def thresholds_of(stats_doc: dict) -> channel_stats.Thresholds:
    """The flag thresholds stats.json was computed with, so the galleries flag patches by the same rule."""
    fields = {f.name for f in dataclasses.fields(channel_stats.Thresholds)}
    return channel_stats.Thresholds(**{k: v for k, v in stats_doc["thresholds"].items() if k in fields})


def load_duplicates(groups: list[scan.DuplicateGroup]) -> list[tuple[scan.DuplicateGroup, dict]]:
    """[(group, {(source, id): pixels})] of the first two members of each group."""
    try:
        return [(g, {(m.source, m.id): scan.read(m) for m in g.members[:2]}) for g in groups]
    except scan.ScanError as e:
        raise ReportError(str(e)) from None


def build_figures(
    examples: dict,
    stats_doc: dict,
    found: scan.Scan | None = None,
    seed: int = 0,
    duplicates: tuple[list, int] = ([], 0),
) -> dict[str, tuple[bytes, str]]:
    """{name: (PNG bytes, caption)} of every figure of the report.

    FOUND: the scan of drawn patches (flag gallery, stain histograms); DUPLICATES: (load_duplicates(...),
    the number of duplicate groups in duplicates.csv).
    """
    out = {}
    n = sum(len(v) for v in examples.values())
    if n:
        fig = figures.sample_grid(examples)
        out["sample_patches"] = (
            figures.png_bytes(fig),
            f"Valid patches of each label drawn at random with seed {seed}, in the order drawn; "
            "the cyan square is the centre 32x32",
        )
        group = channel_stats.POSITIVE if examples.get(channel_stats.POSITIVE) else channel_stats.NEGATIVE
        id_, pixels = examples[group][0]
        fig = figures.channel_split(id_, channel_stats.GROUP_LABEL[group], pixels)
        out["channels"] = (figures.png_bytes(fig), f"Patch {id_} and its red, green and blue channels")
        shown = [(i, g, p) for g in examples for i, p in examples[g][:STAIN_EXAMPLES]]
        out["stains"] = (
            figures.png_bytes(figures.stain_separation(shown)),
            "The first sample patches of each label separated into haematoxylin (nuclei), eosin (cytoplasm, "
            "stroma) and DAB (no DAB in H&E: what is left is the stain vectors' misfit); each stain alone on white",
        )
    if found is not None and found.total:
        out["stain_histograms"] = (
            figures.png_bytes(figures.stain_histograms(found.hed_histograms, found.scanned, scan.HED_RANGE)),
            f"Stain amounts per pixel by label, over {found.total:,} patches drawn at random with seed {seed} "
            f"(values outside {scan.HED_RANGE[0]}..{scan.HED_RANGE[1]} are counted in the end bins)",
        )
        out["flagged"] = (
            figures.png_bytes(figures.flagged_gallery(found.flagged, found.flag_counts, found.total)),
            f"Flagged patches among {found.total:,} drawn at random with seed {seed}, by the thresholds of "
            "stats.json; the table above counts every patch",
        )
    groups, total = duplicates
    if groups:
        more = f"; the first {len(groups)} of {total:,} groups" if total > len(groups) else ""
        out["duplicates"] = (
            figures.png_bytes(figures.duplicate_pairs(groups)),
            f"Exact-duplicate patches (identical pixels) side by side, from duplicates.csv{more}",
        )
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
    output_dir: str,
    validation_dir: str,
    stats_path: str,
    per_label: int = 8,
    seed: int = 0,
    title: str | None = None,
    scan_patches: int = 2000,
    duplicate_pairs: int = 8,
) -> str:
    """Draws the figures and writes report.html and the PNGs into OUTPUT_DIR; returns the report's path.

    SCAN_PATCHES valid files, drawn with SEED, are read for the flag gallery and the stain histograms;
    DUPLICATE_PAIRS groups of duplicates.csv are drawn side by side.
    """
    summary = json.loads(read_text(layout.join(validation_dir, outputs.SUMMARY)))
    stats_doc = channel_stats.load_stats(stats_path)
    manifest = read_manifest(layout.join(validation_dir, outputs.MANIFEST))
    examples = load_examples(pick_examples(manifest, per_label, seed))
    try:
        found = scan.scan(
            scan.draw(scan.valid_rows(manifest), scan_patches, seed),
            thresholds_of(stats_doc),
            keep=figures.GALLERY_COLUMNS,
        )
    except scan.ScanError as e:
        raise ReportError(str(e)) from None
    groups, total = scan.duplicate_groups(
        read_text(layout.join(validation_dir, outputs.DUPLICATES)), manifest, duplicate_pairs
    )
    rendered = build_figures(examples, stats_doc, found, seed, (load_duplicates(groups), total))
    for name, (png, _) in rendered.items():
        write_bytes(layout.join(output_dir, f"{name}.png"), png)
    html = page.render(
        title=title or f"PCam exploratory data analysis: {stats_doc.get('manual_dir') or validation_dir}",
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
    parser.add_argument("--manual_dir", help="Kaggle-layout folder; the jobs run on it unless their outputs are given")
    parser.add_argument("--output_dir", required=True, help="where report.html, the PNGs and the job outputs go")
    parser.add_argument("--validation_dir", help="existing output of beam_jobs.validate (skips that job)")
    parser.add_argument("--stats", help="existing stats.json of beam_jobs.stats, or its folder (skips that job)")
    parser.add_argument("--num_examples", type=int, default=8, help="sample patches shown per label")
    parser.add_argument("--seed", type=int, default=0, help="which sample patches are shown and scanned")
    parser.add_argument(
        "--scan_patches",
        type=int,
        default=2000,
        help="valid patches read (drawn with --seed) for the gallery of flagged patches and the stain histograms",
    )
    parser.add_argument("--duplicate_pairs", type=int, default=8, help="duplicate groups drawn side by side")
    cli.refuse_data_dir(parser, "pcam-eda")
    args, beam_args = parser.parse_known_args(argv)
    if not args.manual_dir and not (args.validation_dir and args.stats):
        parser.error("give --manual_dir, or both --validation_dir and --stats")
    if args.num_examples < 1:
        parser.error(f"--num_examples ({args.num_examples}) must be at least 1")
    if args.scan_patches < 0 or args.duplicate_pairs < 0:
        parser.error(
            f"--scan_patches ({args.scan_patches}) and --duplicate_pairs ({args.duplicate_pairs}) must be >= 0"
        )
    return args, beam_args


def run(argv=None) -> str:
    """Runs whichever jobs are needed, then writes the report; returns its path."""
    args, beam_args = parse_args(argv)
    validation_dir = args.validation_dir
    if not validation_dir:
        validation_dir = layout.join(args.output_dir, "validate")
        validate.run([f"--manual_dir={args.manual_dir}", f"--output_dir={validation_dir}", *beam_args])
    stats_path = args.stats
    if not stats_path:
        stats_dir = layout.join(args.output_dir, "stats")
        manifest = layout.join(validation_dir, outputs.MANIFEST)
        stats.run([f"--manifest={manifest}", f"--output_dir={stats_dir}", *beam_args])
        stats_path = layout.join(stats_dir, channel_stats.STATS_JSON)
    title = f"PCam exploratory data analysis: {args.manual_dir}" if args.manual_dir else None
    path = write_report(
        args.output_dir,
        validation_dir,
        stats_path,
        args.num_examples,
        args.seed,
        title,
        args.scan_patches,
        args.duplicate_pairs,
    )
    print(f"report: {path}")
    return path


def main():
    cli.main(run)


if __name__ == "__main__":
    main()
