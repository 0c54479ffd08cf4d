"""heatmap.tif: the heatmap as a tiled pyramidal RGB TIFF over the slide's whole area, for slide viewers.

Pixel (0, 0) is the slide's level-0 corner, and one pixel covers `pixel` model pixels (recorded as microns per
pixel in the resolution tags and as Aperio's "MPP =" in the description), so QuPath or an OpenSlide viewer lays
it over the slide by size alone. Each window's label square is coloured by its probability (matplotlib's
inferno); no prediction is white.
"""

from __future__ import annotations

import math

import numpy as np

NAME = "heatmap.tif"
MAX_PIXEL = 8  # model pixels per heatmap pixel, at most: label squares keep sharp edges when zoomed


def pixel_size(grid) -> int:
    """Model pixels per heatmap pixel: divides the stride and the label squares' offset, so squares fall on pixels."""
    offset = round(grid.patch / 2 - grid.stride / 2 - grid.margin)
    return math.gcd(grid.stride, offset, MAX_PIXEL) or 1


def heatmap_image(heatmap: np.ndarray, grid, width: int, height: int, pixel: int) -> np.ndarray:
    """uint8 RGB (height, width): window (i, j)'s label square in its colour, white elsewhere."""
    from matplotlib import colormaps

    image = np.full((height, width, 3), 255, np.uint8)
    if heatmap.size == 0:
        return image
    colours = (colormaps["inferno"](np.nan_to_num(heatmap, nan=0.0))[..., :3] * 255.0 + 0.5).astype(np.uint8)
    colours[~np.isfinite(heatmap)] = 255
    per = grid.stride // pixel  # heatmap pixels per window step
    start = round(grid.patch / 2 - grid.stride / 2 - grid.margin) // pixel
    big = np.repeat(np.repeat(colours, per, 0), per, 1)
    h, w = min(big.shape[0], height - start), min(big.shape[1], width - start)
    if h > 0 and w > 0:
        image[start : start + h, start : start + w] = big[:h, :w]
    return image


def write(result, out) -> dict:
    from pcam_tfds.core.folder_lock import atomic_path
    from trainer.slides.pyramid import write_pyramid

    p = result.plan
    g = p.grid
    pixel = pixel_size(g)
    level0 = p.slide.level_dimensions[0]
    width = max(1, math.ceil(level0[0] / (g.scale * pixel)))
    height = max(1, math.ceil(level0[1] / (g.scale * pixel)))
    image = heatmap_image(result.heatmap, g, width, height, pixel)
    downsamples = [1]
    while max(width, height) // (downsamples[-1] * 2) >= 256:
        downsamples.append(downsamples[-1] * 2)

    def tile(ds, y, x, h, w):
        block = image[y * ds : (y + h) * ds, x * ds : (x + w) * ds]
        if ds == 1:
            return block
        full = np.full((h * ds, w * ds, 3), 255, np.uint8)
        full[: block.shape[0], : block.shape[1]] = block
        return (full.reshape(h, ds, w, ds, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)

    mpp = p.model_mpp * pixel
    with atomic_path(out / NAME, suffix=".tif") as tmp:
        write_pyramid(tmp, (height, width), mpp, downsamples, tile)
    return {"heatmap_tiff": {"mpp": mpp, "size": [width, height], "levels": len(downsamples)}}
