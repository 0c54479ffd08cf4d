"""Exact pixel statistics of PCam patches by label: the accumulator, stats.json, and the loader a trainer calls.

`PatchStats` holds exact running sums over a set of patches (256-bin histograms per channel as
int64, patch flags); `read_groups` reads a batch of file records into one stack of pixels per
group; `build_stats` turns the combined accumulators into the stats.json document and checks that
every listed file is accounted for; `load_channel_stats(path)` gives a trainer the train mean and
std. `beam_jobs.stats` runs them over a folder with Beam (its module docstring describes stats.json);
nothing here imports Beam or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction

import numpy as np

from pcam_tfds.core import fileio, layout, patches

STATS_JSON = "stats.json"
CHANNELS = ("r", "g", "b")
NUM_BINS = 256
NEGATIVE, POSITIVE, TEST = "negative", "positive", "test"
LABEL_GROUPS = (NEGATIVE, POSITIVE, TEST)  # the groups the combiner sees
MERGED_GROUPS = {"train": (NEGATIVE, POSITIVE), "all": (NEGATIVE, POSITIVE, TEST)}  # derived at the end
GROUP_LABEL = {NEGATIVE: 0, POSITIVE: 1, TEST: layout.NO_LABEL}
FLAGS = ("background", "dark", "blank", "dark_or_blank")


class StatsError(RuntimeError):
    """The job lost or invented files, or its output is not what `load_channel_stats` expects."""


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When a patch counts as background, dark or blank (the docstring of beam_jobs.stats says how)."""

    white_level: int = 220
    background_share: float = 0.5
    dark_mean: float = 40.0
    blank_std: float = 10.0

    def __post_init__(self):
        if not 0 <= self.white_level < 255:
            raise ValueError(f"white_level ({self.white_level}) must be in 0..254: pixels above it are near-white")
        if not 0 <= self.background_share < 1:
            raise ValueError(f"background_share ({self.background_share}) must be in [0, 1)")
        if not 0 <= self.dark_mean <= 255 or self.blank_std < 0:
            raise ValueError(f"dark_mean ({self.dark_mean}) must be in 0..255 and blank_std ({self.blank_std}) >= 0")

    def describe(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "near_white_pixel": f"all three channels > {self.white_level}",
            "background": f"more than {self.background_share:.0%} of the pixels are near-white",
            "dark": f"mean of all values (every pixel and channel) < {self.dark_mean}",
            "blank": f"standard deviation of all values < {self.blank_std}",
            "dark_or_blank": "dark or blank",
        }


DEFAULT_THRESHOLDS = Thresholds()


def group_of(source: str, label: int) -> str:
    """The statistics group of a valid file."""
    if source == layout.TEST:
        return TEST
    if label == 0:
        return NEGATIVE
    if label == 1:
        return POSITIVE
    raise ValueError(f"a valid {source} file has label {label!r}; expected 0 or 1")


def patch_flags(pixels: np.ndarray, thresholds: Thresholds) -> dict[str, np.ndarray]:
    """{flag: (N,) bool}: which of a stack of uint8 patches (N, H, W, 3) are background, dark, blank, dark_or_blank."""
    return _flag_patches(pixels, thresholds)[1]


def _flag_patches(pixels: np.ndarray, thresholds: Thresholds) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(near-white pixels per patch, patch_flags) of a stack of patches, in one pass."""
    n = pixels.shape[0]
    # Three elementwise minimums: much faster than .all(axis=-1) over an axis of length 3.
    darkest = np.minimum(np.minimum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])
    white = (darkest > thresholds.white_level).reshape(n, -1)
    white_per_patch = white.sum(axis=1)
    flat = pixels.reshape(n, -1)
    # Exact per-patch sums in int64 (a 96x96x3 patch sums to at most 27648 * 255**2).
    s1 = flat.sum(axis=1, dtype=np.int64)
    s2 = np.einsum("ij,ij->i", flat, flat, dtype=np.int64, casting="unsafe")
    values = flat.shape[1]
    mean = s1 / values
    std = np.sqrt(np.maximum(s2 / values - mean * mean, 0.0))
    background = white_per_patch > thresholds.background_share * white.shape[1]
    dark, blank = mean < thresholds.dark_mean, std < thresholds.blank_std
    return white_per_patch, {"background": background, "dark": dark, "blank": blank, "dark_or_blank": dark | blank}


@dataclasses.dataclass(eq=False)  # no elementwise == on the histogram; compare summary() instead
class PatchStats:
    """Exact running sums over a set of patches: the combiner's accumulator."""

    patches: int = 0
    histogram: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((len(CHANNELS), NUM_BINS), np.int64))
    near_white_pixels: int = 0
    flags: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(FLAGS, 0))

    def add(self, pixels: np.ndarray, thresholds: Thresholds) -> PatchStats:
        """Adds one patch (H, W, 3) or a stack of patches (N, H, W, 3) of uint8, vectorised over the stack."""
        if pixels.ndim not in (3, 4) or pixels.shape[-1] != len(CHANNELS) or pixels.dtype != np.uint8:
            raise ValueError(f"expected uint8 patches of shape (N, H, W, 3), got {pixels.dtype} {pixels.shape}")
        if pixels.ndim == 3:
            pixels = pixels[np.newaxis]
        n = pixels.shape[0]
        if n == 0:
            return self
        for c in range(len(CHANNELS)):
            self.histogram[c] += np.bincount(pixels[..., c].ravel(), minlength=NUM_BINS)
        white_per_patch, flags = _flag_patches(pixels, thresholds)
        self.near_white_pixels += int(white_per_patch.sum())
        for name, hit in flags.items():
            self.flags[name] += int(hit.sum())
        self.patches += n
        return self

    def merge(self, other: PatchStats) -> PatchStats:
        self.patches += other.patches
        self.histogram += other.histogram
        self.near_white_pixels += other.near_white_pixels
        for k in FLAGS:
            self.flags[k] += other.flags[k]
        return self

    def summary(self) -> dict:
        """The JSON form: counts, exact sums, mean and std per channel, histograms, flag shares."""
        pixels = int(self.histogram[0].sum())
        sums = [sum(int(c) * v for v, c in enumerate(h)) for h in self.histogram]
        sums_sq = [sum(int(c) * v * v for v, c in enumerate(h)) for h in self.histogram]
        if pixels:
            mean = [float(Fraction(s, pixels)) for s in sums]
            std = [math.sqrt(Fraction(pixels * q - s * s, pixels * pixels)) for s, q in zip(sums, sums_sq)]
        else:
            mean = std = None
        out = {
            "patches": self.patches,
            "pixels": pixels,
            "channels": list(CHANNELS),
            "mean": mean,
            "std": std,
            "sum": sums,
            "sum_sq": sums_sq,
            "near_white_pixel_share": self.near_white_pixels / pixels if pixels else None,
        }
        for k in FLAGS:
            out[f"{k}_patches"] = self.flags[k]
            out[f"{k}_share"] = self.flags[k] / self.patches if self.patches else None
        out["histogram"] = self.histogram.tolist()
        return out


