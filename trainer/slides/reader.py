"""Slide readers: a pyramid of levels, each read as uint8 RGB regions, whatever the file format.

Two readers, and "auto" (the default) to choose between them per file:
  openslide  every format OpenSlide reads (Aperio SVS, Hamamatsu, MIRAX, Philips, generic tiled TIFF, ...);
  tifffile   TIFFs: tiled pyramids (JPEG, YCbCr JPEG, JPEG 2000 and Aperio's J2K, Deflate, LZW, ... tiles; levels
             as pages or SubIFDs; Aperio, OME and other layouts tifffile knows) and plain strip TIFFs, which
             are decoded whole when they fit in WHOLE_LEVEL_MAX_BYTES. Label, macro and thumbnail images are
             not levels. RGBA becomes RGB on white; greyscale, palette and 16-bit images are refused.
  auto       OpenSlide where it opens and reads the file, else tifffile.

slide = open_slide("x.svs")                # every level probed; SlideError (exit 2) naming the file and why
region = slide.read(level, x, y, w, h)     # outside the level is white, like glass
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re

import numpy as np

from trainer import errors

READERS = ("auto", "openslide", "tifffile")
DEFAULT_READER = "auto"  # OpenSlide first: the faster where both read a file (bench/RESULTS.md)
WHOLE_LEVEL_MAX_BYTES = 2 * 2**30  # a level without tiles is decoded whole into memory; larger ones are refused
MAX_MPP = 10.0  # um/px; a coarser level 0 is a photo's dpi (72, 96, 300), not a microscope scan

# tifffile's names for files whose pyramid it assembles itself; other kinds (svs, ome, ...) follow a known layout.
_GENERIC_KINDS = ("generic", "uniform", "shaped")


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


def _plausible_mpp(mpp: float | None) -> float | None:
    return mpp if mpp and 0 < mpp <= MAX_MPP else None


class OpenSlideReader(Slide):
    """Every format OpenSlide reads (Aperio, Hamamatsu, MIRAX, generic tiled TIFF, ...), via openslide-bin."""

    def __init__(self, path: str):
        import openslide

        self._errors = (openslide.OpenSlideError,)
        try:
            self._slide = openslide.OpenSlide(path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(f"{path}: not a slide format OpenSlide reads") from None
        except openslide.OpenSlideError as e:
            raise SlideError(f"{path}: OpenSlide cannot open it: {e}") from None
        self.path = path
        # OpenSlide shows a greyscale TIFF as grey RGB; the models need colour, so it is refused as tifffile does.
        why = _greyscale(path) if self._slide.properties.get("openslide.vendor") == "generic-tiff" else None
        if why:
            self._slide.close()
            raise SlideError(f"{path}: level 0 is {why}")
        self.level_dimensions = [tuple(d) for d in self._slide.level_dimensions]
        self.level_downsamples = [float(d) for d in self._slide.level_downsamples]
        mpp = self._slide.properties.get("openslide.mpp-x")
        self.mpp = _plausible_mpp(float(mpp) if mpp else None)

    def _read(self, level, x, y, w, h):
        ds = self.level_downsamples[level]
        try:
            rgba = np.asarray(self._slide.read_region((round(x * ds), round(y * ds)), level, (w, h)))
        except self._errors as e:
            raise SlideError(f"{self.path}: level {level} cannot be read at ({x}, {y}): {e}") from None
        # Transparent = no data (outside the scanned area): white, like the glass around tissue.
        return _on_white(rgba[..., :3], rgba[..., 3], premultiplied=False)

    def close(self):
        self._slide.close()


class TiffReader(Slide):
    """TIFF pyramids through tifffile: tiles decoded one by one; a level without tiles decoded whole, once."""

    def __init__(self, path: str):
        import tifffile

        self.path = path
        self._whole: dict[int, np.ndarray] = {}
        with _tifffile_errors() as logged:
            try:
                self._tif = tifffile.TiffFile(path)
            except Exception as e:  # noqa: BLE001 - tifffile raises many kinds for a file that is not a TIFF
                raise SlideError(f"{path}: not a slide (tifffile: {e})") from None
            try:
                pages = _levels(self._tif)
            except Exception as e:  # noqa: BLE001 - a damaged file fails anywhere in tifffile's parsing
                self._tif.close()
                raise SlideError(f"{path}: damaged TIFF: tifffile cannot list its images ({e})") from None
        try:
            if logged:
                # tifffile logs a broken IFD chain and goes on with the images before it: a truncated file.
                size = os.path.getsize(path)
                raise SlideError(f"{path}: truncated or damaged TIFF ({size:,} bytes): {logged[0]}")
            for i, page in enumerate(pages):
                self._check(i, page)
        except SlideError:
            self._tif.close()
            raise
        self._pages = pages
        w0, h0 = pages[0].imagewidth, pages[0].imagelength
        self.level_dimensions = [(p.imagewidth, p.imagelength) for p in pages]
        # OpenSlide's convention, so both readers give one level the same downsample.
        self.level_downsamples = [(w0 / p.imagewidth + h0 / p.imagelength) / 2 for p in pages]
        self.mpp = _plausible_mpp(_tiff_mpp(pages[0]))

    def _check(self, level: int, page) -> None:
        """SlideError unless `page` is 8-bit RGB(A) or JPEG YCbCr, complete in the file and, untiled, small enough."""
        why = _unsupported(page)
        if why:
            raise SlideError(f"{self.path}: level {level} is {why}")
        size = self._tif.filehandle.size
        end = max((o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n), default=0)
        if end > size:
            raise SlideError(
                f"{self.path}: truncated: level {level}'s pixels end at byte {end:,} but the file has {size:,} bytes"
            )
        if not self._tiled(page):
            decoded = page.imagewidth * page.imagelength * page.samplesperpixel
            if decoded > WHOLE_LEVEL_MAX_BYTES:
                raise SlideError(
                    f"{self.path}: level {level} ({page.imagewidth}x{page.imagelength}) has no tiles and is "
                    f"{decoded / 2**30:.1f} GiB decoded, more than the {WHOLE_LEVEL_MAX_BYTES / 2**30:g} GiB read "
                    "whole; convert it to a tiled pyramid (vips tiffsave --tile --pyramid)"
                )

    @staticmethod
    def _tiled(page) -> bool:
        return bool(page.is_tiled) and page.planarconfig == 1

    def _read(self, level, x, y, w, h):
        page = self._pages[level]
        if not self._tiled(page):
            return self._whole_level(level)[y : y + h, x : x + w]
        tw, th = page.tilewidth, page.tilelength
        per_row = math.ceil(page.imagewidth / tw)
        out = np.empty((h, w, 3), np.uint8)
        for ty in range(y // th, (y + h - 1) // th + 1):
            for tx in range(x // tw, (x + w - 1) // tw + 1):
                tile = self._tile(level, page, ty * per_row + tx)
                ax0, ay0 = max(x, tx * tw), max(y, ty * th)
                ax1, ay1 = min(x + w, (tx + 1) * tw), min(y + h, (ty + 1) * th)
                out[ay0 - y : ay1 - y, ax0 - x : ax1 - x] = tile[
                    ay0 - ty * th : ay1 - ty * th, ax0 - tx * tw : ax1 - tx * tw
                ]
        return out

    def _tile(self, level: int, page, index: int) -> np.ndarray:
        th, tw = page.tilelength, page.tilewidth
        count = page.databytecounts[index]
        if count == 0:  # a tile never written: TIFF's way of saying no data, which is glass
            return np.full((th, tw, 3), 255, np.uint8)
        try:
            fh = self._tif.filehandle
            fh.seek(page.dataoffsets[index])
            data = fh.read(count)
            if len(data) != count:
                raise OSError("the file ends inside this tile")
            tile = page.decode(data, index, jpegtables=page.jpegtables)[0]
            tile = tile.reshape(th, tw, -1)
        except Exception as e:  # noqa: BLE001 - every decoder's failure is a bad slide, named below
            raise SlideError(f"{self.path}: level {level} tile {index} cannot be read: {e}") from None
        return self._rgb(page, tile)

    def _whole_level(self, level: int) -> np.ndarray:
        if level not in self._whole:
            page = self._pages[level]
            try:
                pixels = page.asarray()
            except Exception as e:  # noqa: BLE001 - every decoder's failure is a bad slide, named below
                raise SlideError(f"{self.path}: level {level} cannot be read: {e}") from None
            if page.planarconfig == 2:  # separate planes: (samples, h, w)
                pixels = np.moveaxis(pixels, 0, -1)
            self._whole[level] = self._rgb(page, pixels.reshape(page.imagelength, page.imagewidth, -1))
        return self._whole[level]

    @staticmethod
    def _rgb(page, pixels: np.ndarray) -> np.ndarray:
        if pixels.shape[-1] == 3:
            return pixels
        # TIFF ExtraSamples: 1 = alpha premultiplied into the colour, 2 = plain alpha, 0 = not alpha at all.
        kind = int(page.extrasamples[0]) if len(page.extrasamples) else 0
        if kind not in (1, 2):
            return pixels[..., :3]
        return _on_white(pixels[..., :3], pixels[..., 3], premultiplied=kind == 1)

    def close(self):
        self._whole.clear()
        self._tif.close()


def _on_white(rgb: np.ndarray, alpha: np.ndarray, premultiplied: bool) -> np.ndarray:
    """Composites (h, w, 3) colour with (h, w) alpha over white."""
    if alpha.min() == 255:
        return rgb
    a = alpha[..., None].astype(np.float32) / 255.0
    colour = rgb.astype(np.float32) if premultiplied else rgb * a
    return np.clip(colour + 255.0 * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)


@contextlib.contextmanager
def _tifffile_errors():
    """Collects the errors tifffile logs (and keeps them off stderr): it logs a broken file and goes on."""
    logged: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        logged.append(record.getMessage())
        return False

    logger = logging.getLogger("tifffile")
    logger.addFilter(keep)
    try:
        yield logged
    finally:
        logger.removeFilter(keep)


def _unsupported(page) -> str | None:
    """Why `page` cannot be a slide level, or None: 8-bit RGB(A) and JPEG-family YCbCr are read."""
    photometric = int(page.photometric)
    samples = page.samplesperpixel
    if photometric in (0, 1):
        return f"greyscale (PhotometricInterpretation {page.photometric.name}), not RGB"
    if photometric == 3:
        return "a palette image (PhotometricInterpretation PALETTE), not RGB"
    if photometric == 6 and int(page.compression) not in (6, 7, 33003):
        return f"YCbCr without JPEG compression ({page.compression.name}): tifffile does not convert it to RGB"
    if photometric not in (2, 6):
        return f"PhotometricInterpretation {page.photometric.name}, not RGB"
    if samples not in (3, 4) or page.dtype != np.uint8:
        return f"{samples} samples of {page.bitspersample} bits ({page.dtype}) a pixel, not 8-bit RGB or RGBA"
    return None


def _greyscale(path: str) -> str | None:
    """Why the TIFF at `path` is refused when its first image is greyscale, else None."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
    except Exception:  # noqa: BLE001 - OpenSlide reads what tifffile cannot parse: nothing to add to its verdict
        return None
    return _unsupported(page) if int(page.photometric) in (0, 1) else None


