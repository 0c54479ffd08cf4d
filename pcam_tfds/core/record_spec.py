"""The record of a patch dataset: one definition that the builders, the trainer's parser and gpu-check use.

    image   the patch's PATCH_SHAPE uint8 pixels as raw bytes, row-major (pcam_tfds.features.RawImage)
    label   int64: 0 normal, 1 tumour (LABEL_NAMES), NO_LABEL (-1) on Kaggle's unlabelled test split
    id      the Kaggle id (40 hex digits) as UTF-8 bytes

Plain values only (no TensorFlow): the TFDS features (`pcam_tfds.builder_base.patch_features`), the
trainer's `tf.io.parse_example` spec and any writer that serializes records itself are made from these,
and tests/test_features.py checks that they agree.
"""

from __future__ import annotations

from pcam_tfds.core.layout import NO_LABEL
from pcam_tfds.core.patches import PATCH_SHAPE

IMAGE, LABEL, ID = "image", "label", "id"
FEATURE_KEYS = (IMAGE, LABEL, ID)
LABEL_NAMES = ("normal", "tumour")  # label 0 and 1: tumour tissue in the centre 32x32 or not
IMAGE_DTYPE = "uint8"

__all__ = ["FEATURE_KEYS", "ID", "IMAGE", "IMAGE_DTYPE", "LABEL", "LABEL_NAMES", "NO_LABEL", "PATCH_SHAPE"]
