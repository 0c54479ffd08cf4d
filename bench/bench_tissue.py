"""The tissue mask (issue 38): tissue left without a heatmap value, glass and artefacts predicted, per method.

    python bench/bench_tissue.py --shared_data=../shared/data --min_tissue=0.25,0.1 [--look_dir=/tmp/tissue_look]

Synthetic slide thumbnails at pcam-slide's usual scale (8 model pixels, 7.8 um, per thumbnail pixel; k=4
pixels per 32-pixel stride) are made from real PCam patches (DATA/pcam_sample/SPLIT/*.jpg): each patch
is white-balanced to the slide's glass (its brightest unsaturated pixels become the glass colour, as if
every patch came from one scan), box-averaged 96 -> 12 pixels like geometry.read_thumbnail, and laid on a
12-pixel lattice aligned to the window grid, so patch (i, j)'s window is (3i, 3j). Tissue covers 2% to
98% of the slide, as one section or as blobs, from all patches or from the palest quartile only, on glass
(240, 240, 238) or a greyer (226, 226, 222), with noise, an illumination ramp of +-3 levels and dust;
some slides carry a black scan border, pen strokes on the glass (blue, green, black) and grey smudges;
two hold no tissue at all. tissue.py's constants were chosen on --split=train; report --split=test.

Per method and slide: the tissue patches whose window gets no value (window_tissue < --min_tissue),
tumour patches among them, glass windows predicted (no tissue, under a quarter artefact), artefact
windows predicted (no tissue, at least a quarter border, pen or smudge), time per thumbnail; and the two
measures a pathologist reads a heatmap by: tissue patches with tissue in their centre 32x32 left without a
value, and stained thumbnail pixels in the label square of no predicted window. Patches that are not tissue
themselves (glass or black at full resolution, or NOT_TISSUE_BY_EYE: not_tissue) count in neither.
The real slides in DATA/slides are masked too, compared with hand-made references (REFERENCES), and
saved beside their thumbnails under --look_dir.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CELL = 12  # thumbnail pixels per 96-pixel patch at 8 model pixels per thumbnail pixel
AREA = ["window"]  # what --min_tissue is a share of (geometry.window_tissue's area); set by --area
K = 4  # thumbnail pixels per 32-pixel stride
GLASS = (240.0, 240.0, 238.0)
GREY_GLASS = (226.0, 226.0, 222.0)
INKS = {"blue": (50, 80, 180), "green": (60, 150, 90), "black": (35, 35, 40)}
FRACTIONS = (0.02, 0.05, 0.25, 0.5, 0.75, 0.95, 0.98)


# -- patches -----------------------------------------------------------------------------------------


def load_patches(data_dir: Path, split: str, limit: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 (n, 96, 96, 3), labels (n,), ids): the first `limit` patches of pcam_sample/SPLIT by id."""
    from PIL import Image

    folder = data_dir / "pcam_sample" / split
    with open(data_dir / "pcam_sample" / f"{split}_labels.csv") as f:
        labels = {r["id"]: int(r["label"]) for r in csv.DictReader(f)}
    files = sorted(folder.glob("*.jpg"))[:limit]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
    return pixels, np.array([labels[p.stem] for p in files]), [p.stem for p in files]


# Patches that the pixel rules of not_tissue count as tissue but that are not, checked by eye (the id's start).
NOT_TISSUE_BY_EYE = {"e14add7e77": "a scan shadow: a grey blur, no cell"}


def stained_pixels(pixels: np.ndarray) -> np.ndarray:
    """bool (n, 96, 96): stained at full resolution (saturation > 0.15 or a channel < 180)."""
    from trainer.slides.tissue import saturation

    return (saturation(pixels) > 0.15) | (pixels.min(axis=-1) < 180)


def not_tissue(pixels: np.ndarray, ids: list[str]) -> np.ndarray:
    """bool (n,): patches that are glass (under 2% of pixels stained) or black (a quarter of pixels dark and
    grey: a scanner artefact), judged at full resolution, and those in NOT_TISSUE_BY_EYE."""
    from trainer.slides.tissue import saturation

    stained = stained_pixels(pixels).mean(axis=(1, 2))
    black = ((pixels.max(axis=-1) < 110) & (saturation(pixels) < 0.3)).mean(axis=(1, 2))
    by_eye = np.array([i[:10] in NOT_TISSUE_BY_EYE for i in ids])
    return (stained < 0.02) | (black >= 0.25) | by_eye


