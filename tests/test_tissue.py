"""The tissue mask (trainer.slides.tissue): every tissue patch gets a window, glass and artefacts get none.

Thumbnails are at pcam-slide's usual scale: 8 model pixels per thumbnail pixel, so a 96-pixel patch is 12
pixels and a window's stride 4 (k=4). The first tests paint colours and need nothing; the rest lay real
PCam patches (PCAM_SHARED_DATA/pcam_sample/train, box-averaged like geometry.read_thumbnail) on glass, and
read the three real slides of PCAM_SHARED_DATA/slides against references drawn and checked by eye.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer.slides import tissue
from trainer.slides.geometry import Grid, window_tissue

CELL, K = 12, 4  # thumbnail pixels per patch and per stride
MIN_TISSUE = 0.1  # a window whose centre 32 x 32 (PCam's label region, 1/9 of it) is tissue reaches this
GLASS = (240.0, 240.0, 238.0)


def _windows(mask: np.ndarray) -> np.ndarray:
    """Share of tissue of every 96-pixel window at stride 32 over a thumbnail of 8 model pixels per pixel."""
    h, w = mask.shape
    return window_tissue(mask, Grid.of((w * 8, h * 8), 1.0, 96, 32), K)


def _glass(shape, seed=0, colour=GLASS, ramp=0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.asarray(colour, np.float32) + rng.normal(0, 1.2, (*shape, 3))
    return image + np.linspace(-ramp, ramp, shape[1])[None, :, None]


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _pale_tissue(rng, h, w) -> np.ndarray:
    """Pale pink stroma (saturation about 0.04, under the old 0.05 floor) with a few darker nuclei."""
    image = np.array([236.0, 226.0, 233.0]) + rng.normal(0, 2.0, (h, w, 3))
    nuclei = rng.random((h, w)) < 0.05
    image[nuclei] = (200.0, 170.0, 205.0)
    return image


def test_pale_tissue_on_glass_is_kept_and_glass_is_not():
    rng = np.random.default_rng(1)
    image = _glass((96, 96))
    image[24:72, 12:60] = _pale_tissue(rng, 48, 48)
    mask, info = tissue.detect(_uint8(image))
    assert mask[24:72, 12:60].mean() > 0.95, mask[24:72, 12:60].mean()
    assert not mask[:, 66:].any() and not mask[:20].any()
    assert info["glass_rgb"] == pytest.approx(GLASS, abs=2)
    json.dumps(info)  # summary.json takes it as it is


def test_greyish_violet_tissue_is_kept_though_nearly_neutral():
    """Pale matter whose OD is nearly equal in R, G and B (chroma 0.10: mucoid or oedematous tissue) is tissue;
    only closer to grey (a smudge, chroma near 0) is not. The grey rule's bound (NEUTRAL_CHROMA) sits between."""
    rng = np.random.default_rng(4)
    image = _glass((96, 144))
    od = np.array([0.19, 0.21, 0.19])  # chroma (0.21 - 0.19) / 0.197 = 0.10
    image[24:72, 12:60] = np.asarray(GLASS) * np.exp(-od) + rng.normal(0, 1.5, (48, 48, 3))
    yy, xx = np.mgrid[:96, :144]
    image -= (40 * np.exp(-((yy - 48) ** 2 + (xx - 110) ** 2) / (2 * 10.0**2)))[..., None]  # a grey smudge
    mask, info = tissue.detect(_uint8(image))
    assert mask[26:70, 14:58].all(), mask[24:72, 12:60].mean()
    assert not mask[:, 80:].any(), np.argwhere(mask[:, 80:])[:5]
    assert info["removed_pixels"]["grey"] > 100


@pytest.mark.parametrize(
    "thumbnail",
    [
        _uint8(_glass((80, 120), ramp=3.0)),
        _uint8(_glass((80, 120), colour=(226, 226, 222))),
        np.full((40, 40, 3), 255, np.uint8),
        np.full((40, 40, 3), 250, np.uint8),
    ],
    ids=["glass", "grey glass", "white", "flat"],
)
def test_a_slide_without_tissue_gives_an_empty_mask(thumbnail):
    thumbnail = thumbnail.copy()
    thumbnail[10:12, 30:32] = 60  # dust
    thumbnail[30, 50:53] = 150
    mask, _ = tissue.detect(thumbnail)
    assert not mask.any(), mask.sum()


