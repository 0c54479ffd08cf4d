"""tissue.png: the tissue mask, white = tissue, one pixel per stride/k model pixels (summary.json "tissue")."""

from __future__ import annotations

import numpy as np

NAME = "tissue.png"


def write(result, out) -> dict:
    from PIL import Image

    from pcam_tfds.core.folder_lock import atomic_path

    with atomic_path(out / NAME, suffix=".png") as tmp:
        Image.fromarray((result.plan.mask * 255).astype(np.uint8)).save(str(tmp))
    return {}
