"""Synthetic PCam-like patches in the Kaggle folder layout, for tests and demos.

    python -m pcam_tfds.synthetic OUT --num_train=2000 --num_test=500 --seed=0 [--workers=2]

writes

    OUT/train/<id>.tif          num_train patches
    OUT/train_labels.csv        id,label (one row per train patch)
    OUT/test/<id>.tif           num_test patches
    OUT/sample_submission.csv   id,label (every test id, label 0)

Each patch is an uncompressed 96x96x3 uint8 RGB TIFF written by
`tifffile.imwrite`, and each id is the 40-hex sha1 of "<seed>:<split>:<index>",
so files look like the Kaggle ones to anything that reads them.

The images imitate H&E tissue: pink/light-purple stroma with texture, scattered
small nuclei and fibroblasts, sometimes a dense aggregate of small dark
lymphocytes, and in about 15% of patches a smooth white area with no tissue
(a few patches are nearly all white). Colours come from a Beer-Lambert mix of
a haematoxylin and an eosin stain vector, jittered per patch, so stain and
brightness vary the way scanned slides do.

As in PCam, the label depends only on the centre 32x32 pixels (rows and
columns 32..63): about 40% of patches are positive and carry a cluster of
large, dark, crowded tumour nuclei inside the centre. About 30% of negatives
carry the same kind of cluster entirely in the outer ring, so a model has to
look at where the tumour is, not only whether there is one; lymphocyte
aggregates, which are dark but small, can fall anywhere, so overall darkness
alone is not the answer either.

Every patch is drawn from `numpy.random.default_rng([seed, split_index, i])`,
so output is byte-identical for the same arguments whatever the worker count.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import tifffile

PATCH_SIZE = 96
CENTRE_START, CENTRE_STOP = 32, 64  # the centre 32x32 that decides the label
POSITIVE_RATE = 0.4
DECOY_RATE = 0.3  # share of negatives with a tumour cluster in the outer ring
WHITE_RATE = 0.15  # share of patches with a white, tissue-free area
NEARLY_WHITE_RATE = 0.03  # share of patches that are almost entirely white
LYMPHOCYTE_RATE = 0.35  # share of patches with a dense aggregate of small dark nuclei
SPLITS = ("train", "test")

# Optical-density vectors (R, G, B) of haematoxylin and eosin, the usual
# Ruifrok-Johnston values; per-patch jitter is added to these.
_HAEMATOXYLIN = (0.65, 0.70, 0.29)
_EOSIN = (0.07, 0.99, 0.11)


@dataclasses.dataclass(frozen=True)
class PatchInfo:
    """What `make_patch_with_info` put into a patch, for tests and debugging.

    `tumour_map` is the haematoxylin density (96x96 float32) contributed by
    tumour nuclei alone, before the tissue mask: zero wherever no tumour
    nucleus touches, so its centre 32x32 is non-zero exactly for positives.
    """

    label: int
    decoy: bool
    white: str  # "none", "partial" or "nearly_all"
    tumour_map: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Nuclei:
    """Parameters of a batch of elliptical nuclei, one array entry each."""

    cy: np.ndarray
    cx: np.ndarray
    ry: np.ndarray
    rx: np.ndarray
    theta: np.ndarray
    strength: np.ndarray
    rim: np.ndarray  # 0 = uniformly stained, >0 = darker rim (vesicular nucleus)

    @staticmethod
    def concat(parts: list[_Nuclei]) -> _Nuclei:
        fields = [f.name for f in dataclasses.fields(_Nuclei)]
        return _Nuclei(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in fields})


def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """Linear-interpolation weights mapping `cells` grid values onto `size` pixels."""
    t = np.linspace(0.0, cells - 1, size)
    i0 = np.minimum(np.floor(t).astype(int), cells - 2)
    w = t - i0
    m = np.zeros((size, cells))
    rows = np.arange(size)
    m[rows, i0] = 1.0 - w
    m[rows, i0 + 1] += w
    return m


def _noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Zero-mean, unit-variance pixel noise.

    Uniform rather than Gaussian: it looks the same at this amplitude and
    numpy draws it about five times faster.
    """
    return (rng.random(shape, dtype=np.float32) - np.float32(0.5)) * np.float32(12**0.5)


