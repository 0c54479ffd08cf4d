"""What one slide run does (SlideConfig) and everything checked before its output folder is touched (Plan)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from etils import epath

from pcam_tfds.core.patches import PATCH_MPP
from trainer import errors, run_folder
from trainer.config import options
from trainer.config.options import option
from trainer.slides import geometry
from trainer.slides import tissue as tissue_lib
from trainer.slides.geometry import THUMB_MAX, Grid, choose_level, read_thumbnail, window_tissue
from trainer.slides.reader import DEFAULT_READER, READERS, Slide, SlideError, open_slide

INFERENCE = ("auto", "dense", "windows")
# --inference=auto uses dense inference where it moves no checked window by more: float error, so dense is
# chosen for padding-free models (exact) and not for 'same'-padded ones (up to 0.05 on real tissue).
DENSE_TOLERANCE = 1e-3


def check_run(model_dir: str) -> None:
    """ValueError naming the file when `model_dir` is not a finished run folder."""
    folder = epath.Path(model_dir)
    if not folder.is_dir():
        raise errors.UsageError(f"--model_dir={model_dir!r} is not a folder")
    if not (folder / run_folder.MODEL_FILE).exists():
        raise errors.UsageError(
            f"{folder / run_folder.MODEL_FILE} does not exist: {model_dir!r} is not a finished trainer run folder"
        )


def default_threshold(model_dirs: tuple[str, ...]) -> tuple[float, str]:
    """(threshold, where it comes from): one run's validation Youden threshold, else 0.5."""
    from trainer.inference import calibration

    if len(model_dirs) == 1:
        try:
            youden = calibration.validation_thresholds(model_dirs[0]).get("youden")
        except calibration.NotHeldOut:
            youden = None
        if youden is not None:
            return youden, f"validation Youden threshold of {model_dirs[0]}"
    return 0.5, "0.5 (no single held-out run with a validation Youden threshold)"


