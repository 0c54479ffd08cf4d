"""heatmap.npy: float32 (rows, cols) window probabilities, NaN where no window was predicted."""

from __future__ import annotations

import numpy as np

NAME = "heatmap.npy"


def write(result, out) -> dict:
    from pcam_tfds.core.folder_lock import atomic_path

    with atomic_path(out / NAME, suffix=".npy") as tmp:
        np.save(str(tmp), result.heatmap)
    return {}