def _smooth_noise(rng: np.random.Generator, cells: int, size: int = PATCH_SIZE) -> np.ndarray:
    """Zero-mean noise of spread about 1 that varies smoothly over size/cells pixels."""
    m = _interp_matrix(size, cells)
    # Bilinear upsampling as two matrix products: far cheaper than scipy zoom
    # and needs nothing beyond numpy.
    field = m @ rng.standard_normal((cells, cells)) @ m.T
    # Interpolation averages neighbours and shrinks the spread to ~0.7; scale
    # back by a constant rather than the per-patch std, which costs more.
    return (field * 1.4).astype(np.float32)


def _render_nuclei(nuclei: _Nuclei, size: int = PATCH_SIZE) -> np.ndarray:
    """Haematoxylin density of the nuclei on a size x size canvas."""
    pad = 9  # > largest radius + anti-aliasing, so windows never leave the canvas
    padded = size + 2 * pad
    if nuclei.cy.size == 0:
        return np.zeros((size, size), dtype=np.float32)
    # Each nucleus is evaluated only in a small window around its centre, all
    # windows at once, instead of over the whole patch: ~30x less work.
    off = np.arange(-pad, pad + 1)
    iy = np.clip(np.round(nuclei.cy).astype(int), 0, size - 1)
    ix = np.clip(np.round(nuclei.cx).astype(int), 0, size - 1)
    dy = (iy[:, None, None] + off[None, :, None]).astype(np.float32) - nuclei.cy[:, None, None]
    dx = (ix[:, None, None] + off[None, None, :]).astype(np.float32) - nuclei.cx[:, None, None]
    cos = np.cos(nuclei.theta)[:, None, None]
    sin = np.sin(nuclei.theta)[:, None, None]
    u = (dx * cos + dy * sin) / nuclei.rx[:, None, None]
    v = (dy * cos - dx * sin) / nuclei.ry[:, None, None]
    r = np.sqrt(u * u + v * v)
    # About one pixel of anti-aliasing at the boundary, whatever the radius,
    # so small nuclei do not turn into jagged squares.
    min_r = np.minimum(nuclei.rx, nuclei.ry)[:, None, None]
    cover = np.clip((1.0 - r) * min_r + 0.5, 0.0, 1.0)
    rim = nuclei.rim[:, None, None]
    profile = 1.0 - rim + rim * np.minimum(r, 1.0) ** 2
    values = cover * profile * nuclei.strength[:, None, None]
    flat = (iy[:, None, None] + off[None, :, None] + pad) * padded + (ix[:, None, None] + off[None, None, :] + pad)
    # Overlapping nuclei add up, as stacked nuclei in a thick section look
    # darker; bincount does the scatter-add far faster than ufunc.at. The cap
    # keeps crowded spots from turning black.
    canvas = np.bincount(flat.ravel(), weights=values.ravel(), minlength=padded * padded)
    canvas = np.minimum(canvas, 2.2).reshape(padded, padded)[pad:-pad, pad:-pad]
    return canvas.astype(np.float32)


def _nuclei_at(rng: np.random.Generator, cy, cx, radius, aspect, strength, rim) -> _Nuclei:
    """Nuclei at the given centres; size, shape and stain drawn from (low, high) ranges."""
    n = len(cy)
    ry = rng.uniform(*radius, n)
    return _Nuclei(
        cy=np.asarray(cy, dtype=np.float32),
        cx=np.asarray(cx, dtype=np.float32),
        ry=ry.astype(np.float32),
        rx=(ry * rng.uniform(*aspect, n)).astype(np.float32),
        theta=rng.uniform(0.0, np.pi, n).astype(np.float32),
        strength=rng.uniform(*strength, n).astype(np.float32),
        rim=rng.uniform(*rim, n).astype(np.float32),
    )


def _background_nuclei(rng: np.random.Generator) -> _Nuclei:
    """Scattered stromal nuclei: small round ones and thin elongated fibroblasts."""
    n = rng.poisson(rng.uniform(6.0, 40.0))
    cy, cx = rng.uniform(0, PATCH_SIZE - 1, (2, n))
    round_ = _nuclei_at(rng, cy, cx, (1.8, 3.0), (0.75, 1.3), (0.6, 1.0), (0.0, 0.0))
    # A third are fibroblasts: long and thin, so a model cannot equate "big
    # dark blob" with "any elongated nucleus".
    fibro = rng.random(n) < 0.33
    rx = np.where(fibro, rng.uniform(3.0, 5.5, n), round_.rx).astype(np.float32)
    ry = np.where(fibro, rng.uniform(1.0, 1.6, n), round_.ry).astype(np.float32)
    return dataclasses.replace(round_, rx=rx, ry=ry)


