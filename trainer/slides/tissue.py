"""The tissue mask of a slide's thumbnail: every pixel of tissue, however pale, and no glass or artefact.

Glass is what every slide has in common, so tissue is defined against it, not against the tissue itself
(whose colour and share of the slide vary from slide to slide):

1. Glass colour: the brightest well-populated mode of the brightness of bright, unsaturated, flat pixels
   (tissue has structure, glass only noise). Pure white is outside the scan, unless it is the glass.
2. Glass field: that colour measured square by square (two patches a side) and interpolated, so that
   uneven illumination across the slide is not taken for stain.
3. Optical density (OD) per channel relative to the field: glass is 0 whatever its tint; stain adds.
4. Not tissue, judged on OD averaged over 5 x 5 pixels: grey (equal OD in R, G and B: dust, smudges,
   shadows; black when dense: scan borders, debris, black ink) and ink whose green OD is not the largest
   (blue and green pens; haematoxylin and eosin both absorb green most). Red ink looks like eosin.
5. Tissue: a hysteresis threshold on the largest channel OD. Stained pixels (the high threshold) seed
   regions that grow over every connected pixel above glass noise (the low threshold), so pale tissue
   is kept where it joins stained tissue, as it does in a section; faint glass variation has no seed.
6. Morphology sized to the model's patch on the thumbnail: holes up to a quarter patch are tissue,
   objects up to a sixteenth are dust.

Otsu's threshold (on saturation or grey) is not used: it splits whatever two classes a slide holds, so
it cuts pale tissue from dark where glass is rare, and finds "tissue" on an empty slide. The candidates
are compared by bench/bench_tissue.py, the numbers in bench/RESULTS.md.
"""

from __future__ import annotations

import numpy as np

WHITE = 254  # every channel at or above: outside the scanned area (readers fill it with 255), never tissue
GLASS_MIN = 190  # glass is brighter than this (mean RGB) on any brightfield scan
GLASS_SATURATION = 0.1  # and less saturated than this
GLASS_FLAT = 3.0  # and its brightness varies by less than this (standard deviation over 5 x 5 pixels)
GLASS_RANGE = 8  # levels of brightness around the glass mode that uneven illumination may move glass
GLASS_BLOCK = 2  # the glass field is measured in squares of this many patches a side
GLASS_SHARE = 0.25  # ... that are at least this share glass
WHITE_GLASS = 9  # pure white pixels outnumbering the glass mode this many times are the glass
DEFAULT_GLASS = (255.0, 255.0, 255.0)  # where no pixel looks like glass (a frame filled with tissue)
LOW_OD = 0.02  # the low threshold's floor: 2% darker than glass in some channel
LOW_NOISE = 4.0  # the low threshold is at least this many glass-noise deviations
HIGH_OD = 0.1  # a seed is at least 10% darker than glass in some channel
NEUTRAL_CHROMA = 0.08  # OD spread / OD mean below this is grey (equal absorption in R, G and B)
NEUTRAL_OD = 0.015  # ... judged only where the OD mean is above this (paler is too noisy to judge)
DARK_OD = 1.0  # OD mean above this (darker than 37% of glass) and neutral: black border, debris, black ink
INK_GREEN = 0.8  # green OD below this share of the red or blue OD: not H&E (blue or green ink)
INK_OD = 0.2  # ... and that OD is above this (paler colour is noise)
INK_CHROMA = 0.5  # ... and saturated (pale ink) or
INK_MARGIN = 0.2  # ... below it by this much OD (ink under black ink); bluish tissue meets neither
HOLE = 1 / 4  # holes up to this share of a patch's area are tissue (fat cells, tears, lumens)
SPECK = 1 / 16  # objects up to this share are dust, too small to be a tenth of a window
EDGE = 2  # pixels around ink and dark artefacts that are theirs too


def channels(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(max, min, mean) over the last axis of 3, by whole planes (a reduction over an axis of 3 is slow)."""
    a, b, c = x[..., 0], x[..., 1], x[..., 2]
    return np.maximum(np.maximum(a, b), c), np.minimum(np.minimum(a, b), c), (a + b + c) / 3


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] of uint8 RGB (..., 3)."""
    hi, lo, _ = channels(rgb.astype(np.float32))
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1.0), 0.0)


