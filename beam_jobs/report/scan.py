"""What the EDA report reads from the patches themselves: seeded samples, flagged patches, stain histograms.

stats.json holds exact totals over every valid file but no pixels. The pictures of the report come
from patches read here, always drawn the same way: the valid rows of the manifest sorted by id (so
the manifest's row order does not matter), then a permutation drawn with the report's seed. The same
inputs and seed give the same report.

    draw(manifest, n, seed)          up to N valid rows, in random (seeded) order
    scan(rows, thresholds, keep)     reads them: per-patch flags (stats.json's rule) and H&E histograms
    duplicate_groups(text, manifest) the groups of duplicates.csv with the path of every member
"""

from __future__ import annotations

import csv
import dataclasses
import io

import numpy as np

from pcam_tfds.core import channel_stats, layout, patches, stains

# Stain amounts in optical-density units (pcam_tfds.core.stains): H&E tissue lies within about -0.5..2;
# values outside the range are counted in the end bins.
HED_RANGE = (-0.5, 2.5)
HED_BINS = 150
GALLERY_FLAGS = ("background", "dark", "blank")
_CHUNK = 256  # patches flagged and histogrammed at once


class ScanError(RuntimeError):
    """A patch the manifest calls valid cannot be read now: the folder changed since validation."""


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    source: str
    label: int
    path: str

    @property
    def group(self) -> str:
        return channel_stats.group_of(self.source, self.label)


def valid_rows(manifest, source: str | None = None, label: int | None = None) -> list[Row]:
    """The valid rows of a manifest (pyarrow Table with id, source, label, path, valid), sorted by source and id."""
    m = manifest.to_pydict()
    rows = [
        Row(i, s, lab, p)
        for i, s, lab, p, v in zip(m["id"], m["source"], m["label"], m["path"], m["valid"])
        if v and (source is None or s == source) and (label is None or lab == label)
    ]
    return sorted(rows, key=lambda r: (r.source, r.id))


def draw(rows: list[Row], n: int, seed: int) -> list[Row]:
    """Up to N of ROWS in a random order drawn with SEED (not sorted: the order is part of the draw)."""
    order = np.random.default_rng(seed).permutation(len(rows))[:n]
    return [rows[k] for k in order]


def read(row: Row) -> np.ndarray:
    try:
        return patches.read_patch(row.path)
    except (OSError, patches.PatchError) as e:
        raise ScanError(f"{row.path}: no longer readable ({e}); rerun beam_jobs.validate") from None


@dataclasses.dataclass
class Scan:
    """What a pass over drawn patches found.

    scanned: {group: patches read}; flag_counts: {flag: {group: flagged}};
    flagged: {flag: [(row, pixels)]}, the first KEEP of each flag in draw order;
    hed_histograms: {group: (3, HED_BINS) counts of haematoxylin, eosin and DAB amounts per pixel}.
    """

    scanned: dict[str, int]
    flag_counts: dict[str, dict[str, int]]
    flagged: dict[str, list[tuple[Row, np.ndarray]]]
    hed_histograms: dict[str, np.ndarray]

    @property
    def total(self) -> int:
        return sum(self.scanned.values())


def hed_histogram(pixels: np.ndarray) -> np.ndarray:
    """(3, HED_BINS) counts of each stain's amount over every pixel of a stack of patches (end bins hold the rest)."""
    hed = stains.rgb_to_hed(pixels).reshape(-1, 3)
    lo, hi = HED_RANGE
    index = np.clip(((hed - lo) / (hi - lo) * HED_BINS).astype(np.int64), 0, HED_BINS - 1)
    return np.stack([np.bincount(index[:, k], minlength=HED_BINS) for k in range(3)])


def scan(rows: list[Row], thresholds: channel_stats.Thresholds, keep: int) -> Scan:
    """Reads ROWS in order; flags each patch with stats.json's rule and histograms its stains by group."""
    groups = channel_stats.LABEL_GROUPS
    result = Scan(
        scanned=dict.fromkeys(groups, 0),
        flag_counts={f: dict.fromkeys(groups, 0) for f in GALLERY_FLAGS},
        flagged={f: [] for f in GALLERY_FLAGS},
        hed_histograms={g: np.zeros((3, HED_BINS), np.int64) for g in groups},
    )
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        pixels = np.stack([read(r) for r in chunk])
        flags = channel_stats.patch_flags(pixels, thresholds)
        chunk_groups = np.array([r.group for r in chunk])
        for g in groups:
            mine = chunk_groups == g
            if mine.any():
                result.scanned[g] += int(mine.sum())
                result.hed_histograms[g] += hed_histogram(pixels[mine])
        for f in GALLERY_FLAGS:
            for k in np.flatnonzero(flags[f]):
                result.flag_counts[f][chunk[k].group] += 1
                if len(result.flagged[f]) < keep:
                    result.flagged[f].append((chunk[k], pixels[k]))
    return result


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    pixel_hash: str
    kind: str
    conflicting_labels: bool
    members: list[Row]


def duplicate_groups(duplicates_csv: str, manifest, limit: int) -> tuple[list[DuplicateGroup], int]:
    """(the first LIMIT groups of duplicates.csv, in file order, the number of groups) with each member's path."""
    paths = {(r.source, r.id): r.path for r in valid_rows(manifest)}
    groups: dict[str, DuplicateGroup] = {}
    for line in csv.DictReader(io.StringIO(duplicates_csv)):
        h = line["pixel_hash"]
        if h not in groups:
            groups[h] = DuplicateGroup(h, line["kind"], line["conflicting_labels"] == "True", [])
        label = int(line["label"]) if line["label"] not in ("", None) else layout.NO_LABEL
        path = paths.get((line["source"], line["id"]))
        if path is not None:  # a member the manifest does not list as valid cannot be drawn
            groups[h].members.append(Row(line["id"], line["source"], label, path))
    shown = [g for g in groups.values() if len(g.members) >= 2]
    return shown[:limit], len(groups)