def stained_cells(pixels: np.ndarray) -> np.ndarray:
    """bool (n, 12, 12): thumbnail pixels of each patch at least a quarter stained at full resolution (the
    ground truth of "every tissue pixel gets a value")."""
    n = len(pixels)
    return stained_pixels(pixels).reshape(n, CELL, 8, CELL, 8).mean(axis=(2, 4)) >= 0.25


def own_glass(pixels: np.ndarray) -> np.ndarray:
    """(n, 3): each patch's glass, the median of its brightest 3% of pixels; NaN where that is not glass."""
    flat = pixels.reshape(len(pixels), -1, 3).astype(np.float32)
    bright = flat.mean(axis=-1)
    out = np.full((len(pixels), 3), np.nan, np.float32)
    for n in range(len(pixels)):
        top = flat[n][bright[n] >= np.percentile(bright[n], 97)]
        colour = np.median(top, axis=0)
        if colour.mean() >= 215 and (colour.max() - colour.min()) / colour.max() < 0.08:
            out[n] = colour
    return out


def to_thumbnail_cells(pixels: np.ndarray, glass: np.ndarray, glass_of: np.ndarray) -> np.ndarray:
    """(n, 12, 12, 3) float: each patch balanced to `glass`, then box-averaged 8 x 8 (area resampling)."""
    typical = np.nanmedian(glass_of, axis=0)
    source = np.where(np.isnan(glass_of), typical, glass_of)
    balanced = np.minimum(pixels.astype(np.float32) * (glass / source)[:, None, None, :], 255.0)
    n = len(pixels)
    return balanced.reshape(n, CELL, 8, CELL, 8, 3).mean(axis=(2, 4))


# -- slides ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scene:
    name: str
    fraction: float
    layout: str = "section"  # or "blobs"
    pale: bool = False  # the palest quartile of patches only
    glass: tuple = GLASS
    border: bool = False
    pen: bool = False
    smudge: bool = False
    cells: int = 32  # lattice side: the thumbnail is cells * 12 pixels square
    seed: int = 0


def scenes() -> list[Scene]:
    out = []
    for f in FRACTIONS:
        for layout in ("section", "blobs"):
            for pale in (False, True):
                seed = len(out)
                glass = GREY_GLASS if seed % 3 == 2 else GLASS
                out.append(Scene(f"{layout} {f:.0%}{' pale' if pale else ''}", f, layout, pale, glass, seed=seed))
    extra = [
        Scene("section 50% border+pen", 0.5, border=True, pen=True, smudge=True),
        Scene("blobs 5% border+pen", 0.05, "blobs", border=True, pen=True, smudge=True),
        Scene("blobs 25% pale pen", 0.25, "blobs", pale=True, pen=True, glass=GREY_GLASS),
        Scene("section 95% border", 0.95, border=True),
        Scene("blobs 2% pale border+pen", 0.02, "blobs", pale=True, border=True, pen=True, smudge=True),
        Scene("no tissue", 0.0, smudge=True),
        Scene("no tissue, border+pen", 0.0, border=True, pen=True, smudge=True, glass=GREY_GLASS),
    ]
    return out + [dataclasses.replace(s, seed=100 + i) for i, s in enumerate(extra)]


def smooth_noise(rng, shape, sigma) -> np.ndarray:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return field / max(field.std(), 1e-9)


def choose_cells(scene: Scene, rng, eligible: np.ndarray) -> np.ndarray:
    """bool (cells, cells): the lattice cells holding tissue, the `fraction` of eligible ones lowest in a score
    that is one noisy ellipse (section) or several noisy discs (blobs)."""
    n = scene.cells
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    noise = 0.15 * smooth_noise(rng, (n, n), 2.0)
    if scene.layout == "section":
        cy, cx = n / 2 + rng.uniform(-2, 2, 2)
        ry, rx = n / 2 * rng.uniform(0.7, 1.0, 2)
        score = np.hypot((yy - cy) / ry, (xx - cx) / rx) + noise
    else:
        centres = rng.uniform(2, n - 2, (int(rng.integers(3, 8)), 2))
        radii = rng.uniform(0.5, 1.5, len(centres))
        score = np.min([np.hypot(yy - c[0], xx - c[1]) / r for c, r in zip(centres, radii)], axis=0)
        score = score / n * 4 + noise
    score = np.where(eligible, score, np.inf)
    count = int(round(scene.fraction * eligible.sum()))
    chosen = np.zeros((n, n), bool)
    if count:
        chosen.flat[np.argsort(score, axis=None)[:count]] = True
    return chosen


