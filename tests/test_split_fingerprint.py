"""Split membership is pinned: a recorded fingerprint of the local build's routing for fixed folders and seeds.

The fingerprints were recorded with the code before issue 12's refactor (commit dd3fe54); a change that
moves any patch to another split, or adds or drops one, changes them. If a change of membership is
intended, say so in the commit and record the new values.

Issue 39 changed the pixel hash (manifest version 2: XXH3-128 instead of BLAKE2b-128; dataset 2.0.0) and the
fingerprints stayed as recorded, on purpose: membership depends on which patches share a hash (the units of
`core.splits`, keyed and ordered by their smallest id), never on the hash's value, so any collision-free
hash gives the same splits. `test_the_splits_depend_on_shared_hashes_not_their_values` pins that.
"""

from __future__ import annotations

import hashlib

import pytest
from kaggle_folders import make_clean, make_with_problems

from pcam_tfds import local_steps

CASES = {
    # (folder, validation_fraction, sample_fraction, seed, slides): sha256 of the sorted "id,split" lines
    "problems_full": ("problems", 0.2, 1.0, 42, False),
    "clean_full": ("clean", 0.2, 1.0, 0, False),
    "clean_sample": ("clean", 0.3, 0.25, 7, False),
    "clean_slides": ("clean", 0.2, 1.0, 3, True),
}
FINGERPRINTS = {
    "problems_full": "c3e82b230225c51efdda9ac4ff646cedf402a4920f22eca3b5e66dc94e6ba822",
    "clean_full": "98f2209b47ab071bd19c1c359a6b59a507d0693b0ad33b59d506abc8844c583f",
    "clean_sample": "17a401451d64c63c82fb3694d275473864dd2994cdeda37a506ff90990e3ca50",
    "clean_slides": "db8151dc9573f44743f23ede0dcd2991c094d4c7a774b1f44d6638132aabb2d3",
}


def membership_lines(manual_dir, checks_dir, validation_fraction, sample_fraction, seed, slides) -> list[str]:
    counts = {}
    generators = local_steps.split_generators(
        str(manual_dir), str(checks_dir), validation_fraction, sample_fraction, seed, slides=slides, counts=counts
    )
    lines = sorted(f"{key},{split}" for split, gen in generators.items() for key, _ in gen)
    return lines + [f"unused,{counts.get('unused', 0)}"]


def fingerprint(lines: list[str]) -> str:
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fingerprint")
    make_with_problems(root / "problems")
    make_clean(root / "clean", num_train=300, num_test=30, seed=5)
    return root


@pytest.mark.parametrize("case", sorted(CASES))
def test_split_membership_matches_the_recorded_fingerprint(case, folders, tmp_path):
    folder, validation_fraction, sample_fraction, seed, with_slides = CASES[case]
    manual_dir = folders / folder
    slides = None
    if with_slides:  # 13 slides, assigned by the sorted order of the train ids
        ids = sorted(p.stem for p in (manual_dir / "train").iterdir())
        slides = {id_: f"slide{i % 13}" for i, id_ in enumerate(ids)}
    lines = membership_lines(manual_dir, tmp_path / "checks", validation_fraction, sample_fraction, seed, slides)
    assert fingerprint(lines) == FINGERPRINTS[case], "\n".join(lines[:5])


def test_the_splits_depend_on_shared_hashes_not_their_values():
    from pcam_tfds.core import splits

    items = [(f"id{i:03d}", i % 2, f"h{i // 3}") for i in range(60)]  # groups of three identical patches
    renamed = [(id_, label, hashlib.sha256(h.encode()).hexdigest()) for id_, label, h in items]
    slides = {f"id{i:03d}": f"slide{i % 7}" for i in range(0, 60, 2)}  # and with slides: the union-find path
    for seed, with_slides in ((0, None), (42, None), (3, slides)):
        assert splits.assign_splits(items, 0.2, seed, slides=with_slides) == splits.assign_splits(
            renamed, 0.2, seed, slides=with_slides
        )