def test_black_border_pen_and_smudge_are_not_tissue():
    rng = np.random.default_rng(2)
    image = _glass((144, 192))
    image[48:96, 72:120] = _pale_tissue(rng, 48, 48) - (30, 60, 30)  # ordinary pink tissue
    image[:, :14] = 14 + rng.normal(0, 3, (144, 14, 1))  # the black edge of the scan
    ink = {"blue": (50, 80, 180), "green": (60, 150, 90), "black": (35, 35, 40)}
    for row, colour in zip((20, 110, 126), ink.values()):
        image[row : row + 10, 30:180] *= np.asarray(colour, np.float32) / 255 * 0.85 + 0.15
    yy, xx = np.mgrid[:144, :192]
    image -= (14 * np.exp(-((yy - 60) ** 2 + (xx - 160) ** 2) / (2 * 12.0**2)))[..., None]  # a grey smudge
    mask, info = tissue.detect(_uint8(image))
    assert mask[50:94, 74:118].all()
    artefact = np.ones((144, 192), bool)
    artefact[44:100, 68:124] = False  # the tissue and a little around it
    assert not (mask & artefact).any(), np.argwhere(mask & artefact)[:5]
    assert info["removed_pixels"]["dark"] > 144 * 10 and info["removed_pixels"]["ink"] > 2 * 10 * 150


def test_uneven_illumination_is_not_tissue():
    """Glass 12 levels darker on the left than on the right, tissue on the left: measured against one glass
    colour, the glass around it would be as dense as pale tissue, and joined to it."""
    rng = np.random.default_rng(3)
    image = _glass((96, 240), ramp=6.0)
    image[36:60, 12:36] = _pale_tissue(rng, 24, 24)
    mask, _ = tissue.detect(_uint8(image))
    assert mask[38:58, 14:34].all() and mask.sum() < 1.1 * 24 * 24, mask.sum()


def test_white_outside_the_scan_and_white_glass():
    """White padding beside tinted glass is not the glass (else the glass is tissue); white glass is."""
    rng = np.random.default_rng(4)
    image = _glass((96, 144), colour=(241, 236, 239))
    image[:, 96:] = 255
    image[30:66, 30:66] = _pale_tissue(rng, 36, 36) - (20, 40, 20)
    mask, info = tissue.detect(_uint8(image))
    assert mask[32:64, 32:64].all() and mask.sum() < 1.2 * 36 * 36
    assert info["glass_rgb"] == pytest.approx((241, 236, 239), abs=2)
    white = np.full((96, 96, 3), 255.0)
    white[30:66, 30:66] = _pale_tissue(rng, 36, 36)
    mask, info = tissue.detect(_uint8(white))
    assert mask[32:64, 32:64].all() and info["glass_rgb"] == [255.0, 255.0, 255.0]


def test_a_frame_full_of_tissue_keeps_it():
    rng = np.random.default_rng(5)
    image = _glass((120, 120))
    image[4:, 4:] = _pale_tissue(rng, 116, 116) - (15, 30, 15)
    mask, _ = tissue.detect(_uint8(image))
    assert mask[6:, 6:].mean() > 0.99 and not mask[:2, :2].any()


# -- real patches and slides (PCAM_SHARED_DATA) -------------------------------------------------------


