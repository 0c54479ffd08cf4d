"""Whole-slide tumour heatmaps: a trained run (or an ensemble) over every tissue window of a slide.

    pcam-slide --model_dir=runs/baseline --slide=tumor_001.tif --output_dir=slides/tumor_001
    pcam-slide --model_dir runs/a runs/b --tta --slide=x.svs --output_dir=OUT --stride=32 --mpp=0.25
    pcam-slide --model_dir=runs/baseline --slide=x.svs --output_dir=OUT --inference=dense   # see --inference
    python -m trainer.slide ...        # the same command

A window is the model's input (96x96 for PCam runs) at the model's resolution (RUN_DIR/config.json "mpp",
else PCAM_MPP = 0.972 um/px, the Kaggle/PCam patches' 10x), moved by --stride model pixels (default 32:
the label covers the centre 32x32, so stride-32 windows tile the slide with label regions that do not
overlap). The slide's level nearest that resolution (never coarser) is read in large tiles and resampled;
the level-0 microns per pixel come from the slide's metadata or --mpp. Windows without tissue (Otsu on
the saturation of a low-resolution thumbnail, `tissue_mask`) are never predicted. How windows are predicted
(--inference):
  windows  each window through `trainer.inference.make_predict_fn`, the function `pcam-predict` uses, so a
           window predicts what the same pixels as a patch file would;
  dense    `trainer.dense`: the model's convolutions once over regions of up to DENSE_BLOCK^2 windows, each
           window's global pooling taken from the region's feature map. Several times faster at stride 32,
           where windows overlap, but a window's edges see its neighbours instead of zero padding;
  auto     (default) dense where the models allow it and DENSE_CHECK windows spread over the slide, predicted
           both ways first, differ by at most --dense_tolerance; else windows. summary.json says which and why.

OUT gets, each written atomically, summary.json last:
  heatmap.npy      float32 [rows, cols]; NaN where there is no tissue; [i, j] is the window centred at
                   level-0 pixel (x0 + j*s, y0 + i*s), (x0, y0) and s in summary.json "heatmap"
  tissue.png       the tissue mask (one pixel = THUMB_PIXEL model pixels; white = tissue)
  overlay.png      the thumbnail with the heatmap over it
  regions.geojson  polygons (level-0 pixels, QuPath imports them) of connected windows at or above the
                   threshold: --threshold, else the run's validation Youden threshold, else 0.5
  summary.json     slide_score (`slide_score`: the mean of the TOP_K highest window probabilities),
                   tumour_area_mm2 (label area of the windows at or above the threshold), windows,
                   seconds, mpp, model_dirs, threshold, inference (windows or dense), inference_reason,
                   dense_check (--inference=auto's measured differences)
OUT is locked while the command runs (pcam_tfds.core.folder_lock); progress is saved to OUT/.partial after
every tile, so the same command run again after an interruption continues where it stopped. A user's
mistake (a file that is not a slide, a truncated one, a folder that is not a run, no resolution) is one
line `error: ...` and exit status 2, before anything is written to OUT.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
from absl import flags
from etils import epath

from trainer import errors, run_folder

PCAM_MPP = 0.972  # um/px of the Kaggle/PCam patches (Camelyon16 level 2 of 0.243 um/px scans)
TOP_K = 10  # slide score: the mean of the TOP_K highest window probabilities (one window can be a fluke)
READERS = ("openslide", "tifffile")
DEFAULT_READER = "openslide"  # bench/RESULTS.md, issue 24: the faster of the two on the same regions
TILE_PIXELS = 2048  # the side of a tile in model pixels, before the window overlap; ~13 MB of RGB at 10x
THUMB_MAX = 2048  # the thumbnail's longest side, at most, where the slide allows it
SATURATION_FLOOR = 0.05  # below this no pixel is tissue, whatever Otsu says (an empty, white slide)
PARTIAL_DIR = ".partial"
SAVE_EVERY = 5.0  # seconds between checkpoints of the heatmap
INFERENCE = ("auto", "dense", "windows")
DENSE_TOLERANCE = 0.02  # --inference=auto uses dense inference where it moves no checked window by more
DENSE_CHECK = 256  # windows spread over the slide predicted both ways by --inference=auto
DENSE_BLOCK = 32  # windows per side of one dense region: 1,088 model pixels, ~150 MB for the baseline's conv1
FILES = ("heatmap.npy", "tissue.png", "overlay.png", "regions.geojson", "summary.json")


class SlideError(errors.UsageError):
    """The slide cannot be used: the message names the file and the problem (a user's mistake, exit 2)."""


# ---------------------------------------------------------------------------------------------------- readers


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


def write_pyramid(
    path, shape: tuple[int, int], mpp: float | None, downsamples, tile_fn, tile: int = 256, compression="zlib"
) -> None:
    """A tiled, Deflate-compressed pyramidal TIFF that OpenSlide (generic-tiff) and tifffile read.

    shape: level 0's (height, width); downsamples: integers, 1 first; tile_fn(downsample, y, x, h, w) -> uint8
    (h, w, 3) gives the pixels of a level tile by tile, so a slide far larger than memory can be written
    (bench/bench_slide.py). mpp None writes no resolution; compression None writes raw tiles (fast, large).
    """
    import tifffile

    height, width = shape
    with tifffile.TiffWriter(str(path), bigtiff=height * width * 3 > 2**31) as tif:
        for n, ds in enumerate(downsamples):
            h, w = height // ds, width // ds

            def tiles(ds=ds, h=h, w=w):
                for y in range(0, h, tile):
                    for x in range(0, w, tile):
                        block = np.full((tile, tile, 3), 255, np.uint8)
                        th, tw = min(tile, h - y), min(tile, w - x)
                        block[:th, :tw] = tile_fn(ds, y, x, th, tw)
                        yield block

            extra = {} if mpp is None else {"resolution": (1e4 / (mpp * ds),) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(
                tiles(),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                compressionargs={"level": 1} if compression == "zlib" else None,
                subfiletype=0 if n == 0 else 1,
                **extra,
            )


# ---------------------------------------------------------------------------------------------------- geometry


@dataclasses.dataclass(frozen=True)
class Grid:
    """Windows of `patch` model pixels every `stride` model pixels; a model pixel is `scale` level-0 pixels."""

    scale: float  # level-0 pixels per model pixel (model mpp / slide mpp)
    patch: int
    stride: int
    rows: int
    cols: int

    @classmethod
    def of(cls, level0: tuple[int, int], scale: float, patch: int, stride: int) -> Grid:
        # 1e-6: 0.972 / 0.243 is 4.000000000000001, and 2432 level-0 pixels are still 608 model pixels.
        width, height = (int(math.floor(d / scale + 1e-6)) for d in level0)
        rows = (height - patch) // stride + 1 if height >= patch else 0
        cols = (width - patch) // stride + 1 if width >= patch else 0
        return cls(scale, patch, stride, max(rows, 0), max(cols, 0))

    @property
    def origin_level0(self) -> tuple[float, float]:
        c = self.patch / 2 * self.scale
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


# ---------------------------------------------------------------------------------------------------- tissue


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


def window_tissue(mask: np.ndarray, grid: Grid, k: int) -> np.ndarray:
    """Share of tissue in each window, (rows, cols); the mask has k pixels per stride."""
    integral = np.pad(np.cumsum(np.cumsum(mask.astype(np.float64), 0), 1), ((1, 0), (1, 0)))
    span = max(1, round(grid.patch * k / grid.stride))
    r0 = np.arange(grid.rows) * k
    c0 = np.arange(grid.cols) * k
    r1 = np.minimum(r0 + span, mask.shape[0])
    c1 = np.minimum(c0 + span, mask.shape[1])
    total = integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0]
    area = (r1 - r0)[:, None] * (c1 - c0)[None, :]
    return total / np.maximum(area, 1)


# ---------------------------------------------------------------------------------------------------- runs


def run_mpp(run_dir: str) -> float:
    """The um/px a run's model expects: RUN_DIR/config.json "mpp" where it records one, else PCAM_MPP."""
    path = epath.Path(run_dir) / run_folder.CONFIG_FILE
    if path.exists():
        try:
            value = json.loads(path.read_text()).get("mpp")
        except (json.JSONDecodeError, AttributeError) as e:
            raise errors.UsageError(f"{path}: not a run's config ({e})") from None
        if value is not None:
            return float(value)
    return PCAM_MPP


def check_run(run_dir: str) -> None:
    """ValueError naming the file when `run_dir` is not a finished run folder."""
    folder = epath.Path(run_dir)
    if not folder.is_dir():
        raise errors.UsageError(f"--model_dir={run_dir!r} is not a folder")
    if not (folder / run_folder.MODEL_FILE).exists():
        raise errors.UsageError(
            f"{folder / run_folder.MODEL_FILE} does not exist: {run_dir!r} is not a finished trainer run folder"
        )


def default_threshold(model_dirs: tuple[str, ...]) -> tuple[float, str]:
    """(threshold, where it comes from): one run's validation Youden threshold, else 0.5."""
    from trainer import calibration

    if len(model_dirs) == 1:
        try:
            youden = calibration.validation_thresholds(model_dirs[0]).get("youden")
        except calibration.NotHeldOut:
            youden = None
        if youden is not None:
            return youden, f"validation Youden threshold of {model_dirs[0]}"
    return 0.5, "0.5 (no single held-out run with a validation Youden threshold)"


# ---------------------------------------------------------------------------------------------------- outputs


def slide_score(heatmap: np.ndarray, k: int = TOP_K) -> float | None:
    """The mean of the k highest window probabilities (all of them if fewer); None without tissue."""
    values = heatmap[np.isfinite(heatmap)]
    if values.size == 0:
        return None
    return float(np.sort(values)[-k:].mean())


def region_polygons(above: np.ndarray, grid: Grid) -> list[list[list[list[float]]]]:
    """GeoJSON Polygon coordinates of each 4-connected region of `above` (rows, cols), in level-0 pixels.

    Each window stands for its label square (stride x stride model pixels around its centre); a region is
    the union of its squares: exterior ring counter-clockwise, holes after it, every ring closed.
    """
    from scipy import ndimage

    labels, count = ndimage.label(above)
    x0, y0 = grid.origin_level0
    s = grid.stride_level0
    polygons = []
    for region in range(1, count + 1):
        rings = _boundary_rings(labels == region)
        rings.sort(key=lambda r: -abs(_area(r)))
        coords = []
        for ring in rings:
            # vertex (c, r) of the cell lattice: the corner between windows; window (i, j) spans c in [j, j+1].
            coords.append([[x0 + (c - 0.5) * s, y0 + (r - 0.5) * s] for c, r in ring])
        polygons.append(coords)
    return polygons


def _boundary_rings(cells: np.ndarray) -> list[list[tuple[int, int]]]:
    """Closed rings of (col, row) lattice vertices around the True cells, each edge once, cells on the left
    (image axes: y down), so exteriors and holes come out with opposite orientations."""
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    padded = np.pad(cells, 1)
    rs, cs = np.nonzero(cells)
    for r, c in zip(rs.tolist(), cs.tolist()):
        pr, pc = r + 1, c + 1
        if not padded[pr - 1, pc]:  # top edge, going right-to-left keeps the cell on the left (y down)
            edges.setdefault((c + 1, r), []).append((c, r))
        if not padded[pr, pc - 1]:  # left edge, downwards
            edges.setdefault((c, r), []).append((c, r + 1))
        if not padded[pr + 1, pc]:  # bottom edge, left-to-right
            edges.setdefault((c, r + 1), []).append((c + 1, r + 1))
        if not padded[pr, pc + 1]:  # right edge, upwards
            edges.setdefault((c + 1, r + 1), []).append((c + 1, r))
    rings = []
    while edges:
        start = next(iter(edges))
        ring = [start]
        prev, here = None, start
        while True:
            outs = edges[here]
            if len(outs) > 1 and prev is not None:  # a pinch: turn so the ring keeps to its own cells
                dx, dy = here[0] - prev[0], here[1] - prev[1]
                outs.sort(key=lambda v: dx * (v[1] - here[1]) - dy * (v[0] - here[0]))
            nxt = outs.pop(0)
            if not outs:
                del edges[here]
            prev, here = here, nxt
            if here == start:
                break
            ring.append(here)
        rings.append(_merge_collinear(ring))
    return rings


def _merge_collinear(ring: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The ring's corners only (a unit edge per window side otherwise), closed: first vertex repeated last."""
    n = len(ring)
    corners = []
    for i in range(n):
        a, b, c = ring[i - 1], ring[i], ring[(i + 1) % n]
        if (b[0] - a[0]) * (c[1] - b[1]) - (b[1] - a[1]) * (c[0] - b[0]) != 0:
            corners.append(b)
    return [*corners, corners[0]]


def _area(ring) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:]))


