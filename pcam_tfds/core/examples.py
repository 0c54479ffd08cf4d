"""From valid file records to TFDS examples: which split each record goes to, and its example dict.

    assignment = splits.assign_splits([split_key(f) for f in valid if is_labelled(f)], ...)
    split_of(f, assignment)     'train', 'validation', 'unused' (outside a sample) or 'test'
    read_example(f)             (key, {'image', 'label', 'id'}) for TFDS' writer; the key is the id

The local build and the Beam path of the `pcam` builder both route with these.
"""

from __future__ import annotations

import numpy as np

from pcam_tfds.core import layout, patches


def is_valid(f: dict) -> bool:
    return f["valid"]


def is_labelled(f: dict) -> bool:
    """Whether a valid record takes part in the train/validation assignment (test files do not)."""
    return f["source"] == layout.TRAIN


def split_key(f: dict) -> tuple[str, int, str | None]:
    """What `splits.assign_splits` decides from: (id, label, pixel hash)."""
    return f["id"], f["label"], f["pixel_hash"]


def split_of(f: dict, assignment: dict[str, str]) -> str:
    """The split of a valid record, given the assignment of the train ids."""
    return layout.TEST if f["source"] == layout.TEST else assignment[f["id"]]


def example(f: dict, pixels: np.ndarray) -> tuple[str, dict]:
    """(key, example) of a valid record whose pixels have been read."""
    return f["id"], {"image": pixels, "label": f["label"], "id": f["id"]}


def read_example(f: dict) -> tuple[str, dict]:
    """(key, example) of a valid record, its pixels read again.

    The file passed validation moments ago; failing to read it now is an error, not a rejection.
    """
    return example(f, patches.read_patch(f["path"]))
