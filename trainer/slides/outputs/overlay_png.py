"""overlay.png: the slide's thumbnail with the heatmap (matplotlib's inferno, half opaque) over its windows."""

from __future__ import annotations

import numpy as np

NAME = "overlay.png"


def overlay_image(thumbnail: np.ndarray, heatmap: np.ndarray, grid, k: int) -> np.ndarray:
    """The thumbnail (k pixels per stride) with each window's label square coloured by its probability."""
    from matplotlib import colormaps

    if heatmap.size == 0:
        return thumbnail
    colours = colormaps["inferno"](np.nan_to_num(heatmap, nan=0.0))[..., :3] * 255.0
    alpha = np.where(np.isfinite(heatmap), 0.5, 0.0)[..., None]
    colours = np.repeat(np.repeat(colours, k, 0), k, 1)
    alpha = np.repeat(np.repeat(alpha, k, 0), k, 1)
    # Window (i, j)'s label square starts patch/2 - stride/2 model pixels after the window's corner.
    offset = max(0, round((grid.patch / 2 - grid.stride / 2 - grid.margin) * k / grid.stride))
    out = thumbnail.astype(np.float32)
    h = max(0, min(out.shape[0] - offset, colours.shape[0]))
    w = max(0, min(out.shape[1] - offset, colours.shape[1]))
    region = out[offset : offset + h, offset : offset + w]
    out[offset : offset + h, offset : offset + w] = region * (1 - alpha[:h, :w]) + colours[:h, :w] * alpha[:h, :w]
    return (out + 0.5).astype(np.uint8)


def write(result, out) -> dict:
    from PIL import Image

    from pcam_tfds.core.folder_lock import atomic_path

    p = result.plan
    with atomic_path(out / NAME, suffix=".png") as tmp:
        Image.fromarray(overlay_image(p.thumbnail, result.heatmap, p.grid, p.k)).save(str(tmp))
    return {}
