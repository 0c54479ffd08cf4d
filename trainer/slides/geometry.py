"""Where windows are on a slide: the window grid in model pixels, the level to read and resampling to it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from trainer.slides.reader import Slide

TILE_PIXELS = 2048  # the side of a tile in model pixels, before the window overlap; ~13 MB of RGB at 10x
THUMB_MAX = 2048  # the thumbnail's longest side, at most, where the slide allows it


@dataclasses.dataclass(frozen=True)
class Grid:
    """Windows of `patch` model pixels every `stride` model pixels; a model pixel is `scale` level-0 pixels.
    Window (i, j)'s corner is model pixel (j * stride - margin, i * stride - margin)."""

    scale: float  # level-0 pixels per model pixel (model mpp / slide mpp)
    patch: int
    stride: int
    rows: int
    cols: int
    margin: int = 0  # model pixels the first window starts before the slide's corner (outside is glass)

    @classmethod
    def of(cls, level0: tuple[int, int], scale: float, patch: int, stride: int) -> Grid:
        """The windows whose label squares (the centre stride x stride of each) tile the whole slide, so tissue at
        the slide's very edge gets a value too: the first window starts (patch - stride) / 2 before the corner."""
        # 1e-6: 0.972 / 0.243 is 4.000000000000001, and 2432 level-0 pixels are still 608 model pixels.
        width, height = (int(math.floor(d / scale + 1e-6)) for d in level0)
        if stride >= patch:  # label squares as large as the windows: windows that fit, as they are
            rows = (height - patch) // stride + 1 if height >= patch else 0
            cols = (width - patch) // stride + 1 if width >= patch else 0
            return cls(scale, patch, stride, max(rows, 0), max(cols, 0))
        return cls(scale, patch, stride, -(-height // stride), -(-width // stride), (patch - stride) // 2)

    def corner(self, index: int) -> int:
        """The model pixel where window row or column `index` starts."""
        return index * self.stride - self.margin

    @property
    def origin_level0(self) -> tuple[float, float]:
        """Window (0, 0)'s centre in level-0 pixels."""
        c = (self.patch / 2 - self.margin) * self.scale
        return (c, c)

    @property
    def stride_level0(self) -> float:
        return self.stride * self.scale


def choose_level(slide: Slide, scale: float) -> int:
    """The coarsest level not coarser than the model (5% slack: 0.97 um/px serves a 0.972 model)."""
    fine_enough = [i for i, d in enumerate(slide.level_downsamples) if d <= scale * 1.05]
    return max(fine_enough, key=lambda i: slide.level_downsamples[i]) if fine_enough else 0


def read_model_pixels(slide: Slide, level: int, scale: float, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The model-pixel region (x, y, w, h) (one model pixel = `scale` level-0 pixels) as uint8 RGB (h, w, 3)."""
    from PIL import Image

    f = scale / slide.level_downsamples[level]  # level pixels per model pixel
    if abs(f - 1.0) < 1e-6:
        return slide.read(level, x, y, w, h)
    lx0, ly0 = math.floor(x * f), math.floor(y * f)
    lx1, ly1 = math.ceil((x + w) * f), math.ceil((y + h) * f)
    region = slide.read(level, lx0, ly0, lx1 - lx0, ly1 - ly0)
    box = (x * f - lx0, y * f - ly0, (x + w) * f - lx0, (y + h) * f - ly0)
    # BOX averages the level pixels under each model pixel (area resampling, exact for integer factors).
    return np.asarray(Image.fromarray(region).resize((w, h), Image.BOX, box=box))


def read_thumbnail(slide: Slide, scale: float, pixel: float, width: int, height: int) -> np.ndarray:
    """(height, width, 3): one pixel per `pixel` model pixels, read from the coarsest level fine enough, by tiles."""
    level = choose_level(slide, scale * pixel)
    out = np.empty((height, width, 3), np.uint8)
    # Tiles of at most TILE_PIXELS level pixels a side: a slide without a coarse level streams here too.
    step = max(1, int(TILE_PIXELS * slide.level_downsamples[level] / (scale * pixel)))
    for ty in range(0, height, step):
        for tx in range(0, width, step):
            th, tw = min(step, height - ty), min(step, width - tx)
            out[ty : ty + th, tx : tx + tw] = read_model_pixels(slide, level, scale * pixel, tx, ty, tw, th)
    return out


def window_tissue(mask: np.ndarray, grid: Grid, k: int, area: str = "window") -> np.ndarray:
    """Share of tissue in each window's `area`, (rows, cols); the mask has k pixels per stride, from model pixel 0.

    area "window": the whole patch x patch window; "label": its centre stride x stride square, the part of the
    slide its value stands for (label squares tile the slide, so every tissue pixel lies in exactly one).
    """
    integral = np.pad(np.cumsum(np.cumsum(mask.astype(np.float64), 0), 1), ((1, 0), (1, 0)))
    start = -round(grid.margin * k / grid.stride)  # window 0's first row in mask pixels
    if area == "window":
        span = max(1, round(grid.patch * k / grid.stride))
    elif area == "label":
        start, span = start + round((grid.patch - grid.stride) / 2 * k / grid.stride), k
    else:
        raise ValueError(f"area={area!r}: window or label")

    def clipped(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        first = np.arange(n) * k + start
        return np.clip(first, 0, size), np.clip(first + span, 0, size)

    r0, r1 = clipped(grid.rows, mask.shape[0])
    c0, c1 = clipped(grid.cols, mask.shape[1])
    total = integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0]
    return total / float(span * span)  # beyond the slide's edge is glass