def _levels(tif) -> list:
    """The pyramid's pages, finest first; associated images (label, macro, thumbnail) are left out."""
    series = tif.series[0]
    if series.kind not in _GENERIC_KINDS:
        return [level.keyframe for level in series.levels]
    # tifffile joins levels only when every step has the same factor (1, 4, 16, not 1, 4, 32): assemble them here.
    base = series.keyframe
    w0, h0 = base.imagewidth, base.imagelength
    fmt = (base.photometric, base.samplesperpixel, base.bitspersample, bool(base.is_tiled))
    found = {(w0, h0): base}
    for s in tif.series:
        for level in s.levels:
            p = level.keyframe
            w, h = p.imagewidth, p.imagelength
            if (w, h) in found or not (0 < w < w0 and 0 < h < h0):
                continue
            # A level is the base downsampled: same pixels, same tiling (thumbnails are strips, labels the wrong shape).
            same_shape = abs(h0 * w / w0 - h) <= 1 or abs(w0 * h / h0 - w) <= 1
            if same_shape and (p.photometric, p.samplesperpixel, p.bitspersample, bool(p.is_tiled)) == fmt:
                found[(w, h)] = p
    return sorted(found.values(), key=lambda p: -p.imagewidth)


def _tiff_mpp(page) -> float | None:
    """Level 0's um/px: Aperio's "MPP = x" in the description, else the resolution tags (cm or inch)."""
    match = re.search(r"\bMPP\s*=\s*([0-9.]+)", page.description or "")
    if match:
        return float(match.group(1))
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    num, den = tags["XResolution"].value
    unit = int(tags["ResolutionUnit"].value)
    if not num or not den or unit not in (2, 3):  # 1 = no unit: a ratio, not a size
        return None
    return (25400.0 if unit == 2 else 10000.0) / (num / den)


