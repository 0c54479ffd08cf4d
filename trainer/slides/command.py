"""pcam-slide: tumour heatmaps of whole slides from a trained run (or an ensemble), one slide or a folder.

    pcam-slide --model_dir=runs/baseline --slide=tumor_001.tif --output_dir=slides/tumor_001
    pcam-slide --model_dir=runs/baseline --slide_dir=slides/ --output_dir=heatmaps/   # OUT/<file>/ + slides.csv
    pcam-slide --model_dir runs/a runs/b --tta --slide=x.svs --output_dir=OUT --mpp=0.25
    python -m trainer.slides ...        # the same command

A window is the model's input (96x96 for PCam runs) at the model's resolution (0.972 um/px, the PCam patches'
10x), moved by --stride model pixels (default 32: the label covers the
centre 32x32, so stride-32 windows tile the slide with label squares that do not overlap). The slide's level
nearest that resolution (never coarser) is read in large tiles and resampled; level 0's microns per pixel
come from the slide's metadata or --mpp. Windows with less than --min_tissue of tissue (trainer.slides.tissue)
are never predicted. --inference: windows runs each window as pcam-predict runs a file; dense runs the
convolutions once per region (trainer.slides.dense), exact for runs trained with --padding=valid; auto (the
default) checks DENSE_CHECK windows both ways first and uses dense only if they agree within --dense_tolerance.

OUT gets, each written atomically, summary.json last (trainer.slides.outputs):
  heatmap.npy      float32 [rows, cols]; NaN where there is no tissue; [i, j] is the window centred at
                   level-0 pixel (x0 + j*s, y0 + i*s), (x0, y0) and s in summary.json "heatmap"
  tissue.png       the tissue mask (white = tissue); overlay.png the thumbnail with the heatmap over it
  regions.geojson  polygons in level-0 pixels (QuPath imports them, holes included) of windows at or above the
                   threshold: --threshold, else the run's validation Youden threshold, else 0.5
  heatmap.tif      the heatmap as a pyramidal TIFF over the slide's area, with its microns per pixel
  summary.json     slide_score (mean of the 10 highest window probabilities), tumour_area_mm2, windows, tissue
                   (area and how the mask was decided), inference and dense_check, settings
OUT is locked while the command runs; progress is saved to OUT/.partial, so the same command run again after
an interruption continues where it stopped. A user's mistake (not a slide, a truncated one, a folder that is
not a run, no resolution) is one line `error: ...` and exit status 2, before anything is written to OUT.

With --slide_dir (or several --slide), each slide goes to OUT/<file name>/ and OUT/slides.csv lists every
slide (slide, status, score, tumour area, windows, seconds, reason). A slide already done with the same
settings is skipped, an interrupted one continues, and one that fails is listed with its one-line reason
while the others go on; the exit status is then 1.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time

from absl import flags
from etils import epath

from trainer import errors
from trainer.config import cli, options
from trainer.config.options import option
from trainer.slides import outputs
from trainer.slides.heatmap import PARTIAL_DIR, Checkpoint, compute_heatmap
from trainer.slides.plan import Plan, SlideConfig, SlideOptions, plan

# Files a --slide_dir holds that are slides (OpenSlide's formats, TIFF); others are counted and named, not read.
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm")
SLIDES_CSV = "slides.csv"
CSV_COLUMNS = ("slide", "status", "slide_score", "tumour_area_mm2", "windows", "seconds", "output_dir", "reason")
OPTIONS = tuple(f.name for f in dataclasses.fields(SlideOptions))  # what every slide of a run shares


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlideCommand(SlideOptions):
    """pcam-slide's command line, a flag per field: the runs, the slides (one, several or a folder), the output
    folder, and the options every slide is computed with (SlideOptions); each slide gets its SlideConfig."""

    model_dirs: tuple[str, ...] = options.model_dirs()
    slides: tuple[str, ...] = option(
        (),
        "Whole-slide image (OpenSlide's formats, tiled or plain TIFF); repeat it for several.",
        flag_name="slide",
        flag_type="multi_string",
    )
    slide_dir: str | None = option(None, "A folder of slides: each one into OUT/<file name>/, and OUT/slides.csv.")
    output_dir: str = options.output_dir("heatmap.npy, summary.json, ... (locked while running)")


def settings(config: SlideConfig) -> dict:
    """What a finished slide's summary.json must hold to be skipped by a folder run: the same slide and settings."""
    values = dataclasses.asdict(config)
    del values["output_dir"]
    values["slide"] = os.path.abspath(config.slide)
    values["model_dirs"] = [os.path.abspath(d) for d in config.model_dirs]
    return values


def run_slide(config: SlideConfig, p: Plan | None = None, emit=None, after_tile=None) -> dict:
    """One slide: plan (every check), lock OUT, heatmap (resumable), outputs; returns summary.json's contents."""
    from pcam_tfds.core.folder_lock import FolderLock
    from pcam_tfds.core.progress import print_line

    emit = emit or print_line
    p = p or plan(config)
    started = time.monotonic()
    try:
        with FolderLock(config.output_dir, "pcam-slide " + " ".join(sys.argv[1:])):
            checkpoint = Checkpoint(epath.Path(config.output_dir), p.identity())
            heatmap, how = compute_heatmap(p, checkpoint, emit=emit, after_tile=after_tile)
            summary = outputs.write_all(p, heatmap, how, time.monotonic() - started, settings(config))
            checkpoint.remove()
    finally:
        p.slide.close()
    if summary["windows"] == 0:
        emit(f"pcam-slide: no tissue found in {config.slide}: the heatmap is empty (all NaN)")
    return summary