def _lymphocyte_aggregate(rng: np.random.Generator) -> _Nuclei:
    """A crowd of small, very dark, round nuclei anywhere in the patch."""
    n = int(rng.integers(10, 36))
    centre = rng.uniform(16, PATCH_SIZE - 16, 2)
    cy, cx = centre[:, None] + rng.normal(0.0, rng.uniform(5.0, 9.0), (2, n))
    keep = (cy >= 0) & (cy < PATCH_SIZE) & (cx >= 0) & (cx < PATCH_SIZE)
    return _nuclei_at(rng, cy[keep], cx[keep], (1.8, 2.5), (0.85, 1.15), (1.1, 1.5), (0.0, 0.0))


def _in_centre(cy, cx, margin):
    """Whether a nucleus reaching `margin` pixels from (cy, cx) touches the centre 32x32."""
    lo, hi = CENTRE_START - 0.5, CENTRE_STOP - 0.5
    return (cy + margin > lo) & (cy - margin < hi) & (cx + margin > lo) & (cx - margin < hi)


def _tumour_cluster(rng: np.random.Generator, in_centre: bool) -> _Nuclei:
    """Large, dark, pleomorphic, crowded nuclei: inside the centre, or wholly outside it."""
    n = int(rng.integers(5, 18))
    spread = rng.uniform(4.0, 6.5)
    candidates = 4 * n
    radius_lo, radius_hi = 3.5, 6.0
    aspect_lo, aspect_hi = 0.75, 1.3
    # Draw sizes first so placement can reject nuclei by their full extent.
    probe = _nuclei_at(
        rng,
        np.zeros(candidates),
        np.zeros(candidates),
        (radius_lo, radius_hi),
        (aspect_lo, aspect_hi),
        (1.0, 1.7),
        (0.25, 0.5),
    )
    extent = np.maximum(probe.rx, probe.ry) + 1.0  # +1: the anti-aliased edge and rounding
    if in_centre:
        centre = rng.uniform(40.0, 56.0, 2)
        cy, cx = centre[:, None] + rng.normal(0.0, spread, (2, candidates))
        # Nucleus centres stay inside the centre square, so every positive has
        # tumour pixels there; edges may spill a little, as real tumour does.
        keep = (cy >= CENTRE_START + 1) & (cy <= CENTRE_STOP - 2) & (cx >= CENTRE_START + 1) & (cx <= CENTRE_STOP - 2)
    else:
        # A cluster centre at least 8 px outside the centre square, then drop
        # any nucleus whose extent would reach into it.
        points = rng.uniform(4.0, PATCH_SIZE - 5.0, (16, 2))
        outside = ~_in_centre(points[:, 0], points[:, 1], 8.0)
        centre = points[int(np.argmax(outside))] if outside.any() else np.array([6.0, 6.0])
        cy, cx = centre[:, None] + rng.normal(0.0, spread, (2, candidates))
        keep = (cy >= 0) & (cy <= PATCH_SIZE - 1) & (cx >= 0) & (cx <= PATCH_SIZE - 1) & ~_in_centre(cy, cx, extent)
    chosen = np.flatnonzero(keep)[:n]
    return _Nuclei(
        cy=cy[chosen].astype(np.float32),
        cx=cx[chosen].astype(np.float32),
        ry=probe.ry[chosen],
        rx=probe.rx[chosen],
        theta=probe.theta[chosen],
        strength=probe.strength[chosen],
        rim=probe.rim[chosen],
    )


