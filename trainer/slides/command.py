"""Whole-slide tumour heatmaps: a trained run (or an ensemble) over every tissue window of a slide.

    pcam-slide --model_dir=runs/baseline --slide=tumor_001.tif --output_dir=slides/tumor_001
    pcam-slide --model_dir runs/a runs/b --tta --slide=x.svs --output_dir=OUT --stride=32 --mpp=0.25
    pcam-slide --model_dir=runs/baseline --slide=x.svs --output_dir=OUT --inference=dense   # see --inference
    python -m trainer.slides ...        # the same command

A window is the model's input (96x96 for PCam runs) at the model's resolution (RUN_DIR/config.json "mpp",
else PCAM_MPP = 0.972 um/px, the Kaggle/PCam patches' 10x), moved by --stride model pixels (default 32:
the label covers the centre 32x32, so stride-32 windows tile the slide with label regions that do not
overlap). The slide's level nearest that resolution (never coarser) is read in large tiles and resampled;
the level-0 microns per pixel come from the slide's metadata or --mpp. Windows without tissue (Otsu on
the saturation of a low-resolution thumbnail, `tissue_mask`) are never predicted. How windows are predicted
(--inference):
  windows  each window through `trainer.inference.make_predict_fn`, the function `pcam-predict` uses, so a
           window predicts what the same pixels as a patch file would;
  dense    `trainer.slides.dense`: the model's convolutions once over regions of up to DENSE_BLOCK^2 windows, each
           window's global pooling taken from the region's feature map. Several times faster at stride 32,
           where windows overlap, but a window's edges see its neighbours instead of zero padding;
  auto     (default) dense where the models allow it and DENSE_CHECK windows spread over the slide, predicted
           both ways first, differ by at most --dense_tolerance; else windows. summary.json says which and why.

OUT gets, each written atomically, summary.json last:
  heatmap.npy      float32 [rows, cols]; NaN where there is no tissue; [i, j] is the window centred at
                   level-0 pixel (x0 + j*s, y0 + i*s), (x0, y0) and s in summary.json "heatmap"
  tissue.png       the tissue mask (one pixel = THUMB_PIXEL model pixels; white = tissue)
  overlay.png      the thumbnail with the heatmap over it
  regions.geojson  polygons (level-0 pixels, QuPath imports them) of connected windows at or above the
                   threshold: --threshold, else the run's validation Youden threshold, else 0.5
  summary.json     slide_score (`slide_score`: the mean of the TOP_K highest window probabilities),
                   tumour_area_mm2 (label area of the windows at or above the threshold), windows,
                   seconds, mpp, model_dirs, threshold, inference (windows or dense), inference_reason,
                   dense_check (--inference=auto's measured differences)
OUT is locked while the command runs (pcam_tfds.core.folder_lock); progress is saved to OUT/.partial after
every tile, so the same command run again after an interruption continues where it stopped. A user's
mistake (a file that is not a slide, a truncated one, a folder that is not a run, no resolution) is one
line `error: ...` and exit status 2, before anything is written to OUT.
"""

from __future__ import annotations

import sys
import time

from absl import flags
from etils import epath

from trainer import errors
from trainer.slides import outputs
from trainer.slides.heatmap import Checkpoint, compute_heatmap
from trainer.slides.plan import DENSE_TOLERANCE, INFERENCE, Plan, SlideConfig, plan
from trainer.slides.reader import DEFAULT_READER, READERS


def run_slide(config: SlideConfig, p: Plan | None = None, emit=None, after_tile=None) -> dict:
    """The command: plan (every check), lock OUT, heatmap (resumable), outputs; returns summary.json's contents."""
    from pcam_tfds.core.folder_lock import FolderLock
    from pcam_tfds.core.progress import print_line

    emit = emit or print_line
    p = p or plan(config)
    started = time.monotonic()
    try:
        with FolderLock(config.output_dir, "pcam-slide " + " ".join(sys.argv[1:])):
            checkpoint = Checkpoint(epath.Path(config.output_dir), p.identity())
            heatmap, how = compute_heatmap(p, checkpoint, emit=emit, after_tile=after_tile)
            summary = outputs.write_all(p, heatmap, how, time.monotonic() - started)
            checkpoint.remove()
    finally:
        p.slide.close()
    if summary["windows"] == 0:
        emit(f"pcam-slide: no tissue found in {config.slide}: the heatmap is empty (all NaN)")
    return summary


