"""summary.json: the slide's numbers (score, tumour area, windows, tissue, how it was computed), written last."""

from __future__ import annotations

import os

import numpy as np

NAME = "summary.json"
TOP_K = 10  # slide score: the mean of the TOP_K highest window probabilities (one window can be a fluke)


def slide_score(heatmap: np.ndarray, k: int = TOP_K) -> float | None:
    """The mean of the k highest window probabilities (all of them if fewer); None without tissue."""
    values = heatmap[np.isfinite(heatmap)]
    if values.size == 0:
        return None
    return float(np.sort(values)[-k:].mean())


def summary(result, entries: dict) -> dict:
    """summary.json's contents: the slide's numbers, then what each writer reported (`entries`)."""
    p, g = result.plan, result.plan.grid
    label_mm = g.stride * p.model_mpp / 1000.0  # a window's label square: stride x stride model pixels
    return {
        "heatmap": {
            "origin_level0": list(g.origin_level0),
            "stride_level0": g.stride_level0,
            "shape": [g.rows, g.cols],
        },
        "slide_score": slide_score(result.heatmap),
        "slide_score_rule": f"mean of the {TOP_K} highest window probabilities",
        "tumour_area_mm2": float(result.above.sum() * label_mm**2),
        "threshold": p.threshold,
        "threshold_source": p.threshold_source,
        "windows": int(np.isfinite(result.heatmap).sum()),
        "tissue": p.tissue_summary,
        "seconds": round(result.seconds, 3),
        "mpp": p.mpp,
        "mpp_source": "--mpp" if p.slide.mpp is None else "the slide",
        "model_mpp": p.model_mpp,
        "level": p.level,
        "tta": p.config.tta,
        "inference": result.how["mode"],
        "inference_reason": result.how["reason"],
        "dense_check": result.how["check"],
        "slide": os.path.abspath(p.config.slide),
        "model_dirs": [os.path.abspath(d) for d in p.config.model_dirs],
        **entries,
    }
