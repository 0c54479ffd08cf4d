"""Slide readers: a pyramid of levels, each read as uint8 RGB regions, whatever the file format.

slide = open_slide("x.svs")                # OpenSlide, else tifffile (tiled or plain TIFF); SlideError if neither
region = slide.read(level, x, y, w, h)     # outside the level is white, like glass
"""

from __future__ import annotations

import math
import os

import numpy as np

from trainer import errors

READERS = ("openslide", "tifffile")
DEFAULT_READER = "openslide"  # the faster of the two on the same regions (bench/RESULTS.md, issue 24)


class SlideError(errors.UsageError):
    """The slide cannot be used: the message names the file and the problem (a user's mistake, exit 2)."""


class Slide:
    """A pyramid: level_dimensions [(w, h)], level_downsamples, mpp (level 0, None if unknown), read(level, ...)."""

    path: str
    level_dimensions: list[tuple[int, int]]
    level_downsamples: list[float]
    mpp: float | None

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """uint8 RGB (h, w, 3) at `level` from level pixel (x, y); outside the level is white."""
        x0, y0 = max(x, 0), max(y, 0)
        lw, lh = self.level_dimensions[level]
        x1, y1 = min(x + w, lw), min(y + h, lh)
        out = np.full((h, w, 3), 255, np.uint8)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class OpenSlideReader(Slide):
    """Every format OpenSlide reads (Aperio, Hamamatsu, MIRAX, generic tiled TIFF, ...), via openslide-bin."""

    def __init__(self, path: str):
        import openslide

        self._errors = (openslide.OpenSlideError,)
        try:
            self._slide = openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(f"{path}: not a slide OpenSlide can read (unsupported or not an image)") from None
        except openslide.OpenSlideError as e:
            raise SlideError(f"{path}: cannot be opened: {e}") from None
        self.path = path
        self.level_dimensions = [tuple(d) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        mpp = self._slide.properties.get("openslide.mpp-x")
        self.mpp = float(mpp) if mpp else None

    def _read(self, level, x, y, w, h):
        ds = self.level_downsamples[level]
        try:
            rgba = np.asarray(self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h)))
        except self._errors as e:
            raise SlideError(f"{self.path}: level {level} cannot be read at ({x}, {y}): {e}") from None
        rgb, alpha = rgba[..., :3], rgba[..., 3:]
        if alpha.min() == 255:
            return rgb
        # Transparent = no data (outside the scanned area): white, like the glass around tissue.
        a = alpha.astype(np.float32) / 255.0
        return (rgb * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)

    def close(self):
        self._slide.close()


class TiffReader(Slide):
    """Tiled pyramidal TIFF / OME-TIFF / SVS through tifffile: tiles decoded one by one, never a whole level."""

    def __init__(self, path: str):
        import tifffile

        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            pages = [level.keyframe for level in series.levels]
        except (tifffile.TiffFileError, OSError, IndexError, ValueError) as e:
            raise SlideError(f"{path}: not a TIFF slide tifffile can read: {e}") from None
        self.path = path
        self._pages = pages
        for i, page in enumerate(pages):
            if not page.is_tiled or page.samplesperpixel < 3 or page.planarconfig != 1:
                raise SlideError(f"{path}: level {i} is not tiled RGB (tifffile reads tiled, interleaved RGB only)")
        self.level_dimensions = [(p.imagewidth, p.imagelength) for p in pages]
        w0 = pages[0].imagewidth
        self.level_downsamples = [w0 / p.imagewidth for p in pages]
        self.mpp = _tiff_mpp(pages[0])

    def _read(self, level, x, y, w, h):
        page = self._pages[level]
        tw, th = page.tilewidth, page.tilelength
        per_row = math.ceil(page.imagewidth / tw)
        out = np.empty((h, w, 3), np.uint8)
        fh = self._tif.filehandle
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                index = ty * per_row + tx
                try:
                    fh.seek(page.dataoffsets[index])
                    data = fh.read(page.databytecounts[index])
                    if len(data) != page.databytecounts[index]:
                        raise OSError("the file ends inside this tile")
                    tile = page.decode(data, index, jpegtables=page.jpegtables)[0]
                except Exception as e:  # noqa: BLE001 - every decoder's failure is a bad slide, named below
                    raise SlideError(f"{self.path}: level {level} tile {index} cannot be read: {e}") from None
                tile = tile.reshape(th, tw, -1)[..., :3]
                ax0, ay0 = max(x, tx * tw), max(y, ty * th)
                ax1, ay1 = min(x + w, (tx + 1) * tw), min(y + h, (ty + 1) * th)
                out[ay0 - y : ay1 - y, ax0 - x : ax1 - x] = tile[
                    ay0 - ty * th : ay1 - ty * th, ax0 - tx * tw : ax1 - tx * tw
                ]
        return out

    def close(self):
        self._tif.close()


def _tiff_mpp(page) -> float | None:
    """Level 0's um/px: Aperio's "MPP = x" in the description, else the resolution tags (cm or inch)."""
    import re

    match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    if match:
        return float(match.group(1))
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    unit = int(tags["ResolutionUnit"].value)
    if not num or unit not in (2, 3):  # 1 = no unit: a ratio, not a size
        return None
    per_unit = num / den
    return (25400.0 if unit == 2 else 10000.0) / per_unit


def open_slide(path: str, reader: str = DEFAULT_READER) -> Slide:
    """The slide at `path` through `reader`, its every level probed (a corner and the centre read); SlideError."""
    if not os.path.isfile(path):
        raise SlideError(f"--slide={path!r} is not a file")
    if reader not in READERS:
        raise SlideError(f"--reader={reader!r}: choose one of {', '.join(READERS)}")
    slide = (OpenSlideReader if reader == "openslide" else TiffReader)(path)
    for level, (w, h) in enumerate(slide.level_dimensions):
        if w <= 0 or h <= 0:
            raise SlideError(f"{path}: level {level} is empty ({w}x{h})")
        for x, y in ((0, 0), (w // 2, h // 2), (w - 1, h - 1)):
            slide.read(level, x, y, 1, 1)
    return slide