@pytest.fixture(scope="module")
def patches(shared_data):
    """(thumbnail cells (n, 12, 12, 3) on GLASS, labels, must_keep, pale): 600 real training patches.

    Each patch is white-balanced to GLASS (its brightest unsaturated pixels, where it has glass, become
    GLASS, as if all came from one scan) and box-averaged 8 x 8. must_keep: more than 2% of its pixels
    stained, its centre 32 x 32 a tenth stained (tissue where PCam's label looks), not a quarter black
    (PCam holds a few patches of a scanner's dark edge). pale: the quarter
    of patches with the lowest mean saturation."""
    import csv

    from PIL import Image

    folder = shared_data / "pcam_sample" / "train"
    with open(shared_data / "pcam_sample" / "train_labels.csv") as f:
        labels = {r["id"]: int(r["label"]) for r in csv.DictReader(f)}
    files = sorted(folder.glob("*.jpg"))[:600]
    if len(files) < 600:
        pytest.skip(f"{folder} holds {len(files)} patches, not 600")
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files]).astype(np.float32)
    flat = pixels.reshape(len(pixels), -1, 3)
    bright = flat.mean(axis=-1)
    top = np.stack([np.median(f[b >= np.percentile(b, 97)], axis=0) for f, b in zip(flat, bright)])
    glassy = (top.mean(axis=1) >= 215) & ((top.max(axis=1) - top.min(axis=1)) / top.max(axis=1) < 0.08)
    source = np.where(glassy[:, None], top, np.median(top[glassy], axis=0))
    balanced = np.minimum(pixels * (np.asarray(GLASS) / source)[:, None, None, :], 255)
    cells = balanced.reshape(-1, CELL, 8, CELL, 8, 3).mean(axis=(2, 4))
    sat = tissue.saturation(pixels)
    stained = (sat > 0.15) | (pixels.min(axis=-1) < 180)
    black = ((pixels.max(axis=-1) < 110) & (sat < 0.3)).mean(axis=(1, 2)) >= 0.25  # a scanner's dark edge
    must_keep = (stained.mean(axis=(1, 2)) > 0.02) & (stained[:, 32:64, 32:64].mean(axis=(1, 2)) > 0.1) & ~black
    pale = sat.mean(axis=(1, 2)) <= np.quantile(sat.mean(axis=(1, 2)), 0.25)
    return cells, np.array([labels[p.stem] for p in files]), must_keep, pale


def _slide(cells, pool, fraction, seed, n=24):
    """(thumbnail, {(row, col) of the patch's window: patch index}): patches on glass covering `fraction` of
    an n x n lattice of patches, as one noisy disc."""
    rng = np.random.default_rng(seed)
    image = _glass((n * CELL, n * CELL), seed, ramp=3.0)
    yy, xx = np.mgrid[:n, :n] + 0.5
    score = np.hypot(yy - n / 2, xx - n / 2) + rng.normal(0, 1.5, (n, n))
    placed = {}
    for flat in np.argsort(score, axis=None)[: int(round(fraction * n * n))]:
        i, j = divmod(int(flat), n)
        idx = int(rng.choice(pool))
        image[i * CELL : (i + 1) * CELL, j * CELL : (j + 1) * CELL] = cells[idx] + rng.normal(0, 0.6, (CELL, CELL, 3))
        placed[(3 * i + 1, 3 * j + 1)] = idx  # the window centred on the patch (Grid.of's margin is 32)
    return image, placed


@pytest.mark.shared_data
@pytest.mark.parametrize("fraction", [0.03, 0.25, 0.6, 0.97])
@pytest.mark.parametrize("pale", [False, True], ids=["all", "pale"])
def test_every_real_tissue_patch_gets_a_window_and_glass_none(patches, fraction, pale):
    cells, labels, must_keep, palest = patches
    assert labels.sum() > 100  # tumour patches among them, kept like the rest
    pool = np.flatnonzero(palest if pale else np.ones(len(cells), bool))
    image, placed = _slide(cells, pool, fraction, seed=int(fraction * 100) + pale)
    mask, _ = tissue.detect(_uint8(image))
    share = _windows(mask)
    overlap, near = np.zeros(share.shape, bool), np.zeros(share.shape, bool)
    for r, c in placed:
        overlap[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3] = True  # windows overlapping the patch
        near[max(0, r - 3) : r + 4, max(0, c - 3) : c + 4] = True  # ... or one stride from it
    missed = [(rc, idx) for rc, idx in placed.items() if must_keep[idx] and share[rc] < MIN_TISSUE]
    kept = sum(bool(must_keep[idx]) for idx in placed.values())
    assert kept >= 0.5 * len(placed) > 0
    assert not missed, (missed, kept)
    assert not (share[~overlap] >= MIN_TISSUE).any(), np.argwhere(share * ~overlap >= MIN_TISSUE)[:5]
    assert not (share[~near] > 0).any(), np.argwhere(share * ~near > 0)[:5]