def _probed(reader: type[Slide], path: str) -> Slide:
    """`reader` on `path`, its every level read at a corner, the centre and the far corner."""
    slide = reader(path)
    try:
        for level, (w, h) in enumerate(slide.level_dimensions):
            if w <= 0 or h <= 0:
                raise SlideError(f"{path}: level {level} is empty ({w}x{h})")
            for x, y in ((0, 0), (w // 2, h // 2), (w - 1, h - 1)):
                slide.read(level, x, y, 1, 1)
    except SlideError:
        slide.close()
        raise
    return slide


def open_slide(path: str, reader: str = DEFAULT_READER) -> Slide:
    """The slide at `path` through `reader` ("auto": OpenSlide where it reads the file, else tifffile); SlideError."""
    if not os.path.isfile(path):
        raise SlideError(f"--slide={path!r} is not a file")
    if reader not in READERS:
        raise SlideError(f"--reader={reader!r}: choose one of {', '.join(READERS)}")
    if reader != "auto":
        return _probed(OpenSlideReader if reader == "openslide" else TiffReader, path)
    try:
        return _probed(OpenSlideReader, path)
    except SlideError as e:
        refused = str(e).removeprefix(f"{path}: ")
    try:
        return _probed(TiffReader, path)
    except SlideError as e:
        same = str(e).removeprefix(f"{path}: ") == refused
        raise SlideError(str(e) if same else f"{e}; OpenSlide: {refused}") from None