def glass_colour(rgb: np.ndarray) -> tuple[np.ndarray, float, str, np.ndarray]:
    """(RGB of glass, its noise as a brightness standard deviation, how it was found, bool mask of glass).

    Glass is bright, unsaturated and flat (its 5 x 5 neighbourhood varies by noise alone, tissue by its
    structure): the brightest mode of the brightness histogram of such pixels, holding at least 1% of
    them or 50 pixels; a mode, not a percentile, so that bright specks do not move it. Pure white is the
    outside of the scan, unless it outnumbers that mode WHITE_GLASS times: then the glass itself is white
    (a scanner that whitens glass, a rendered slide). The mask holds the glass within GLASS_RANGE levels."""
    from scipy import ndimage

    rgb = rgb.astype(np.float32)
    bright = channels(rgb)[2]
    mean = ndimage.uniform_filter(bright, 5, mode="reflect")
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(bright * bright, 5, mode="reflect") - mean * mean, 0.0))
    white = (rgb >= WHITE).all(axis=-1)
    glassy = ~white & (bright >= GLASS_MIN) & (saturation(rgb) < GLASS_SATURATION)
    flat = glassy & (spread < GLASS_FLAT)
    candidates = flat if flat.sum() >= 50 else glassy
    near = np.zeros(bright.shape, bool)
    if candidates.sum() >= 50:
        hist = np.bincount(np.round(bright[candidates]).astype(int), minlength=256).astype(np.float64)
        smooth = ndimage.gaussian_filter1d(hist, 1.0)
        local = np.convolve(hist, np.ones(7), mode="same")  # pixels within +-3 levels of each level
        peaks = (smooth >= np.roll(smooth, 1)) & (smooth >= np.roll(smooth, -1)) & (smooth > 0)
        peaks &= local >= max(50.0, 0.01 * candidates.sum())
        mode = int(np.flatnonzero(peaks).max()) if peaks.any() else int(np.argmax(smooth))
        near = candidates & (np.abs(bright - mode) <= 3)
    if white.sum() > WHITE_GLASS * near.sum():
        return np.full(3, 255.0, np.float32), 0.5, "white", white
    if not near.any():
        return np.array(DEFAULT_GLASS, np.float32), 0.5, "default (no glass)", near
    colour = np.median(rgb[near], axis=0)
    noise = float(max(0.5, np.median(spread[near])))
    found = "flat bright mode" if candidates is flat else "bright mode"
    return colour, noise, found, candidates & (np.abs(bright - mode) <= GLASS_RANGE)