@pytest.mark.shared_data
def test_border_and_pen_beside_real_tissue_are_not_tissue(patches):
    cells, _, must_keep, _ = patches
    image, placed = _slide(cells, np.arange(len(cells)), 0.1, seed=7)
    tissue_px = np.zeros(image.shape[:2], bool)
    for r, c in placed:
        tissue_px[r * K : r * K + CELL, c * K : c * K + CELL] = True
    artefact = np.zeros_like(tissue_px)
    artefact[:, -16:] = True  # the black edge of the scan
    image[:, -16:] = 14
    for row, colour in ((6, (50, 80, 180)), (268, (60, 150, 90))):  # pen lines on the glass
        artefact[row : row + 12, 16:270] = True
        image[row : row + 12, 16:270] *= np.asarray(colour, np.float32) / 255 * 0.85 + 0.15
    assert not (artefact & tissue_px).any()  # the test's own layout: ink only on glass
    mask, _ = tissue.detect(_uint8(image))
    share = _windows(mask)
    only_artefact = (_windows(artefact) >= 0.25) & (_windows(tissue_px) == 0)
    assert only_artefact.sum() > 100 and not (share[only_artefact] >= MIN_TISSUE).any()
    assert all(share[rc] >= MIN_TISSUE for rc, idx in placed.items() if must_keep[idx])


# The references: masks made for each slide with parameters chosen by hand (bench/bench_tissue.py
# REFERENCES: darker than the slide's glass by 8 levels in a channel; 10, inside a box drawn around the
# fragment, for kidney), checked by eye against the thumbnail; their tissue share, and points well inside
# tissue or glass.
REFERENCES = {
    "CMU-1-Small-Region.svs": {
        "fraction": 0.396,
        "tissue": [(160, 60), (132, 75), (173, 40), (147, 101), (70, 25), (38, 133)],  # a strand, a fragment
        "glass": [(1, 92), (145, 15), (22, 1), (111, 1)],
    },
    "TCGA-CR-7395-01A-01-TS1.svs": {
        "fraction": 0.638,
        "tissue": [(161, 257), (210, 207), (134, 57), (147, 126), (120, 175)],
        # white outside the scan, the tinted glass inside it, the lumen in the middle of the section
        "glass": [(0, 55), (208, 70), (31, 248), (151, 3), (130, 185)],
    },
    "kidney-48-5.tif": {
        "fraction": 0.0034,
        "tissue": [(543, 385), (521, 301), (549, 339), (533, 341)],
        # glass, two grey smudges, a grey fibre, a black speck, dust
        "glass": [(268, 1332), (485, 1167), (72, 197), (155, 1189), (64, 880), (204, 269), (102, 1163), (880, 341)],
    },
}


def _real_thumbnail(shared_data, name):
    """As pcam-slide reads it at 8 model pixels per pixel (TCGA records no MPP: 0.5, TCGA's 20x); the
    plain TIFF kidney-48-5.tif has no MPP and is about that scale already: it is its own thumbnail."""
    path = shared_data / "slides" / name
    if not path.exists():
        pytest.skip(f"{path} does not exist")
    if name.endswith(".tif"):
        import tifffile

        return tifffile.imread(str(path))
    from pcam_tfds.core.patches import PATCH_MPP
    from trainer.slides.geometry import read_thumbnail
    from trainer.slides.reader import open_slide

    slide = open_slide(str(path), "openslide")
    scale = PATCH_MPP / (slide.mpp or 0.5)
    w, h = slide.level_dimensions[0]
    return read_thumbnail(slide, scale, 8.0, int(w / scale / 8), int(h / scale / 8))


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_real_slides_match_their_reference(shared_data, name):
    ref = REFERENCES[name]
    mask, info = tissue.detect(_real_thumbnail(shared_data, name))
    assert mask.mean() == pytest.approx(ref["fraction"], rel=0.05), info
    assert all(mask[p] for p in ref["tissue"]), [p for p in ref["tissue"] if not mask[p]]
    assert not any(mask[p] for p in ref["glass"]), [p for p in ref["glass"] if mask[p]]