def _tissue_mask(rng: np.random.Generator, label: int, away_from: np.ndarray | None) -> tuple[np.ndarray, str]:
    """1 where there is tissue, 0 on white background, with a soft boundary."""
    draw = rng.random()
    if draw >= WHITE_RATE:
        return np.ones((PATCH_SIZE, PATCH_SIZE), dtype=np.float32), "none"
    if draw < NEARLY_WHITE_RATE and label == 0 and away_from is None:
        # A few specks of tissue on an empty slide, like Kaggle's blank patches.
        specks = _smooth_noise(rng, 12)
        return (1.0 / (1.0 + np.exp(-(specks - 2.3) * 3.0))).astype(np.float32), "nearly_all"
    yy, xx = np.mgrid[0:PATCH_SIZE, 0:PATCH_SIZE].astype(np.float32) - (PATCH_SIZE - 1) / 2
    if away_from is not None:
        # Put the white area on the far side from a decoy cluster so that the
        # decoy stays visible.
        middle = (PATCH_SIZE - 1) / 2
        toward = np.arctan2(away_from[0] - middle, away_from[1] - middle)
        angle = toward + np.pi + rng.uniform(-0.6, 0.6)
    else:
        angle = rng.uniform(0.0, 2 * np.pi)
    ny, nx = np.sin(angle), np.cos(angle)
    half = (CENTRE_STOP - CENTRE_START) / 2
    reach = half * (abs(ny) + abs(nx))  # farthest centre-square corner along the normal
    # Positives keep the whole centre square on tissue (plus room for the
    # wobble), otherwise the white could erase the tumour that sets the label.
    low = reach + 14.0 if label else (0.0 if away_from is not None else -12.0)
    offset = rng.uniform(low, 44.0)
    distance = yy * ny + xx * nx + 3.0 * _smooth_noise(rng, 4)
    return (1.0 / (1.0 + np.exp((distance - offset) / 1.5))).astype(np.float32), "partial"


def _stain_vector(rng: np.random.Generator, base) -> np.ndarray:
    """A unit optical-density vector near `base`: stain hue varies from slide to slide."""
    v = np.asarray(base) + rng.normal(0.0, 0.04, 3)
    v = np.clip(v, 0.01, None)
    return (v / np.linalg.norm(v)).astype(np.float32)


def make_patch_with_info(
    rng: np.random.Generator, label: int, decoy_rate: float = DECOY_RATE
) -> tuple[np.ndarray, PatchInfo]:
    """One synthetic patch for `label` (0 or 1), plus what was drawn into it; `decoy_rate` of the negatives
    carry a tumour cluster in the outer ring."""
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label!r}")
    if not 0.0 <= decoy_rate <= 1.0:
        raise ValueError(f"decoy_rate must be in [0, 1], got {decoy_rate!r}")
    size = PATCH_SIZE
    decoy = label == 0 and rng.random() < decoy_rate  # drawn whatever the rate: the rest of the patch is the same

    parts = [_background_nuclei(rng)]
    # Lymphocyte aggregates land anywhere, centre included and whatever the
    # label, so "something dark in the centre" is not enough to call tumour.
    if rng.random() < LYMPHOCYTE_RATE:
        parts.append(_lymphocyte_aggregate(rng))
    tumour = (
        _tumour_cluster(rng, in_centre=True) if label else (_tumour_cluster(rng, in_centre=False) if decoy else None)
    )
    background_h = _render_nuclei(_Nuclei.concat(parts))
    tumour_map = _render_nuclei(tumour) if tumour is not None else np.zeros((size, size), np.float32)
    nuclear = np.maximum(background_h, tumour_map)
    # Chromatin is granular, not flat: modulate nuclear stain pixel by pixel.
    nuclear *= 1.0 + 0.15 * _noise(rng, (size, size))

    decoy_centre = np.array([tumour.cy.mean(), tumour.cx.mean()]) if decoy and tumour.cy.size else None
    tissue, white = _tissue_mask(rng, label, decoy_centre)

    # Stroma: eosin with large blotches plus wavy collagen fibres that fade in
    # and out, so no patch is a clean stripe pattern.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    fibre_angle = rng.uniform(0.0, np.pi)
    fibre_period = rng.uniform(5.0, 12.0)
    phase = (2 * np.pi / fibre_period) * (yy * np.sin(fibre_angle) + xx * np.cos(fibre_angle))
    fibres = np.sin(phase + 2.5 * _smooth_noise(rng, 5)) * np.clip(0.5 + 0.5 * _smooth_noise(rng, 4), 0, 1)
    eosin = rng.uniform(0.3, 0.65) * (1.0 + 0.2 * _smooth_noise(rng, 4) + 0.15 * fibres)
    eosin += 0.04 * _noise(rng, (size, size))
    haem = rng.uniform(0.05, 0.15) + 0.02 * _noise(rng, (size, size)) + nuclear
    # Slide-level brightness/stain strength and a faint glass tint where empty.
    strength = np.float32(rng.uniform(0.85, 1.15))
    eosin = strength * tissue * np.clip(eosin, 0.0, None)
    haem = strength * tissue * np.clip(haem, 0.0, None)
    glass = np.float32(rng.uniform(0.02, 0.06)) * (1.0 - tissue)

    h_vec = _stain_vector(rng, _HAEMATOXYLIN)
    e_vec = _stain_vector(rng, _EOSIN)
    density = haem[..., None] * h_vec + eosin[..., None] * e_vec + glass[..., None]
    rgb = 255.0 * np.exp(-density) + 2.0 * _noise(rng, (size, size, 3))
    pixels = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return pixels, PatchInfo(label=label, decoy=decoy, white=white, tumour_map=tumour_map)