def glass_field(rgb: np.ndarray, glass: np.ndarray, colour: np.ndarray, block: int) -> np.ndarray:
    """(h, w, 3) float32: the glass colour under every pixel, so that uneven illumination is not density.

    The mean glass pixel of each block x block square holding at least GLASS_SHARE glass, the nearest
    such square's where it holds less (under tissue), smoothed and interpolated between squares."""
    from scipy import ndimage

    h, w = glass.shape
    rows, cols = -(-h // block), -(-w // block)
    pad = ((0, rows * block - h), (0, cols * block - w))
    weight = np.pad(glass, pad).reshape(rows, block, cols, block).sum(axis=(1, 3)).astype(np.float32)
    total = np.pad(rgb.astype(np.float32) * glass[..., None], (*pad, (0, 0)))
    total = total.reshape(rows, block, cols, block, 3).sum(axis=(1, 3))
    valid = weight >= GLASS_SHARE * block * block
    if not valid.any():
        return np.broadcast_to(np.asarray(colour, np.float32), (h, w, 3))
    field = total / np.maximum(weight, 1.0)[..., None]
    nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    field = ndimage.gaussian_filter(field[nearest[0], nearest[1]], (1, 1, 0), mode="nearest")
    # Bilinear between square centres, one axis at a time.
    for axis, n in ((0, h), (1, w)):
        at = np.clip((np.arange(n) + 0.5) / block - 0.5, 0, field.shape[axis] - 1)
        lo = np.floor(at).astype(int)
        hi = np.minimum(lo + 1, field.shape[axis] - 1)
        t = (at - lo).astype(np.float32).reshape((-1, 1, 1) if axis == 0 else (1, -1, 1))
        field = np.take(field, lo, axis) * (1 - t) + np.take(field, hi, axis) * t
    return field.astype(np.float32)


def optical_density(rgb: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """Per-channel OD relative to glass, ln(glass / pixel), (..., 3) float32; glass is 0, brighter is < 0."""
    return np.log(np.maximum(glass, 1.0) / np.maximum(rgb.astype(np.float32), 1.0)).astype(np.float32)


def chroma(od: np.ndarray) -> np.ndarray:
    """(max - min) / mean of the OD channels: 0 for grey, which absorbs R, G and B alike."""
    hi, lo, mean = channels(od)
    return (hi - lo) / np.maximum(mean, 1e-3)


def not_he(od: np.ndarray) -> np.ndarray:
    """bool: ink, not stain. Haematoxylin and eosin both absorb green most; blue and green ink do not."""
    other = np.maximum(od[..., 0], od[..., 2])
    strong = (other > INK_OD) & ((chroma(od) > INK_CHROMA) | (other - od[..., 1] > INK_MARGIN))
    return strong & (od[..., 1] < INK_GREEN * other)


def artefacts(od: np.ndarray) -> dict[str, np.ndarray]:
    """bool masks of pixels that are not tissue whatever their density: "dark" (black borders, debris,
    black ink), "grey" (dust, smudges) and "ink" (blue and green pens). Colour is judged on the OD
    averaged over 5 x 5 pixels, where glass noise no longer hides the colour of pale pixels."""
    from scipy import ndimage

    od = ndimage.uniform_filter(od, size=(5, 5, 1), mode="nearest")
    mean = channels(od)[2]
    neutral = chroma(od) < NEUTRAL_CHROMA
    dark = neutral & (mean > DARK_OD)
    grey = neutral & (mean > NEUTRAL_OD) & ~dark
    ink = not_he(od)
    return {"dark": dark, "grey": grey, "ink": ink}


def detect(thumbnail: np.ndarray, patch_pixels: float = 12.0) -> tuple[np.ndarray, dict]:
    """(bool mask, how it was decided: summary.json "tissue"); `patch_pixels` is a model patch's side in
    thumbnail pixels (96 model pixels at 8 per thumbnail pixel: 12), which sizes the morphology."""
    return tissue_mask(thumbnail, patch_pixels)


def tissue_mask(
    thumbnail: np.ndarray,
    patch_pixels: float = 12.0,
    *,
    local_glass: bool = True,
    hysteresis: bool = True,
    rules: bool = True,
    morphology: bool = True,
) -> tuple[np.ndarray, dict]:
    """detect, with steps that can be switched off to measure what each is worth (bench/bench_tissue.py):
    the glass field (else one glass colour), hysteresis (else the low threshold alone), the artefact
    rules, and the morphology (holes, specks)."""
    from scipy import ndimage
    from skimage import filters
    from skimage import morphology as morph

    rgb = np.asarray(thumbnail)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"the thumbnail must be RGB (height, width, 3), not {rgb.shape}")
    colour, noise, found, glass = glass_colour(rgb)
    block = max(8, round(GLASS_BLOCK * patch_pixels))
    od = optical_density(rgb, glass_field(rgb, glass, colour, block) if local_glass else colour)
    white = (rgb >= WHITE).all(axis=-1)
    found_artefacts = artefacts(od) if rules else {}
    excluded = white.copy()
    if rules:
        # Ink and dark borders fade into glass over a few pixels, too pale there for their colour to show.
        excluded |= ndimage.binary_dilation(found_artefacts["dark"] | found_artefacts["ink"], iterations=EDGE)
        excluded |= found_artefacts["grey"]
    noise_od = float(np.log(colour.mean() / max(colour.mean() - noise, 1.0)))
    low = max(LOW_OD, LOW_NOISE * noise_od)
    high = max(HIGH_OD, 2 * low)
    density = np.where(excluded, 0.0, channels(od)[0])
    grown = filters.apply_hysteresis_threshold(density, low, high) if hysteresis else density > low
    mask = grown
    hole, speck = max(1, int(patch_pixels**2 * HOLE)), max(1, int(patch_pixels**2 * SPECK))
    if morphology:
        mask = morph.remove_small_objects(mask, max_size=speck)
        holes = ndimage.binary_fill_holes(mask) & ~mask  # glass enclosed by tissue, not touching the edge
        mask |= holes & ~morph.remove_small_objects(holes, max_size=hole)
    removed = {k: int(v.sum()) for k, v in found_artefacts.items()}
    removed["specks"] = int((grown & ~mask).sum())
    info = {
        "method": "glass_od_hysteresis",
        "glass_rgb": [round(float(c), 1) for c in colour],
        "glass_found": found,
        "glass_noise": round(noise, 3),
        "glass_block_pixels": block,
        "od_low": round(low, 4),
        "od_high": round(high, 4),
        "hole_pixels": hole,
        "speck_pixels": speck,
        "removed_pixels": {**removed, "white": int(white.sum())},
    }
    return mask, info