def rejected_record(rec: dict, reason: str, detail: str = "") -> dict:
    """What stats.json counts of a file left out: its reason."""
    return {"source": rec["source"], "id": rec["id"], "path": rec["path"], "reason": reason, "detail": detail}


def read_groups(batch: list[dict]) -> tuple[dict[str, np.ndarray], list[dict]]:
    """A batch of valid file records -> ({group: stack of their pixels}, rejected records of files that no
    longer decode). Per-file work is vectorised over the stack by PatchStats.add."""
    by_group, rejected = {}, []
    for rec in batch:
        pixels, reason, detail = patches.try_read_patch(rec["path"])
        if pixels is None:
            rejected.append(rejected_record(rec, reason, detail))
            continue
        try:
            group = group_of(rec["source"], rec["label"])
        except ValueError as e:
            raise ValueError(f"{rec['path']}: {e}") from None
        by_group.setdefault(group, []).append(pixels)
    return {group: np.stack(arrays) for group, arrays in by_group.items()}, rejected


def build_stats(group_stats, rejected_counts, thresholds: Thresholds, num_listed: int | None, source: dict) -> dict:
    """The stats.json document from the combined (group, PatchStats) and the rejected counts by reason."""
    by_group = {g: PatchStats() for g in LABEL_GROUPS}
    for group, acc in group_stats:
        if group not in by_group:
            raise StatsError(f"unknown group {group!r}; expected one of {LABEL_GROUPS}")
        by_group[group].merge(acc)
    for merged, parts in MERGED_GROUPS.items():
        by_group[merged] = PatchStats()
        for part in parts:
            by_group[merged].merge(by_group[part])
    rejected_by_reason = dict(sorted(rejected_counts))
    valid = by_group["all"].patches
    total = valid + sum(rejected_by_reason.values())
    if num_listed is not None and total != num_listed:
        raise StatsError(f"{num_listed} files were listed but {total} came out of the pipeline (valid + rejected)")
    groups = {g: {"label": GROUP_LABEL.get(g), **acc.summary()} for g, acc in by_group.items()}
    return {
        **source,
        "thresholds": thresholds.describe(),
        "files": {"total": total, "valid": valid, "rejected": total - valid, "rejected_by_reason": rejected_by_reason},
        "label_counts": {"0": by_group[NEGATIVE].patches, "1": by_group[POSITIVE].patches},
        "test_files": by_group[TEST].patches,
        "groups": groups,
    }


def load_stats(path: str) -> dict:
    """stats.json as a dict; PATH is the file or the folder that holds it."""
    if not path.endswith(".json"):
        path = layout.join(path, STATS_JSON)
    try:
        with fileio.open_read(path) as f:  # a local stats.json is read without importing Beam
            return json.load(f)
    except json.JSONDecodeError as e:
        raise StatsError(f"{path}: not JSON ({e}); expected the stats.json of beam_jobs.stats") from None


def load_channel_stats(
    path: str, group: str = "train", scale: float = 1.0
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean[3], std[3]) per channel (r, g, b) of GROUP from stats.json, times SCALE.

    Values are on the 0..255 pixel scale; pass scale=1/255 for images scaled to [0, 1].
    Use them as `(x - mean) / std`.
    """
    stats = load_stats(path)
    groups = stats.get("groups", {})
    if group not in groups:
        raise StatsError(f"{path}: no group {group!r} in stats.json; it has {sorted(groups)}")
    g = groups[group]
    if not g["patches"]:
        raise StatsError(f"{path}: group {group!r} has no valid patches, so no channel statistics")
    if any(s == 0 for s in g["std"]):
        raise StatsError(f"{path}: group {group!r} has a channel with std 0 {g['std']}; it cannot normalise")
    return tuple(m * scale for m in g["mean"]), tuple(s * scale for s in g["std"])