def list_slides(slide_dir: str) -> tuple[list[str], list[str]]:
    """(slide files, other files) of a folder, sorted; UsageError if it is not a folder."""
    folder = epath.Path(slide_dir)
    if not folder.is_dir():
        raise errors.UsageError(f"--slide_dir={slide_dir!r} is not a folder")
    files = sorted(str(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    slides = [f for f in files if f.lower().endswith(SLIDE_EXTENSIONS)]
    return slides, [f for f in files if f not in slides]


def _done(config: SlideConfig) -> dict | None:
    """The summary of an earlier complete run of this slide with the same settings, else None."""
    path = epath.Path(config.output_dir) / outputs.summary.NAME
    if not path.exists() or (epath.Path(config.output_dir) / PARTIAL_DIR).exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("settings") == json.loads(json.dumps(settings(config))) else None


def run_folder(configs: list[SlideConfig], output_dir: str, emit=None) -> list[dict]:
    """Each slide into its own folder, then OUT/slides.csv; a failing slide is listed with its reason."""
    from pcam_tfds.core.folder_lock import atomic_write_text
    from pcam_tfds.core.progress import print_line

    emit = emit or print_line
    rows = []
    for n, config in enumerate(configs, 1):
        row = {"slide": config.slide, "output_dir": config.output_dir, "reason": ""}
        started = time.monotonic()
        summary = _done(config)
        try:
            if summary is not None:
                row["status"] = "done earlier"
            else:
                emit(f"pcam-slide: slide {n} of {len(configs)}: {config.slide}")
                summary = run_slide(config, emit=emit)
                row["status"] = "done"
        except errors.UsageError as e:  # a bad slide file: the others go on
            row.update(status="failed", reason=str(e))
        except Exception as e:  # noqa: BLE001 - any other failure of one slide is listed, not fatal to the folder
            row.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0])
        if row["status"] == "failed":
            emit(f"pcam-slide: {config.slide} failed: {row['reason']}")
            row["seconds"] = round(time.monotonic() - started, 3)
        else:
            for key in ("slide_score", "tumour_area_mm2", "windows", "seconds"):
                row[key] = summary[key]
        rows.append(row)
        atomic_write_text(epath.Path(output_dir) / SLIDES_CSV, _csv_text(rows))  # after each slide: a partial list
    return rows


def _csv_text(rows: list[dict]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in CSV_COLUMNS})
    return buffer.getvalue()


def define_flags(fv: flags.FlagValues) -> None:
    cli.define(fv, SlideCommand)


def configs_from_flags(f: flags.FlagValues, args: list[str]) -> tuple[list[SlideConfig], bool]:
    """(one SlideConfig per slide, whether it is a folder run: --slide_dir or several --slide); `args` are the
    run folders listed after the flags."""
    command = cli.make(f, SlideCommand, args)
    shared = {name: getattr(command, name) for name in OPTIONS}
    slides = list(command.slides)
    if command.slide_dir:
        found, others = list_slides(command.slide_dir)
        if not found:
            raise errors.UsageError(
                f"--slide_dir={command.slide_dir!r} holds no slide files ({', '.join(SLIDE_EXTENSIONS)})"
                + (f"; {len(others)} other files, e.g. {os.path.basename(others[0])}" if others else "")
            )
        slides += found
    if not slides:
        raise errors.UsageError("give --slide=FILE (repeat it for several) or --slide_dir=FOLDER")

    def config(slide: str, output_dir: str) -> SlideConfig:
        return SlideConfig(model_dirs=command.model_dirs, slide=slide, output_dir=output_dir, **shared).check()

    if len(slides) == 1 and not command.slide_dir:
        return [config(slides[0], command.output_dir)], False
    names = [os.path.basename(s) for s in slides]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise errors.UsageError(f"two slides named {twice[0]!r}: each slide's output folder is OUT/<file name>")
    return [config(s, os.path.join(command.output_dir, n)) for s, n in zip(slides, names)], True


def _report(summary: dict, config: SlideConfig) -> None:
    score = summary["slide_score"]
    print(
        f"wrote {config.output_dir}: {summary['windows']} windows, slide score "
        f"{'none (no tissue)' if score is None else f'{score:.4f}'}, tumour area {summary['tumour_area_mm2']:.3f} mm2, "
        f"{summary['regions']} regions at threshold {summary['threshold']:.4f}"
    )


def run(argv: list[str], emit=None, after_tile=None):
    """The command in this process on its own FlagValues (tests): one slide's summary, or a folder's rows."""
    fv = flags.FlagValues()
    define_flags(fv)
    args = fv(["pcam-slide", *argv])[1:]
    configs, folder = configs_from_flags(fv, args)
    if folder:
        return run_folder(configs, fv.output_dir, emit=emit)
    return run_slide(configs[0], emit=emit, after_tile=after_tile)


def _main(argv: list[str]) -> int:
    configs, folder = configs_from_flags(flags.FLAGS, argv[1:])
    if not folder:
        summary = run_slide(configs[0], plan(configs[0]))
        _report(summary, configs[0])
        return 0
    rows = run_folder(configs, flags.FLAGS.output_dir)
    failed = [r for r in rows if r["status"] == "failed"]
    print(
        f"wrote {os.path.join(flags.FLAGS.output_dir, SLIDES_CSV)}: {len(rows) - len(failed)} of {len(rows)} slides "
        f"done" + (f", {len(failed)} failed (see their reason there)" if failed else "")
    )
    return 1 if failed else 0


def main() -> None:
    """The console script `pcam-slide` (and `python -m trainer.slides`)."""
    define_flags(flags.FLAGS)
    errors.run(_main, tensorflow=True)
