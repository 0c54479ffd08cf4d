"""Deterministic, stratified, leak-free train/validation assignment.

Membership is a function of the ids, labels, pixel hashes, optional slide
ids and the seed: never of listing order or of how many workers ran. The
steps:

1. Units. Patches that must stay together form one unit: patches with
   identical pixels (an exact duplicate on both sides would leak) and, when a
   patch-to-slide CSV is given, all patches of one slide (random splits of
   Kaggle train share slides between train and validation and inflate
   validation AUC). Units are the connected components of those relations.
2. Strata. A unit's stratum is its majority label (ties count as positive).
3. Order. Within a stratum, units are ordered by SHA-256 of "seed:salt:key",
   where key is the unit's smallest id: a pseudo-random order that depends
   on nothing but the data and the seed.
4. Take. Units are taken in that order while that brings the taken patch
   count closer to fraction x stratum size. With one patch per unit this is
   exact: round(fraction x n) per label.

The sampled configs use the same procedure with another salt to choose which
units are kept at all, before the validation split is drawn from them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping

TRAIN, VALIDATION, UNUSED = "train", "validation", "unused"


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller root wins, so the result does not depend on the order of unions.
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def units(
    items: Iterable[tuple[str, int, str | None]], slides: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Groups (id, label, pixel_hash) items into units; returns {unit key: sorted ids}."""
    items = list(items)
    if not slides and len({id_ for id_, _, _ in items}) == len(items):
        # Without slides the only link is a shared pixel hash: the components are the groups of one hash.
        by_hash = defaultdict(list)
        for id_, _, pixel_hash in items:
            by_hash[pixel_hash or "id:" + id_].append(id_)
        # Almost every group is one id: no min or sort to call for it.
        return {
            ids[0] if len(ids) == 1 else min(ids): ids if len(ids) == 1 else sorted(ids) for ids in by_hash.values()
        }
    uf = _UnionFind()
    for id_, _, pixel_hash in items:
        node = "id:" + id_
        uf.find(node)
        if pixel_hash:
            uf.union(node, "px:" + pixel_hash)
        if slides and id_ in slides:
            uf.union(node, "slide:" + slides[id_])
    groups = defaultdict(list)
    for node in list(uf.parent):
        if node.startswith("id:"):
            groups[uf.find(node)].append(node[3:])
    return {min(ids): sorted(ids) for ids in groups.values()}


def _order(seed: int, salt: str, key: str) -> bytes:
    return hashlib.sha256(f"{seed}:{salt}:{key}".encode()).digest()


def _in_order(keys: list[str], seed: int, salt: str) -> list[str]:
    """KEYS sorted by `_order` (ties in their given order): the digests sorted as fixed-width bytes by numpy, which
    orders them as Python orders bytes of one length, without a key call per comparison."""
    import numpy as np

    prefix = f"{seed}:{salt}:"
    digests = np.array([hashlib.sha256((prefix + k).encode()).digest() for k in keys], dtype="S32")
    return [keys[i] for i in np.argsort(digests, kind="stable").tolist()] if len(keys) else []


def take_stratified(
    unit_ids: Mapping[str, list[str]], labels: Mapping[str, int], fraction: float, seed: int, salt: str
) -> set[str]:
    """The unit keys taken when `fraction` of each stratum's patches is taken (see module docstring)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction ({fraction}) must be in [0, 1]")
    strata = defaultdict(list)
    for key, ids in unit_ids.items():
        positives = labels[ids[0]] if len(ids) == 1 else sum(labels[i] for i in ids)
        strata[int(2 * positives >= len(ids))].append(key)
    taken = set()
    for keys in strata.values():
        target = fraction * sum(len(unit_ids[k]) for k in keys)
        count = 0
        for key in _in_order(keys, seed, salt):
            size = len(unit_ids[key])
            if abs(count + size - target) < abs(count - target):
                taken.add(key)
                count += size
            if count >= target:
                break
    return taken


def assign_splits(
    items: Iterable[tuple[str, int, str | None]],
    validation_fraction: float,
    seed: int,
    sample_fraction: float = 1.0,
    slides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Maps every train id to 'train', 'validation' or (outside the sample) 'unused'.

    `items` are (id, label, pixel_hash) of the valid labelled patches; labels are 0 or 1.
    """
    items = list(items)
    labels = {id_: label for id_, label, _ in items}
    unit_ids = units(items, slides)
    if sample_fraction < 1.0:
        kept = take_stratified(unit_ids, labels, sample_fraction, seed, "sample")
        unit_ids = {k: v for k, v in unit_ids.items() if k in kept}
    held_out = take_stratified(unit_ids, labels, validation_fraction, seed, "validation")
    result = dict.fromkeys(labels, UNUSED)
    for key, ids in unit_ids.items():
        split = VALIDATION if key in held_out else TRAIN
        for id_ in ids:
            result[id_] = split
    return result
