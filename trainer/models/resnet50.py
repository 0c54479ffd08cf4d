"""`resnet50`: keras.applications.ResNet50 (caffe-style preprocessing) with a new sigmoid head."""

from __future__ import annotations

import keras

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer.models.transfer import transfer_model


def build(input_shape=PATCH_SHAPE, weights: str | None = "imagenet", dropout: float = 0.5) -> keras.Model:
    """`weights`: "imagenet", None (random init) or a path to resnet50_..._notop.h5."""
    return transfer_model(keras.applications.ResNet50, "resnet50", "caffe", input_shape, weights, dropout)