def make_patch(rng: np.random.Generator, label: int, decoy_rate: float = DECOY_RATE) -> np.ndarray:
    """One synthetic (96, 96, 3) uint8 patch; label 1 means tumour in the centre 32x32."""
    return make_patch_with_info(rng, label, decoy_rate)[0]


def patch_id(seed: int, split: str, index: int) -> str:
    """Kaggle-looking 40-hex id, stable for (seed, split, index)."""
    return hashlib.sha1(f"{seed}:{split}:{index}".encode()).hexdigest()


def patch_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator for one patch, independent of every other patch's draws."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def draw_patch(seed: int, split: str, index: int, decoy_rate: float = DECOY_RATE) -> tuple[np.ndarray, int]:
    """Pixels and label of patch `index` of `split`, exactly as `write_layout` writes it."""
    rng = patch_rng(seed, split, index)
    label = int(rng.random() < POSITIVE_RATE)
    return make_patch(rng, label, decoy_rate), label


def _write_chunk(
    out_dir: str, seed: int, split: str, start: int, stop: int, decoy_rate: float = DECOY_RATE
) -> list[tuple[str, int]]:
    """Write patches start..stop-1 of one split; returns (id, label) in index order."""
    rows = []
    folder = Path(out_dir) / split
    for index in range(start, stop):
        pixels, label = draw_patch(seed, split, index, decoy_rate)
        ident = patch_id(seed, split, index)
        tifffile.imwrite(folder / f"{ident}.tif", pixels, photometric="rgb")
        rows.append((ident, label))
    return rows


def _write_csv(path: Path, rows: list[tuple[str, int]]) -> None:
    with open(path, "w", newline="") as f:
        f.write("id,label\n")
        f.writelines(f"{ident},{label}\n" for ident, label in rows)


def write_layout(
    out_dir, num_train: int, num_test: int, seed: int, workers: int = 1, decoy_rate: float = DECOY_RATE
) -> dict:
    """Write the Kaggle layout under out_dir; returns {"train", "test", "positives"} counts.

    "positives" counts train patches with label 1. Existing files with other
    names are left alone, so use an empty or new out_dir.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError("num_train and num_test must be >= 0")
    out = Path(out_dir)
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    counts = {"train": num_train, "test": num_test}
    # Chunks small enough to balance across workers, big enough that process
    # overhead stays negligible.
    chunk = 250
    jobs = [
        (str(out), seed, split, start, min(start + chunk, counts[split]), decoy_rate)
        for split in SPLITS
        for start in range(0, counts[split], chunk)
    ]
    if workers > 1 and len(jobs) > 1:
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_write_chunk, *zip(*jobs)))
    else:
        results = [_write_chunk(*job) for job in jobs]
    rows = {split: [] for split in SPLITS}
    for job, result in zip(jobs, results):
        rows[job[2]].extend(result)
    _write_csv(out / "train_labels.csv", rows["train"])
    # Kaggle's sample submission lists every test id with a placeholder label.
    _write_csv(out / "sample_submission.csv", [(ident, 0) for ident, _ in rows["test"]])
    return {"train": num_train, "test": num_test, "positives": sum(label for _, label in rows["train"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write train/, test/ and the CSVs into")
    parser.add_argument("--num_train", type=int, default=2000)
    parser.add_argument("--num_test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes; output is identical for any value")
    parser.add_argument(
        "--decoy_rate",
        type=float,
        default=DECOY_RATE,
        help="share of negatives with a tumour cluster outside the centre (0 for the demo's easier task)",
    )
    args = parser.parse_args(argv)
    if not 0.0 <= args.decoy_rate <= 1.0:
        parser.error(f"--decoy_rate={args.decoy_rate}: must be in [0, 1]")
    summary = write_layout(
        args.out_dir, args.num_train, args.num_test, args.seed, workers=max(1, args.workers), decoy_rate=args.decoy_rate
    )
    print(
        f"wrote {summary['train']} train ({summary['positives']} positive) and "
        f"{summary['test']} test patches to {os.fspath(args.out_dir)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
