"""Split assignment: deterministic, stratified, duplicates and slides kept on one side."""

from __future__ import annotations

import hashlib
import random

import pytest

from pcam_tfds.core import splits


def _items(n, positive_share=0.4, seed=0):
    rng = random.Random(seed)
    return [
        (hashlib.sha1(f"{seed}:{i}".encode()).hexdigest(), int(rng.random() < positive_share), f"px{i}")
        for i in range(n)
    ]


def test_exact_stratified_fractions():
    items = _items(1000)
    result = splits.assign_splits(items, 0.2, seed=1)
    for label in (0, 1):
        ids = [i for i, lab, _ in items if lab == label]
        held = sum(result[i] == splits.VALIDATION for i in ids)
        assert held == round(0.2 * len(ids))


def test_independent_of_order_and_depends_on_seed():
    items = _items(500)
    a = splits.assign_splits(items, 0.2, seed=7)
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    assert splits.assign_splits(shuffled, 0.2, seed=7) == a
    assert splits.assign_splits(items, 0.2, seed=8) != a


def test_duplicates_never_straddle():
    items = _items(300)
    # 30 pairs of patches with identical pixels.
    items += [(f"dup{i}", items[i][1], items[i][2]) for i in range(0, 300, 10)]
    result = splits.assign_splits(items, 0.3, seed=0)
    by_hash = {}
    for id_, _, h in items:
        by_hash.setdefault(h, set()).add(result[id_])
    assert all(len(s) == 1 for s in by_hash.values())


def test_slides_kept_together():
    items = _items(400)
    slides = {id_: f"slide{k % 23}" for k, (id_, _, _) in enumerate(items)}
    result = splits.assign_splits(items, 0.2, seed=0, slides=slides)
    by_slide = {}
    for id_, _, _ in items:
        by_slide.setdefault(slides[id_], set()).add(result[id_])
    assert all(len(s) == 1 for s in by_slide.values())
    share = sum(v == splits.VALIDATION for v in result.values()) / len(items)
    assert 0.1 < share < 0.3


def test_sample_fraction_keeps_stratified_share_and_marks_the_rest_unused():
    items = _items(2000)
    result = splits.assign_splits(items, 0.2, seed=0, sample_fraction=0.25)
    kept = [i for i, lab, _ in items if result[i] != splits.UNUSED]
    assert len(kept) == pytest.approx(500, abs=2)
    positives = sum(lab for i, lab, _ in items if result[i] != splits.UNUSED)
    assert positives / len(kept) == pytest.approx(sum(lab for _, lab, _ in items) / len(items), abs=0.005)


def test_bad_fraction():
    with pytest.raises(ValueError, match=r"fraction \(1.5\)"):
        splits.assign_splits(_items(10), 1.5, seed=0)


def test_units_are_taken_in_the_order_of_their_hash():
    # numpy's sort of the digests (splits._in_order) is Python's sort by them: the order fixes split membership.
    keys = [f"{k:040x}" for k in range(0, 5000, 7)] + ["", "é", "a" * 200]
    assert splits._in_order(keys, 3, "validation") == sorted(keys, key=lambda k: splits._order(3, "validation", k))
    assert splits._in_order([], 3, "validation") == []