def stroke(shape, rng, width) -> np.ndarray:
    """float (h, w) in [0, 1]: a soft pen stroke, an arc around the middle or a line across."""
    from scipy import ndimage
    from skimage.draw import line

    h, w = shape
    canvas = np.zeros(shape, bool)
    if rng.random() < 0.5:
        t = np.linspace(rng.uniform(0, np.pi), rng.uniform(np.pi, 2.5 * np.pi), 200)
        r = min(h, w) * rng.uniform(0.3, 0.46)
        ys = np.clip(h / 2 + r * np.sin(t), 0, h - 1).astype(int)
        xs = np.clip(w / 2 + r * np.cos(t), 0, w - 1).astype(int)
    else:
        ys = np.linspace(rng.uniform(0, h), rng.uniform(0, h), 200).clip(0, h - 1).astype(int)
        xs = np.linspace(0, w - 1, 200).astype(int)
    for y0, x0, y1, x1 in zip(ys[:-1], xs[:-1], ys[1:], xs[1:]):
        canvas[line(y0, x0, y1, x1)] = True
    thick = ndimage.binary_dilation(canvas, iterations=width // 2)
    return np.clip(ndimage.gaussian_filter(thick.astype(np.float32), 1.5), 0, 1)


@dataclasses.dataclass
class Slide:
    thumbnail: np.ndarray  # uint8 (h, w, 3)
    cells: list  # (i, j, patch index)
    tissue: np.ndarray  # bool (h, w): under a tissue patch
    blank: np.ndarray  # bool (h, w): under a patch that is not tissue itself (not_tissue)
    artefact: np.ndarray  # bool (h, w): border, pen, smudge (not tissue)
    stained: np.ndarray  # bool (h, w): thumbnail pixels of tissue patches at least a quarter stained


def make_slide(scene: Scene, thumbs: np.ndarray, blank: np.ndarray, pool: np.ndarray, stain: np.ndarray) -> Slide:
    from scipy import ndimage

    rng = np.random.default_rng(scene.seed)
    n = scene.cells
    size = n * CELL
    glass = np.array(scene.glass, np.float32)
    ramp = np.linspace(-3.0, 3.0, size)[None, :, None] * rng.choice([-1, 1])
    image = glass + ramp + rng.normal(0, 1.2, (size, size, 3))
    border = np.zeros((size, size), bool)
    if scene.border:
        width = int(rng.integers(10, 25))
        border[:width] = True
        if rng.random() < 0.5:
            border[:, -width:] = True
    border_cells = border.reshape(n, CELL, n, CELL).any(axis=(1, 3))
    chosen = choose_cells(scene, rng, ~border_cells)
    cells, tissue, blanks = [], np.zeros((size, size), bool), np.zeros((size, size), bool)
    stained = np.zeros((size, size), bool)
    for i, j in zip(*np.nonzero(chosen)):
        idx = int(rng.choice(pool))
        cells.append((int(i), int(j), idx))
        box = np.s_[i * CELL : (i + 1) * CELL, j * CELL : (j + 1) * CELL]
        image[box] = thumbs[idx] + rng.normal(0, 0.6, (CELL, CELL, 3))
        (blanks if blank[idx] else tissue)[box] = True
        if not blank[idx]:
            stained[box] = stain[idx]
    artefact = np.zeros((size, size), bool)
    if scene.smudge:
        for _ in range(int(rng.integers(2, 5))):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(8, 30)
            yy, xx = np.mgrid[0:size, 0:size]
            shade = rng.uniform(6, 18) * np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
            image -= shade[..., None]
            artefact |= shade > 4
    # Dust: grey specks of 1 to 3 pixels anywhere.
    specks = np.zeros((size, size), bool)
    specks[rng.integers(0, size, 60), rng.integers(0, size, 60)] = True
    specks = ndimage.binary_dilation(specks, iterations=1) & (rng.random((size, size)) < 0.7)
    image[specks] = rng.uniform(90, 190, (int(specks.sum()), 1))
    if scene.pen:
        for name in rng.choice(list(INKS), int(rng.integers(1, 3)), replace=False):
            alpha = stroke((size, size), rng, int(rng.integers(10, 24))) * rng.uniform(0.6, 0.95)
            alpha *= ~ndimage.binary_dilation(tissue | blanks, iterations=2)  # on the glass around tissue
            ink = np.array(INKS[name], np.float32) / 255.0
            image *= 1.0 - alpha[..., None] * (1.0 - ink)
            artefact |= alpha > 0.3
    if scene.border:
        soft = ndimage.gaussian_filter(border.astype(np.float32), 1.0)[..., None]
        image = image * (1 - soft) + soft * (14.0 + rng.normal(0, 3, (size, size, 1)))
        artefact |= border
    thumbnail = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Slide(thumbnail, cells, tissue, blanks, artefact & ~tissue & ~blanks, stained)


# -- methods -----------------------------------------------------------------------------------------


def old_otsu_saturation(rgb):
    """The mask before issue 38: Otsu on HSV saturation, at least 0.05 (the code as it was, 256 bins)."""
    from trainer.slides.tissue import saturation

    sat = saturation(rgb)
    hist, edges = np.histogram(sat, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    between = w0 * w1 * (m0 / np.maximum(w0, 1) - (m0[-1] - m0) / np.maximum(w1, 1)) ** 2
    return sat > max(float(edges[int(np.argmax(between)) + 1]), 0.05)


def otsu_grey(rgb):
    """TIAToolbox's OtsuTissueMasker: grey below Otsu's threshold of grey."""
    from skimage.color import rgb2gray
    from skimage.filters import threshold_otsu

    grey = rgb2gray(rgb)
    return grey < threshold_otsu(grey) if grey.min() < grey.max() else np.zeros(grey.shape, bool)


def otsu_grey_morphology(rgb, patch_pixels=CELL):
    """TIAToolbox MorphologicalMasker / histolab TissueMask: grey Otsu, dilation, small holes and objects out."""
    from skimage import morphology

    mask = morphology.dilation(otsu_grey(rgb), morphology.disk(1))
    mask = morphology.remove_small_holes(mask, max_size=patch_pixels**2)
    return morphology.remove_small_objects(mask, max_size=patch_pixels**2)


def otsu_saturation_bounded(rgb):
    """Otsu on saturation, held in [0.03, 0.08]: a glass/tissue range."""
    from skimage.filters import threshold_otsu

    from trainer.slides.tissue import saturation

    sat = saturation(rgb)
    t = threshold_otsu(sat) if sat.min() < sat.max() else 0.08
    return sat > float(np.clip(t, 0.03, 0.08))


def fixed_saturation_brightness(rgb):
    """slideflow's defaults per pixel: saturation at least 0.05 (grayspace) and brightness at most 230 (whitespace)."""
    from trainer.slides.tissue import saturation

    return (saturation(rgb) >= 0.05) & (rgb.astype(np.float32).mean(axis=-1) <= 230)


def glass_od(**switches):
    """trainer.slides.tissue.detect, or with one of its steps switched off (the table's ablation rows)."""
    from trainer.slides import tissue

    return lambda rgb: tissue.tissue_mask(rgb, CELL, **switches)[0]


DETECT = "glass OD (tissue.detect)"
METHODS = {
    "otsu_saturation (before)": old_otsu_saturation,
    "otsu_grey (TIAToolbox Otsu)": otsu_grey,
    "otsu_grey + morphology (TIAToolbox/histolab)": otsu_grey_morphology,
    "otsu_saturation in [0.03, 0.08]": otsu_saturation_bounded,
    "saturation >= 0.05, brightness <= 230 (slideflow)": fixed_saturation_brightness,
    "glass OD, one glass colour": glass_od(local_glass=False),
    "glass OD, no hysteresis": glass_od(hysteresis=False),
    "glass OD, no artefact rules": glass_od(rules=False),
    "glass OD, no morphology": glass_od(morphology=False),
    DETECT: glass_od(),
}


# -- measurement -------------------------------------------------------------------------------------


def grid_of(thumbnail):
    from trainer.slides.geometry import Grid

    h, w = thumbnail.shape[:2]
    return Grid.of((w * 8, h * 8), 1.0, 96, 32)


def measure(slide: Slide, mask: np.ndarray, labels: np.ndarray, min_tissue: float) -> dict:
    from trainer.slides.geometry import window_tissue

    grid = grid_of(slide.thumbnail)
    if AREA[0] == "both":  # the window's share, and some tissue in its label square
        keep = (window_tissue(mask, grid, K) >= min_tissue) & (window_tissue(mask, grid, K, "label") > 0)
    elif AREA[0] == "either":  # the window's share, or any tissue in its label square (plan.scanned)
        keep = (window_tissue(mask, grid, K) >= min_tissue) | (window_tissue(mask, grid, K, "label") > 0)
    else:
        keep = window_tissue(mask, grid, K, AREA[0]) >= min_tissue
    covered = window_tissue(slide.tissue | slide.blank, grid, K)
    art = window_tissue(slide.artefact, grid, K)
    glass = (covered == 0) & (art < 0.25)
    artefact = (covered == 0) & (art >= 0.25)
    tissue_cells = [(i, j, idx) for i, j, idx in slide.cells if slide.tissue[i * CELL, j * CELL]]
    # The window centred on patch (i, j) is (3i + 1, 3j + 1): Grid.of starts the windows 32 pixels early.
    missed = [labels[idx] for i, j, idx in tissue_cells if not keep[3 * i + 1, 3 * j + 1]]
    blanks = [keep[3 * i + 1, 3 * j + 1] for i, j, idx in slide.cells if slide.blank[i * CELL, j * CELL]]
    # The centre 32 x 32 of patch (i, j) is thumbnail pixels 4..8 of its cell: the part its label speaks of.
    central = [
        (i, j, idx)
        for i, j, idx in tissue_cells
        if slide.stained[i * CELL + 4 : i * CELL + 8, j * CELL + 4 : j * CELL + 8].any()
    ]
    # Thumbnail pixel (y, x) lies in the label square of window (y // K, x // K) (Grid.of's 32-pixel margin).
    ys, xs = np.nonzero(slide.stained)
    lost = ~keep[np.minimum(ys // K, keep.shape[0] - 1), np.minimum(xs // K, keep.shape[1] - 1)]
    return {
        "tissue": len(tissue_cells),
        "missed": len(missed),
        "central": len(central),
        "central_missed": sum(not keep[3 * i + 1, 3 * j + 1] for i, j, _ in central),
        "pixels": int(len(ys)),
        "pixels_missed": int(lost.sum()),
        "tumour": int(sum(labels[idx] for _, _, idx in tissue_cells)),
        "tumour_missed": int(sum(missed)),
        "glass": int(glass.sum()),
        "glass_kept": int((glass & keep).sum()),
        "artefact": int(artefact.sum()),
        "artefact_kept": int((artefact & keep).sum()),
        "blank": len(blanks),
        "blank_kept": int(sum(blanks)),
    }


def real_slides(data_dir: Path) -> dict[str, np.ndarray]:
    """The real slides' thumbnails as pcam-slide reads them (8 model pixels per pixel); kidney-48-5.tif, a
    plain TIFF with no MPP and about 8 model pixels per pixel already, is taken as its own thumbnail."""
    import tifffile

    from pcam_tfds.core.patches import PATCH_MPP
    from trainer.slides.geometry import read_thumbnail
    from trainer.slides.reader import open_slide

    out = {}
    for name, mpp in (("CMU-1-Small-Region.svs", 0.499), ("TCGA-CR-7395-01A-01-TS1.svs", 0.5)):
        slide = open_slide(str(data_dir / "slides" / name), "openslide")
        scale = PATCH_MPP / mpp
        w, h = slide.level_dimensions[0]
        out[name] = read_thumbnail(slide, scale, 8.0, int(w / scale / 8), int(h / scale / 8))
    out["kidney-48-5.tif"] = tifffile.imread(str(data_dir / "slides" / "kidney-48-5.tif"))
    return out


# Hand-made references, checked by eye against the thumbnails: darker than the glass colour measured on
# the slide by more than `levels` in some channel (white excluded), inside a box drawn around the fragment
# for kidney-48-5.tif (whose smudges are as dark as its pale tissue), specks of 9 pixels out, holes of 36 in.
REFERENCES = {
    "CMU-1-Small-Region.svs": ((246, 243, 243), 8, None),
    "TCGA-CR-7395-01A-01-TS1.svs": ((241, 236, 239), 8, None),
    "kidney-48-5.tif": ((252, 252, 252), 10, np.s_[480:590, 260:420]),
}


def reference_mask(name: str, thumbnail: np.ndarray) -> np.ndarray:
    from skimage import morphology

    glass, levels, box = REFERENCES[name]
    rgb = thumbnail.astype(np.float32)
    mask = ((np.asarray(glass) - rgb).max(axis=-1) > levels) & ~(rgb >= 254).all(axis=-1)
    if box is not None:
        inside = np.zeros(mask.shape, bool)
        inside[box] = True
        mask &= inside
    return morphology.remove_small_holes(morphology.remove_small_objects(mask, max_size=9), max_size=36)


def save_look(folder: Path, name: str, thumbnail: np.ndarray, mask: np.ndarray) -> None:
    """NAME.png: the thumbnail, the mask, and the thumbnail with non-tissue dimmed, side by side."""
    from PIL import Image

    shown = np.where(mask[..., None], thumbnail, (thumbnail * 0.35 + 255 * 0.65).astype(np.uint8))
    white = np.full((thumbnail.shape[0], 4, 3), 128, np.uint8)
    panel = np.concatenate(
        [thumbnail, white, np.repeat(mask[..., None] * 255, 3, -1).astype(np.uint8), white, shown], 1
    )
    safe = re.sub(r"[^A-Za-z0-9.+-]+", "_", name.replace("%", "pc"))
    Image.fromarray(panel).save(folder / f"{safe}.png")


def pale_quartile(pixels: np.ndarray) -> np.ndarray:
    """Indices of the quarter of patches palest by rank of mean brightness plus rank of mean channel spread."""
    f = pixels.astype(np.float32)
    rank = np.argsort(np.argsort(-f.mean(axis=(1, 2, 3)))) + np.argsort(np.argsort(f.std(axis=-1).mean(axis=(1, 2))))
    return np.argsort(rank)[: len(pixels) // 4]


def run_synthetic(pixels, labels, ids, methods, thresholds, look) -> dict:
    """{(method, min_tissue): [(scene, measurement, seconds)]} over every scene."""
    blank, pale, glass_of = not_tissue(pixels, ids), pale_quartile(pixels), own_glass(pixels)
    stain = stained_cells(pixels)
    cells, rows = {}, {}
    for scene in scenes():
        if scene.glass not in cells:
            cells[scene.glass] = to_thumbnail_cells(pixels, np.array(scene.glass, np.float32), glass_of)
        slide = make_slide(scene, cells[scene.glass], blank, pale if scene.pale else np.arange(len(pixels)), stain)
        for name, fn in methods.items():
            start = time.perf_counter()
            mask = fn(slide.thumbnail)
            seconds = time.perf_counter() - start
            if look and name == DETECT:
                save_look(look, "synthetic " + scene.name, slide.thumbnail, mask)
            for t in thresholds:
                rows.setdefault((name, t), []).append((scene, measure(slide, mask, labels, t), seconds))
    return rows


def print_tables(rows) -> None:
    """One row per method: misses on slides of 5% to 95% tissue and overall, glass and artefacts predicted."""
    print(
        "| method | min_tissue | tissue patches without a value, 5-95% slides | ... tissue in their centre 32x32 "
        "| stained thumbnail pixels without a value, 5-95% | all slides (2-98%) "
        "| pale slides | tumour patches missed | glass windows predicted | artefact windows predicted "
        "| non-tissue patches kept | ms per thumbnail (median) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def share(ms, key="missed", total="tissue"):
        got, of = sum(m[key] for m in ms), sum(m[total] for m in ms)
        return f"{got}/{of} ({100 * got / max(of, 1):.2f}%)"

    for (name, t), entries in rows.items():
        every = [m for _, m, _ in entries]
        mid = [m for s, m, _ in entries if 0.05 <= s.fraction <= 0.95]
        pale = [m for s, m, _ in entries if s.pale]
        ms = 1000 * float(np.median([s for _, _, s in entries]))
        print(
            f"| {name} | {t} | {share(mid)} | {share(mid, 'central_missed', 'central')} "
            f"| {share(mid, 'pixels_missed', 'pixels')} | {share(every)} | {share(pale)} "
            f"| {share(every, 'tumour_missed', 'tumour')} | {share(every, 'glass_kept', 'glass')} "
            f"| {share(every, 'artefact_kept', 'artefact')} | {share(every, 'blank_kept', 'blank')} | {ms:.1f} |"
        )


def print_per_slide(rows) -> None:
    print("\n| slide | method | min_tissue | missed | tumour missed | glass kept | artefact kept | non-tissue kept |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, t), entries in rows.items():
        for s, m, _ in entries:
            print(
                f"| {s.name} | {name} | {t} | {m['missed']}/{m['tissue']} | {m['tumour_missed']}/{m['tumour']} "
                f"| {m['glass_kept']}/{m['glass']} | {m['artefact_kept']}/{m['artefact']} "
                f"| {m['blank_kept']}/{m['blank']} |"
            )


def print_real(data_dir: Path, methods, thresholds, look) -> None:
    """Per real slide and method: the tissue share of the thumbnail, its intersection over union with the
    hand-made reference, and the windows at each min_tissue."""
    from trainer.slides.geometry import window_tissue

    head = " | ".join(f"windows >= {t}" for t in thresholds)
    print(f"\n| real slide | method | tissue share | IoU with the reference | {head} | ms |")
    print("|---|---|---:|---:|" + "---:|" * len(thresholds) + "---:|")
    for slide_name, thumb in real_slides(data_dir).items():
        reference = reference_mask(slide_name, thumb)
        share = window_tissue(reference, grid_of(thumb), K)
        windows = " | ".join(str(int((share >= t).sum())) for t in thresholds)
        print(f"| {slide_name} | hand-made reference | {reference.mean():.4f} | 1 | {windows} | |")
        if look:
            save_look(look, f"{slide_name} reference", thumb, reference)
        for name, fn in methods.items():
            start = time.perf_counter()
            mask = fn(thumb)
            ms = 1000 * (time.perf_counter() - start)
            share = window_tissue(mask, grid_of(thumb), K)
            windows = " | ".join(str(int((share >= t).sum())) for t in thresholds)
            size = f"{thumb.shape[1]}x{thumb.shape[0]}"
            iou = (mask & reference).sum() / max((mask | reference).sum(), 1)
            print(f"| {slide_name} {size} | {name} | {mask.mean():.4f} | {iou:.3f} | {windows} | {ms:.0f} |")
            if look:
                save_look(look, f"{slide_name} {name.split(' (')[0]}", thumb, mask)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared_data", required=True, help="the shared data folder (pcam_sample/, slides/)")
    ap.add_argument("--split", default="test", help="pcam_sample split whose patches make the slides")
    ap.add_argument("--limit", type=int, default=3000, help="patches read from the split")
    ap.add_argument("--min_tissue", default="0.25", help="comma-separated window tissue shares to measure")
    ap.add_argument(
        "--area", default="window", choices=["window", "label", "both", "either"], help="--min_tissue's share of"
    )
    ap.add_argument("--methods", default="", help="comma-separated substrings of method names (default: all)")
    ap.add_argument("--look_dir", default="", help="save masks of real and synthetic slides here as PNG")
    ap.add_argument("--json", default="", help="write every measurement here")
    ap.add_argument("--per_slide", action="store_true", help="also one row per slide and method")
    a = ap.parse_args(argv)
    data_dir = Path(a.shared_data)
    look = Path(a.look_dir) if a.look_dir else None
    if look:
        look.mkdir(parents=True, exist_ok=True)
    methods = {k: v for k, v in METHODS.items() if not a.methods or any(m in k for m in a.methods.split(","))}
    thresholds = [float(t) for t in a.min_tissue.split(",")]
    AREA[0] = a.area
    pixels, labels, ids = load_patches(data_dir, a.split, a.limit)
    rows = run_synthetic(pixels, labels, ids, methods, thresholds, look)
    print(
        f"{datetime.date.today()}, {platform.machine()}, split={a.split}, {len(pixels)} patches, {len(scenes())} slides\n"
    )
    print_tables(rows)
    if a.per_slide:
        print_per_slide(rows)
    print_real(data_dir, methods, thresholds, look)
    if a.json:
        records = [
            {"scene": s.name, "method": name, "min_tissue": t, "seconds": sec, **m}
            for (name, t), entries in rows.items()
            for s, m, sec in entries
        ]
        Path(a.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
