"""The tissue mask of a slide's thumbnail: which pixels hold tissue, so that glass is never predicted."""

from __future__ import annotations

import numpy as np

SATURATION_FLOOR = 0.05  # below this no pixel is tissue, whatever Otsu says (an empty, white slide)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins): the split with the largest between-class variance."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    hi, lo = rgb.max(axis=-1), rgb.min(axis=-1)
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1.0), 0.0)


def tissue_mask(thumbnail: np.ndarray) -> np.ndarray:
    """bool mask: saturation above Otsu's threshold and SATURATION_FLOOR (glass is grey or white: unsaturated)."""
    sat = saturation(thumbnail)
    return sat > max(otsu_threshold(sat), SATURATION_FLOOR)


def detect(thumbnail: np.ndarray) -> tuple[np.ndarray, dict]:
    """(bool mask, how it was decided: the method and its thresholds, for summary.json "tissue")."""
    sat = saturation(thumbnail)
    threshold = max(otsu_threshold(sat), SATURATION_FLOOR)
    return sat > threshold, {"method": "otsu_saturation", "saturation_threshold": round(threshold, 4)}