def geojson(polygons, heatmap: np.ndarray, above: np.ndarray, threshold: float) -> dict:
    features = []
    for coords in polygons:
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                    "threshold": threshold,
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def overlay_image(thumbnail: np.ndarray, heatmap: np.ndarray, grid: Grid, k: int) -> np.ndarray:
    """The thumbnail (k pixels per stride) with the heatmap (matplotlib's inferno, half opaque) over its tissue."""
    from matplotlib import colormaps

    if heatmap.size == 0:
        return thumbnail
    colours = colormaps["inferno"](np.nan_to_num(heatmap, nan=0.0))[..., :3] * 255.0
    alpha = np.where(np.isfinite(heatmap), 0.5, 0.0)[..., None]
    colours = np.repeat(np.repeat(colours, k, 0), k, 1)
    alpha = np.repeat(np.repeat(alpha, k, 0), k, 1)
    # Window (i, j)'s label square starts patch/2 - stride/2 model pixels after the window's corner.
    offset = max(0, round((grid.patch / 2 - grid.stride / 2) * k / grid.stride))
    out = thumbnail.astype(np.float32)
    h = max(0, min(out.shape[0] - offset, colours.shape[0]))
    w = max(0, min(out.shape[1] - offset, colours.shape[1]))
    region = out[offset : offset + h, offset : offset + w]
    out[offset : offset + h, offset : offset + w] = region * (1 - alpha[:h, :w]) + colours[:h, :w] * alpha[:h, :w]
    return (out + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- command


@dataclasses.dataclass(frozen=True)
class SlideConfig:
    """What one pcam-slide run does; `check` rejects impossible values, naming the flag."""

    model_dirs: tuple[str, ...]
    slide: str
    output_dir: str
    tta: bool = False
    stride: int = 32
    mpp: float | None = None
    batch_size: int = 256
    threshold: float | None = None
    min_tissue: float = 0.25
    reader: str = DEFAULT_READER
    inference: str = "auto"
    dense_tolerance: float = DENSE_TOLERANCE

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
    dense: list | None = None  # trainer.dense.DenseModel per model, where the models allow it and it is wanted
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
    from trainer import inference

    for d in config.model_dirs:
        check_run(d)
    out = epath.Path(config.output_dir)
    if out.exists() and not out.is_dir():
        raise errors.UsageError(f"--output_dir={config.output_dir!r} is a file, not a folder")
    model_mpps = {run_mpp(d) for d in config.model_dirs}
    if len(model_mpps) > 1:
        raise errors.UsageError(
            f"the runs expect different resolutions ({sorted(model_mpps)} um/px): ensemble runs of one"
        )
    model_mpp = model_mpps.pop()
    slide = open_slide(config.slide, config.reader)
    mpp = config.mpp or slide.mpp
    if not mpp:
        raise SlideError(f"{config.slide}: the slide records no microns per pixel; give --mpp (level 0's um/px)")
    models = [inference.load_model(d) for d in config.model_dirs]
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
    mask = tissue_mask(thumbnail)
    tissue = (
        window_tissue(mask, grid, k) >= max(config.min_tissue, 1e-9)
        if grid.rows and grid.cols
        else np.zeros((grid.rows, grid.cols), bool)
    )
    if config.threshold is not None:
        threshold, source = config.threshold, "--threshold"
    else:
        threshold, source = default_threshold(config.model_dirs)
    tile_windows = max(1, (TILE_PIXELS - patch) // config.stride + 1)
    dense, dense_note = None, ""
    if config.inference != "windows":
        from trainer.dense import DenseModel, NotDense

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
        dense,
        dense_note,
    )


def _tile_pixels(p: Plan, tile: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """(model pixels of the tile, its window rows, its window cols)."""
    g, t = p.grid, p.tile_windows
    r, c = tile
    nr, nc = min(t, g.rows - r), min(t, g.cols - c)
    w, h = (nc - 1) * g.stride + g.patch, (nr - 1) * g.stride + g.patch
    pixels = read_model_pixels(p.slide, p.level, g.scale, c * g.stride, r * g.stride, w, h)
    return pixels, nr, nc


def _window_probs(p: Plan, predict, pixels: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((n, 2) window (row, col) in the tile, (n,) probabilities) of the tile's tissue windows, one by one in
    batches through `predict` (trainer.inference.make_predict_fn: what pcam-predict computes for a file)."""
    import tensorflow as tf

    g = p.grid
    where = np.argwhere(tissue)
    view = np.lib.stride_tricks.sliding_window_view(pixels, (g.patch, g.patch, 3))[:: g.stride, :: g.stride, 0]
    probs = [np.zeros([0], np.float32)]
    for b in range(0, len(where), p.config.batch_size):
        rows, cols = where[b : b + p.config.batch_size].T
        probs.append(predict(tf.constant(view[rows, cols], tf.float32)).numpy())
    return where, np.clip(np.concatenate(probs), 0.0, 1.0)


def _dense_probs(p: Plan, predict, pixels: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same as _window_probs through `predict` (trainer.dense.make_dense_fn), one region of at most
    DENSE_BLOCK x DENSE_BLOCK windows at a time, each cropped to the bounding box of its tissue windows."""
    import tensorflow as tf

    g = p.grid
    wheres, probs = [np.zeros((0, 2), np.int64)], [np.zeros([0], np.float32)]
    for br in range(0, tissue.shape[0], DENSE_BLOCK):
        for bc in range(0, tissue.shape[1], DENSE_BLOCK):
            block = tissue[br : br + DENSE_BLOCK, bc : bc + DENSE_BLOCK]
            if not block.any():
                continue
            rows, cols = np.flatnonzero(block.any(1)), np.flatnonzero(block.any(0))
            r0, r1, c0, c1 = br + rows[0], br + rows[-1] + 1, bc + cols[0], bc + cols[-1] + 1
            region = pixels[
                r0 * g.stride : (r1 - 1) * g.stride + g.patch, c0 * g.stride : (c1 - 1) * g.stride + g.patch
            ]
            grid = predict(tf.constant(region, tf.float32)).numpy()
            where = np.argwhere(tissue[r0:r1, c0:c1])
            wheres.append(where + np.array([r0, c0]))
            probs.append(grid[where[:, 0], where[:, 1]])
    return np.concatenate(wheres), np.clip(np.concatenate(probs), 0.0, 1.0)


def dense_check(p: Plan, windows_fn, dense_fn) -> dict:
    """Up to DENSE_CHECK tissue windows spread evenly over the slide, each predicted alone (as pcam-predict
    would) and densely amid its neighbours (the region of the 3x3 windows around it, which holds what its
    feature map sees beyond its edges): the numbers --inference=auto decides on, kept in summary.json."""
    import tensorflow as tf

    g = p.grid
    where = np.argwhere(p.tissue)
    pick = where[np.unique(np.linspace(0, len(where) - 1, min(DENSE_CHECK, len(where))).round().astype(int))]
    alone, amid = [], []
    for i, j in pick.tolist():
        r0, c0 = max(i - 1, 0), max(j - 1, 0)
        r1, c1 = min(i + 2, g.rows), min(j + 2, g.cols)
        w, h = (c1 - c0 - 1) * g.stride + g.patch, (r1 - r0 - 1) * g.stride + g.patch
        region = read_model_pixels(p.slide, p.level, g.scale, c0 * g.stride, r0 * g.stride, w, h)
        amid.append(float(dense_fn(tf.constant(region, tf.float32))[i - r0, j - c0]))
        y, x = (i - r0) * g.stride, (j - c0) * g.stride
        alone.append(region[y : y + g.patch, x : x + g.patch])
    exact = [
        windows_fn(tf.constant(np.stack(alone[b : b + p.config.batch_size]), tf.float32)).numpy()
        for b in range(0, len(alone), p.config.batch_size)
    ]
    diff = np.abs(np.clip(np.array(amid), 0.0, 1.0) - np.clip(np.concatenate(exact), 0.0, 1.0))
    return {
        "windows": int(len(pick)),
        "max_abs_diff": round(float(diff.max()), 6),
        "mean_abs_diff": round(float(diff.mean()), 6),
        "tolerance": p.config.dense_tolerance,
    }


class _Checkpoint:
    """OUT/.partial/{heatmap.npy, state.json}: the heatmap so far, how many tiles it holds, and how it was
    computed (the inference mode --inference=auto chose, kept so that a continued run computes the same way)."""

    def __init__(self, out: epath.Path, identity: dict):
        self.folder = out / PARTIAL_DIR
        self.identity = identity

    def load(self, shape) -> tuple[np.ndarray, int, dict | None, str]:
        fresh = np.full(shape, np.nan, np.float32)
        state_path, heat_path = self.folder / "state.json", self.folder / "heatmap.npy"
        if not state_path.exists() or not heat_path.exists():
            return fresh, 0, None, ""
        try:
            state = json.loads(state_path.read_text())
            heatmap = np.load(str(heat_path))
        except (OSError, ValueError):
            return fresh, 0, None, "the saved progress is unreadable: starting over"
        if state.get("identity") != self.identity or heatmap.shape != tuple(shape):
            return fresh, 0, None, "the saved progress is of another slide or other settings: starting over"
        done = int(state["tiles_done"])
        return heatmap.astype(np.float32), done, state.get("inference"), f"continuing after tile {done}"

    def save(self, heatmap: np.ndarray, tiles_done: int, inference: dict | None) -> None:
        from pcam_tfds.core.folder_lock import atomic_path, atomic_write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "heatmap.npy", suffix=".npy") as tmp:
            np.save(str(tmp), heatmap)
        state = {"identity": self.identity, "tiles_done": tiles_done, "inference": inference}
        atomic_write_text(self.folder / "state.json", json.dumps(state))

    def remove(self) -> None:
        for name in ("state.json", "heatmap.npy"):
            path = self.folder / name
            if path.exists():
                path.unlink()
        if self.folder.exists():
            self.folder.rmdir()


def compute_heatmap(
    p: Plan, checkpoint: _Checkpoint | None = None, emit=None, after_tile=None
) -> tuple[np.ndarray, dict]:
    """(heatmap, how it was computed) for plan `p`, tile by tile, the next tile read while this one is
    predicted; saved to `checkpoint` every SAVE_EVERY seconds; `after_tile(n)` (tests) is called after tile n
    is saved.

    How: {"mode": "windows" | "dense", "reason": ..., "check": dense_check's numbers or None}. With
    --inference=auto and models that allow it, DENSE_CHECK windows spread over the slide are predicted both
    ways first; dense inference is used if none of them moved by more than --dense_tolerance.
    """
    from pcam_tfds.core.progress import Progress, print_line
    from trainer import inference

    emit = emit or print_line
    g = p.grid
    heatmap, start, how, note = (
        checkpoint.load((g.rows, g.cols))
        if checkpoint
        else (np.full((g.rows, g.cols), np.nan, np.float32), 0, None, "")
    )
    if note:
        emit(f"pcam-slide: {note}")
    tiles = p.tiles()
    total = int(p.tissue.sum())
    done_before = int(np.isfinite(heatmap).sum())
    windows_fn = inference.make_predict_fn(p.models, p.config.tta)
    dense_fn = None
    if p.dense:
        from trainer.dense import make_dense_fn

        dense_fn = make_dense_fn(p.dense, g.stride, p.config.tta)
    if how is None:
        if p.config.inference == "windows":
            how = {"mode": "windows", "reason": "--inference=windows", "check": None}
        elif not p.dense:
            how = {"mode": "windows", "reason": p.dense_note, "check": None}
        elif p.config.inference == "dense":
            how = {"mode": "dense", "reason": "--inference=dense", "check": None}
        elif p.tissue.any():
            check = dense_check(p, windows_fn, dense_fn)
            agrees = check["max_abs_diff"] <= p.config.dense_tolerance
            how = {
                "mode": "dense" if agrees else "windows",
                "reason": f"--inference=auto: {check['windows']} windows differ by at most {check['max_abs_diff']:.4f} "
                f"(mean {check['mean_abs_diff']:.4f}) between dense and per-window inference, "
                f"{'within' if agrees else 'over'} --dense_tolerance={p.config.dense_tolerance}",
                "check": check,
            }
            emit(f"pcam-slide: {how['reason']}: {how['mode']} inference")
    progress = Progress("pcam-slide", total=total - done_before, unit="windows", emit=emit)
    done, last_save = 0, time.monotonic()
    todo = [t for t in tiles[start:] if p.tissue[t[0] : t[0] + p.tile_windows, t[1] : t[1] + p.tile_windows].any()]
    skipped = {t: i for i, t in enumerate(tiles)}  # tile -> index, for the checkpoint count
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_tile_pixels, p, todo[0]) if todo else None
        for n, tile in enumerate(todo):
            pixels, nr, nc = pending.result()
            pending = pool.submit(_tile_pixels, p, todo[n + 1]) if n + 1 < len(todo) else None
            r, c = tile
            tissue = p.tissue[r : r + nr, c : c + nc]
            if how["mode"] == "dense":
                where, probs = _dense_probs(p, dense_fn, pixels, tissue)
            else:
                where, probs = _window_probs(p, windows_fn, pixels, tissue)
            heatmap[where[:, 0] + r, where[:, 1] + c] = probs
            done += len(probs)
            progress.update(done)
            if checkpoint and (time.monotonic() - last_save >= SAVE_EVERY or after_tile or n + 1 == len(todo)):
                checkpoint.save(heatmap, skipped[tile] + 1, how)
                last_save = time.monotonic()
            if after_tile:
                after_tile(n)
    progress.finish(done)
    return heatmap, how or {"mode": "windows", "reason": "no tissue: nothing predicted", "check": None}


def write_outputs(p: Plan, heatmap: np.ndarray, how: dict, seconds: float) -> dict:
    """Every file of OUT, each atomically, summary.json last; returns the summary."""
    from PIL import Image

    from pcam_tfds.core.folder_lock import atomic_path, atomic_write_text

    out = epath.Path(p.config.output_dir)
    g = p.grid
    with atomic_path(out / "heatmap.npy", suffix=".npy") as tmp:
        np.save(str(tmp), heatmap.astype(np.float32))
    with atomic_path(out / "tissue.png", suffix=".png") as tmp:
        Image.fromarray((p.mask * 255).astype(np.uint8)).save(str(tmp))
    with atomic_path(out / "overlay.png", suffix=".png") as tmp:
        Image.fromarray(overlay_image(p.thumbnail, heatmap, g, p.k)).save(str(tmp))
    above = np.nan_to_num(heatmap, nan=-1.0) >= p.threshold
    polygons = region_polygons(above, g)
    atomic_write_text(out / "regions.geojson", json.dumps(geojson(polygons, heatmap, above, p.threshold)) + "\n")
    label_mm = g.stride * p.model_mpp / 1000.0  # a window's label square: stride x stride model pixels
    summary = {
        "heatmap": {
            "origin_level0": list(g.origin_level0),
            "stride_level0": g.stride_level0,
            "shape": [g.rows, g.cols],
        },
        "slide_score": slide_score(heatmap),
        "slide_score_rule": f"mean of the {TOP_K} highest window probabilities",
        "tumour_area_mm2": float(above.sum() * label_mm**2),
        "threshold": p.threshold,
        "threshold_source": p.threshold_source,
        "regions": len(polygons),
        "windows": int(np.isfinite(heatmap).sum()),
        "seconds": round(seconds, 3),
        "mpp": p.mpp,
        "model_mpp": p.model_mpp,
        "level": p.level,
        "tta": p.config.tta,
        "inference": how["mode"],
        "inference_reason": how["reason"],
        "dense_check": how["check"],
        "slide": os.path.abspath(p.config.slide),
        "model_dirs": [os.path.abspath(d) for d in p.config.model_dirs],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def run_slide(config: SlideConfig, p: Plan | None = None, emit=None, after_tile=None) -> dict:
    """The command: plan (every check), lock OUT, heatmap (resumable), outputs; returns summary.json's contents."""
    from pcam_tfds.core.folder_lock import FolderLock
    from pcam_tfds.core.progress import print_line

    emit = emit or print_line
    p = p or plan(config)
    started = time.monotonic()
    try:
        with FolderLock(config.output_dir, "pcam-slide " + " ".join(sys.argv[1:])):
            checkpoint = _Checkpoint(epath.Path(config.output_dir), p.identity())
            heatmap, how = compute_heatmap(p, checkpoint, emit=emit, after_tile=after_tile)
            summary = write_outputs(p, heatmap, how, time.monotonic() - started)
            checkpoint.remove()
    finally:
        p.slide.close()
    if summary["windows"] == 0:
        emit(f"pcam-slide: no tissue found in {config.slide}: the heatmap is empty (all NaN)")
    return summary


def define_flags(flag_values: flags.FlagValues) -> None:
    fv = flag_values
    flags.DEFINE_multi_string(
        "model_dir", None, "Trainer run folder; repeat it (or list more after it) for an ensemble.", flag_values=fv
    )
    flags.DEFINE_string("slide", None, "Whole-slide image (any format OpenSlide reads).", flag_values=fv)
    flags.DEFINE_string(
        "output_dir", None, "Folder for heatmap.npy, summary.json, ... (locked while running).", flag_values=fv
    )
    flags.DEFINE_bool("tta", False, "Average over the 8 flips/90-degree rotations.", flag_values=fv)
    flags.DEFINE_integer("stride", 32, "Window step in model pixels.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("mpp", None, "Level-0 microns per pixel, for slides that do not record it.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 256, "Windows per prediction batch.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float(
        "threshold",
        None,
        "Tumour threshold of regions.geojson (default: the run's validation Youden threshold, else 0.5).",
        flag_values=fv,
    )
    flags.DEFINE_float("min_tissue", 0.25, "Share of tissue a window needs to be predicted.", flag_values=fv)
    flags.DEFINE_enum("reader", DEFAULT_READER, list(READERS), "Slide reader.", flag_values=fv)
    flags.DEFINE_enum(
        "inference",
        "auto",
        list(INFERENCE),
        "windows: each window through the model, as pcam-predict runs a file; dense: the convolutions once over "
        "each region, the windows pooled from it (trainer.dense; several times faster, not identical at window "
        "edges); auto: dense where the models allow it and it agrees with windows within --dense_tolerance on "
        "windows spread over the slide (summary.json: dense_check).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "dense_tolerance",
        DENSE_TOLERANCE,
        "--inference=auto: the largest probability difference on the checked windows that still allows dense.",
        flag_values=fv,
    )
    flags.mark_flags_as_required(["model_dir", "slide", "output_dir"], flag_values=fv)


def config_from_flags(f: flags.FlagValues, run_dirs: list[str]) -> SlideConfig:
    return SlideConfig(
        model_dirs=(*f.model_dir, *run_dirs),
        slide=f.slide,
        output_dir=f.output_dir,
        tta=f.tta,
        stride=f.stride,
        mpp=f.mpp,
        batch_size=f.batch_size,
        threshold=f.threshold,
        min_tissue=f.min_tissue,
        reader=f.reader,
        inference=f.inference,
        dense_tolerance=f.dense_tolerance,
    ).check()


def _report(summary: dict, config: SlideConfig) -> None:
    score = summary["slide_score"]
    print(
        f"wrote {config.output_dir}: {summary['windows']} windows, slide score "
        f"{'none (no tissue)' if score is None else f'{score:.4f}'}, tumour area {summary['tumour_area_mm2']:.3f} mm2, "
        f"{summary['regions']} regions at threshold {summary['threshold']:.4f}"
    )


def run(argv: list[str], emit=None, after_tile=None) -> dict:
    """The command in this process on its own FlagValues (tests); ValueError for a user's mistake."""
    fv = flags.FlagValues()
    define_flags(fv)
    run_dirs = fv(["pcam-slide", *argv])[1:]
    config = config_from_flags(fv, run_dirs)
    return run_slide(config, emit=emit, after_tile=after_tile)


def _main(argv: list[str]) -> int:
    config = config_from_flags(flags.FLAGS, argv[1:])
    summary = run_slide(config, plan(config))
    _report(summary, config)
    return 0


def main() -> None:
    """The console script `pcam-slide` (and `python -m trainer.slide`)."""
    define_flags(flags.FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
