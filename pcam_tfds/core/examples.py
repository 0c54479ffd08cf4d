"""From valid file records to TFDS examples: which split each record goes to, and its example dict.

    assignment = splits.assign_splits([split_key(f) for f in valid if is_labelled(f)], ...)
    split_of(f, assignment)     'train', 'validation', 'unused' (outside a sample) or 'test'
    read_example(f)             (key, {'image', 'label', 'id'}) for TFDS' writer; the key is the id

The local build and the Beam path of the `pcam` builder both route with these. The Beam path, and the
local build when it reuses a validation, read every valid file a second time to write it, and that read
must find the patch validation passed: a file that no longer decodes, or whose pixels do not hash to the
recorded `pixel_hash` (`check_pixels_unchanged`), fails the build with `FileChangedError` naming it. The
local build that validates for itself reads each file once (pcam_tfds.core.local_validation). A reused validation (pcam_tfds.core.validated) checks sizes and modification
times first, so this is how a file rewritten in place with both kept is found.
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


class FileChangedError(ValueError):
    """A valid record's file no longer holds the patch that validation read from it."""


def _changed(f: dict, what: str) -> FileChangedError:
    manual_dir = f["path"].replace("\\", "/").rsplit("/", 2)[0]  # records keep MANUAL_DIR/SOURCE/NAME
    return FileChangedError(
        f"{f['path']} (id {f['id']}) changed after it was validated: {what}. Build again; when the build reuses "
        f"a validation (PCAM_VALIDATION_DIR), first validate again (python -m beam_jobs.validate "
        f"--manual_dir={manual_dir} --output_dir=THAT_FOLDER) or unset PCAM_VALIDATION_DIR to let the build validate"
    )


def check_pixels_unchanged(f: dict, pixels: np.ndarray) -> None:
    """FileChangedError unless PIXELS, read again from a valid record's file, are the pixels validation hashed."""
    check_hash_unchanged(f, patches.pixel_hash(pixels))


def check_hash_unchanged(f: dict, pixel_hash: str) -> None:
    """FileChangedError unless PIXEL_HASH, of a valid record's file read again, is the hash validation recorded."""
    recorded = f["pixel_hash"]
    if recorded is not None and pixel_hash != recorded:
        raise _changed(f, f"its pixels hash to {pixel_hash}, validation recorded {recorded}")


def check_decoded(f: dict, reason: str | None, detail: str) -> None:
    """FileChangedError when a valid record's file, read again, was rejected with REASON (None: it decoded)."""
    if reason is not None:
        raise _changed(f, f"it no longer decodes ({patches.PatchError(reason, detail)})")


def example(f: dict, pixels: np.ndarray) -> tuple[str, dict]:
    """(key, example) of a valid record whose pixels have been read again; FileChangedError unless they are the
    pixels validation hashed."""
    check_pixels_unchanged(f, pixels)
    return f["id"], {"image": pixels, "label": f["label"], "id": f["id"]}


def read_pixels(f: dict) -> np.ndarray:
    """The pixels of a valid record's file, read again; FileChangedError when it no longer decodes.

    The file passed validation; failing to read it now is an error, not a rejection.
    """
    try:
        return patches.read_patch(f["path"])
    except patches.PatchError as e:
        raise _changed(f, f"it no longer decodes ({e})") from None


def read_example(f: dict) -> tuple[str, dict]:
    """(key, example) of a valid record, its pixels read again (`read_pixels`) and checked (`example`)."""
    return example(f, read_pixels(f))
