"""`tuned`: the seed CNN family with hyperparameters from a tuning result (`--hparams`) or flags."""

from __future__ import annotations

import keras

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer.models.cnn import cnn


def build(
    input_shape: tuple[int, int, int] = PATCH_SHAPE,
    filters: tuple[int, ...] = (32, 64, 128),
    dense: int = 128,
    dropout: float = 0.5,
    batch_norm: bool = False,
    channel_stats=None,
    stain_norm: str = "none",
    crop: int = 0,
    padding: str = "same",
) -> keras.Model:
    """The CNN with the given widths; optimizer settings (learning rate, weight decay) belong to the trainer."""
    return cnn(
        input_shape,
        filters=tuple(filters),
        dense=dense,
        dropout=dropout,
        batch_norm=batch_norm,
        name="tuned",
        channel_stats=channel_stats,
        stain_norm=stain_norm,
        crop=crop,
        padding=padding,
    )
