"""`baseline`: the seed notebook's CNN (Conv2D 32/64/128, each with max-pooling; GAP; Dense 128; dropout).

109,889 parameters at 96x96x3 (tests/test_models.py checks the count).
"""

from __future__ import annotations

import keras

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer.models.cnn import cnn


def build(
    input_shape: tuple[int, int, int] = PATCH_SHAPE,
    dropout: float = 0.5,
    channel_stats=None,
    stain_norm: str = "none",
    crop: int = 0,
    padding: str = "same",
) -> keras.Model:
    """The seed architecture; dropout and the input normalisation (see `cnn`) are configurable."""
    return cnn(
        input_shape,
        filters=(32, 64, 128),
        dense=128,
        dropout=dropout,
        batch_norm=False,
        name="baseline",
        channel_stats=channel_stats,
        stain_norm=stain_norm,
        crop=crop,
        padding=padding,
    )