@dataclasses.dataclass(frozen=True)
class SlideOptions:
    """How every slide of a pcam-slide run is computed; each field is also the pcam-slide flag of its name."""

    tta: bool = options.tta()
    stride: int = option(32, "Window step in model pixels (32: the label squares tile the slide).")
    mpp: float | None = option(
        None,
        "Level-0 microns per pixel for slides that do not record it (a slide's own value is used where it has one).",
    )
    batch_size: int = options.prediction_batch_size()
    threshold: float | None = option(
        None,
        "Tumour threshold of regions.geojson and the tumour area (default: the run's validation Youden "
        "threshold, else 0.5).",
    )
    min_tissue: float = option(
        0.1,
        "Share of a window's area that must be tissue (tissue.png) for it to be predicted; 0.1 keeps every window "
        "whose centre 32x32, the part a PCam label speaks for, is tissue (bench/RESULTS.md, the tissue mask).",
    )
    reader: str = option(
        DEFAULT_READER,
        "auto: OpenSlide where it reads the slide, else tifffile; openslide: OpenSlide's formats only; tifffile: "
        "tiled pyramidal TIFF/SVS/OME-TIFF and plain TIFF (trainer.slides.reader).",
        choices=READERS,
    )
    inference: str = option(
        "auto",
        "windows: each window through the model, as pcam-predict runs a file; dense: the convolutions once over "
        "each region, each window pooled from it (exact for --padding=valid runs, close otherwise); auto: dense "
        "where the models allow it and it agrees with windows within --dense_tolerance on windows spread over the "
        "slide (summary.json dense_check), else windows.",
        choices=INFERENCE,
    )
    dense_tolerance: float = option(
        DENSE_TOLERANCE,
        "--inference=auto: the largest probability difference on the checked windows that allows dense.",
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlideConfig(SlideOptions):
    """What one pcam-slide run does on one slide: the runs, the slide, its output folder and the options;
    `check` rejects impossible values, naming the flag."""

    model_dirs: tuple[str, ...]
    slide: str
    output_dir: str

    def check(self) -> SlideConfig:
        if not self.model_dirs:
            raise errors.UsageError("--model_dir: give at least one trainer run folder")
        if self.stride <= 0:
            raise errors.UsageError(f"--stride={self.stride} must be > 0")
        if self.batch_size <= 0:
            raise errors.UsageError(f"--batch_size={self.batch_size} must be > 0")
        if self.mpp is not None and not self.mpp > 0:
            raise errors.UsageError(f"--mpp={self.mpp} must be > 0 (microns per level-0 pixel)")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise errors.UsageError(f"--threshold={self.threshold} must be in [0, 1]")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise errors.UsageError(f"--min_tissue={self.min_tissue} must be in [0, 1]")
        if self.reader not in READERS:
            raise errors.UsageError(f"--reader={self.reader!r}: choose one of {', '.join(READERS)}")
        if self.inference not in INFERENCE:
            raise errors.UsageError(f"--inference={self.inference!r}: choose one of {', '.join(INFERENCE)}")
        if not 0.0 <= self.dense_tolerance <= 1.0:
            raise errors.UsageError(f"--dense_tolerance={self.dense_tolerance} must be in [0, 1]")
        return self


@dataclasses.dataclass
class Plan:
    """Everything checked before OUT is touched: the open slide, the models, the grid and the tissue."""

    config: SlideConfig
    slide: Slide
    models: list
    mpp: float  # level 0
    model_mpp: float
    grid: Grid
    level: int
    k: int  # thumbnail pixels per stride
    thumbnail: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray  # bool (rows, cols): windows to predict
    threshold: float
    threshold_source: str
    tile_windows: int  # windows per tile side
    tissue_summary: dict = dataclasses.field(default_factory=dict)  # summary.json "tissue": area, how it was decided
    dense: list | None = None  # trainer.slides.dense.DenseModel per model, where the models allow it and it is wanted
    dense_note: str = ""  # why there is none, for --inference=auto

    def identity(self) -> dict:
        """What a checkpoint must match to be continued: the same slide file, models and settings."""
        c = self.config
        st = os.stat(c.slide)
        return {
            "slide": os.path.abspath(c.slide),
            "slide_size": st.st_size,
            "slide_mtime": st.st_mtime,
            "model_dirs": [os.path.abspath(d) for d in c.model_dirs],
            "tta": c.tta,
            "stride": c.stride,
            "mpp": self.mpp,
            "min_tissue": c.min_tissue,
            "inference": c.inference,
            "dense_tolerance": c.dense_tolerance,
            "shape": [self.grid.rows, self.grid.cols],
        }

    def tiles(self) -> list[tuple[int, int]]:
        t = self.tile_windows
        return [(r, c) for r in range(0, self.grid.rows, t) for c in range(0, self.grid.cols, t)]


def plan(config: SlideConfig) -> Plan:
    """Opens and checks the slide and the runs; ValueError (SlideError) naming the file for a user's mistake."""
    from trainer.inference import probabilities

    for d in config.model_dirs:
        check_run(d)
    out = epath.Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise errors.UsageError(f"--output_dir={config.output_dir!r} is a file, not a folder")
    model_mpp = PATCH_MPP  # every run trains on PCam patches (both datasets are 10x)
    slide = open_slide(config.slide, config.reader)
    # A slide's own resolution wins: in a folder run --mpp fills in for the slides that record none.
    mpp = slide.mpp or config.mpp
    if not mpp:
        raise SlideError(f"{config.slide}: the slide records no microns per pixel; give --mpp (level 0's um/px)")
    models = [probabilities.load_model(d) for d in config.model_dirs]
    patches = {tuple(m.input_shape[1:3]) for m in models}
    if len(patches) > 1 or len(next(iter(patches))) != 2 or len(set(next(iter(patches)))) != 1:
        raise errors.UsageError(f"the runs' inputs are not one square size: {sorted(patches)}")
    patch = next(iter(patches))[0]
    scale = model_mpp / mpp
    grid = Grid.of(slide.level_dimensions[0], scale, patch, config.stride)
    level = choose_level(slide, scale)
    width_m = slide.level_dimensions[0][0] / scale
    height_m = slide.level_dimensions[0][1] / scale
    # k thumbnail pixels per stride: as fine as THUMB_MAX allows, 1 to 4.
    k = int(max(1, min(4, THUMB_MAX * config.stride // max(1.0, max(width_m, height_m)))))
    pixel = config.stride / k
    tw, th = max(1, int(width_m / pixel)), max(1, int(height_m / pixel))
    thumbnail = read_thumbnail(slide, scale, pixel, tw, th)
    mask, how = tissue_lib.detect(thumbnail, patch_pixels=patch * k / config.stride)
    tissue = (
        window_tissue(mask, grid, k) >= max(config.min_tissue, 1e-9)
        if grid.rows and grid.cols
        else np.zeros((grid.rows, grid.cols), bool)
    )
    mm_per_pixel = pixel * model_mpp / 1000.0
    tissue_summary = {
        "area_mm2": round(float(mask.sum()) * mm_per_pixel**2, 4),
        "fraction": round(float(mask.mean()), 4) if mask.size else 0.0,
        "windows": int(tissue.sum()),
        "min_tissue": config.min_tissue,
        "mask_pixel_um": round(pixel * model_mpp, 4),
        **how,
    }
    if config.threshold is not None:
        threshold, source = config.threshold, "--threshold"
    else:
        threshold, source = default_threshold(config.model_dirs)
    tile_windows = max(1, (geometry.TILE_PIXELS - patch) // config.stride + 1)
    dense, dense_note = None, ""
    if config.inference != "windows":
        from trainer.slides.dense import DenseModel, NotDense

        try:
            dense = [DenseModel.of(m, patch, config.stride) for m in models]
        except NotDense as e:
            if config.inference == "dense":
                raise errors.UsageError(f"--inference=dense: {e}") from None
            dense_note = str(e)
    return Plan(
        config,
        slide,
        models,
        mpp,
        model_mpp,
        grid,
        level,
        k,
        thumbnail,
        mask,
        tissue,
        threshold,
        source,
        tile_windows,
        tissue_summary,
        dense,
        dense_note,
    )