def define_flags(flag_values: flags.FlagValues) -> None:
    fv = flag_values
    flags.DEFINE_multi_string(
        "model_dir", None, "Trainer run folder; repeat it (or list more after it) for an ensemble.", flag_values=fv
    )
    flags.DEFINE_string("slide", None, "Whole-slide image (any format OpenSlide reads).", flag_values=fv)
    flags.DEFINE_string(
        "output_dir", None, "Folder for heatmap.npy, summary.json, ... (locked while running).", flag_values=fv
    )
    flags.DEFINE_bool("tta", False, "Average over the 8 flips/90-degree rotations.", flag_values=fv)
    flags.DEFINE_integer("stride", 32, "Window step in model pixels.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("mpp", None, "Level-0 microns per pixel, for slides that do not record it.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 256, "Windows per prediction batch.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float(
        "threshold",
        None,
        "Tumour threshold of regions.geojson (default: the run's validation Youden threshold, else 0.5).",
        flag_values=fv,
    )
    flags.DEFINE_float("min_tissue", 0.25, "Share of tissue a window needs to be predicted.", flag_values=fv)
    flags.DEFINE_enum("reader", DEFAULT_READER, list(READERS), "Slide reader.", flag_values=fv)
    flags.DEFINE_enum(
        "inference",
        "auto",
        list(INFERENCE),
        "windows: each window through the model, as pcam-predict runs a file; dense: the convolutions once over "
        "each region, the windows pooled from it (trainer.slides.dense; several times faster, not identical at window "
        "edges); auto: dense where the models allow it and it agrees with windows within --dense_tolerance on "
        "windows spread over the slide (summary.json: dense_check).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "dense_tolerance",
        DENSE_TOLERANCE,
        "--inference=auto: the largest probability difference on the checked windows that still allows dense.",
        flag_values=fv,
    )
    flags.mark_flags_as_required(["model_dir", "slide", "output_dir"], flag_values=fv)


def config_from_flags(f: flags.FlagValues, run_dirs: list[str]) -> SlideConfig:
    return SlideConfig(
        model_dirs=(*f.model_dir, *run_dirs),
        slide=f.slide,
        output_dir=f.output_dir,
        tta=f.tta,
        stride=f.stride,
        mpp=f.mpp,
        batch_size=f.batch_size,
        threshold=f.threshold,
        min_tissue=f.min_tissue,
        reader=f.reader,
        inference=f.inference,
        dense_tolerance=f.dense_tolerance,
    ).check()


def _report(summary: dict, config: SlideConfig) -> None:
    score = summary["slide_score"]
    print(
        f"wrote {config.output_dir}: {summary['windows']} windows, slide score "
        f"{'none (no tissue)' if score is None else f'{score:.4f}'}, tumour area {summary['tumour_area_mm2']:.3f} mm2, "
        f"{summary['regions']} regions at threshold {summary['threshold']:.4f}"
    )


def run(argv: list[str], emit=None, after_tile=None) -> dict:
    """The command in this process on its own FlagValues (tests); ValueError for a user's mistake."""
    fv = flags.FlagValues()
    define_flags(fv)
    run_dirs = fv(["pcam-slide", *argv])[1:]
    config = config_from_flags(fv, run_dirs)
    return run_slide(config, emit=emit, after_tile=after_tile)


def _main(argv: list[str]) -> int:
    config = config_from_flags(flags.FLAGS, argv[1:])
    summary = run_slide(config, plan(config))
    _report(summary, config)
    return 0


def main() -> None:
    """The console script `pcam-slide` (and `python -m trainer.slide`)."""
    define_flags(flags.FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
