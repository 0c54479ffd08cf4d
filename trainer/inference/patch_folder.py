"""A folder of patch files as model input: what pcam-predict (Kaggle's test/) and pcam-evaluate (--input_dir) read.

    files = list_patch_files(input_dir)                 # every file, sorted; other suffixes too, to be rejected
    rejected = []
    for batch in read_folder(files, 256, rejected):     # {"image": uint8 (B, 96, 96, 3), "id": file stems}
        ...
    rejected                                            # [(file, reason, detail)] of the files that failed

No TensorFlow: the batches are numpy arrays, read lazily, so a 57k-file folder is never held in memory at once.
"""

from __future__ import annotations

import numpy as np
from etils import epath

from pcam_tfds.core import patches
from pcam_tfds.core.layout import IMAGE_EXTENSIONS
from trainer import errors


def list_patch_files(input_dir: str) -> list[epath.Path]:
    """Every file in `input_dir`, sorted; files with other suffixes are returned too, so they get rejected loudly."""
    root = epath.Path(input_dir)
    if not root.is_dir():
        raise errors.MissingInput(f"--input_dir={input_dir!r} is not a folder")
    return sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith("."))


def read_folder(files: list[epath.Path], batch_size: int, rejected: list):
    """Yields {"image": uint8 (B, 96, 96, 3), "id"} batches; appends (file, reason, detail) of bad files to `rejected`.

    The id of a patch is its file name without the suffix, as Kaggle's ids are.
    """
    images, ids = [], []
    for path in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            rejected.append((str(path), "unsupported_suffix", f"expected one of {', '.join(IMAGE_EXTENSIONS)}"))
            continue
        try:
            images.append(patches.read_patch(str(path)))
        except patches.PatchError as e:
            rejected.append((str(path), e.reason, e.detail))
            continue
        except OSError as e:
            rejected.append((str(path), "unreadable", str(e)))
            continue
        ids.append(path.stem)
        if len(images) == batch_size:
            yield {"image": np.stack(images), "id": np.asarray(ids)}
            images, ids = [], []
    if images:
        yield {"image": np.stack(images), "id": np.asarray(ids)}
