"""The files of a slide's output folder: one module per format, each listed once in WRITERS.

    summary = write_all(plan, heatmap, how, seconds)    # every file atomically, summary.json last

A writer module has NAME (its file name, or names for several) and `write(result, out) -> dict`, whose
returned entries join summary.json. A new format is one module and one entry here.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from etils import epath

from trainer.slides.outputs import heatmap_npy, heatmap_tiff, overlay_png, regions, summary, tissue_png

WRITERS = (heatmap_npy, tissue_png, overlay_png, regions, heatmap_tiff)
FILES = (*(w.NAME for w in WRITERS), summary.NAME)


@dataclasses.dataclass(frozen=True)
class Result:
    """A finished slide: its plan, heatmap (NaN = not predicted), how it was computed and how long it took."""

    plan: object  # trainer.slides.plan.Plan
    heatmap: np.ndarray
    how: dict
    seconds: float

    @property
    def above(self) -> np.ndarray:
        """bool (rows, cols): windows at or above the plan's threshold."""
        return np.nan_to_num(self.heatmap, nan=-1.0) >= self.plan.threshold


def write_all(plan, heatmap: np.ndarray, how: dict, seconds: float, settings: dict | None = None) -> dict:
    """Every writer's file in plan.config.output_dir, then summary.json with their entries; returns the summary."""
    from pcam_tfds.core.folder_lock import atomic_write_text

    result = Result(plan, heatmap.astype(np.float32), how, seconds)
    out = epath.Path(plan.config.output_dir)
    entries = {}
    for writer in WRITERS:
        entries.update(writer.write(result, out) or {})
    values = summary.summary(result, {**entries, "settings": settings or {}})
    atomic_write_text(out / summary.NAME, json.dumps(values, indent=2) + "\n")
    return values
