"""`p4m_params`: the P4M model with about the baseline's parameters (8x its convolution FLOPs); see trainer.models.p4m."""

from __future__ import annotations

import keras

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer.models.p4m import INVARIANT, PARAM_MATCHED, p4m

__all__ = ["INVARIANT", "build"]


def build(
    input_shape: tuple[int, int, int] = PATCH_SHAPE, dropout: float = 0.1, batch_norm: bool = False
) -> keras.Model:
    """Group widths (11, 23, 45): the baseline's parameter count, not its cost."""
    return p4m(input_shape, PARAM_MATCHED, dropout=dropout, batch_norm=batch_norm, name="p4m_params")
