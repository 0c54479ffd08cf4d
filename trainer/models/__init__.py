"""The model registry: name -> uncompiled builder, one module per model.

    from trainer import models
    model = models.build("baseline", input_shape=(96, 96, 3), dropout=0.5)

Builders take 0..255 RGB images and return one sigmoid probability (float32 under mixed precision);
the trainer compiles.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from trainer.models import baseline, densenet169, resnet50, transfer, tuned
from trainer.models.cnn import cnn

REGISTRY: dict[str, Callable[..., keras.Model]] = {
    "baseline": baseline.build,
    "tuned": tuned.build,
    "resnet50": resnet50.build,
    "densenet169": densenet169.build,
}
TRANSFER = ("resnet50", "densenet169")

__all__ = ["REGISTRY", "TRANSFER", "build", "cnn", "transfer"]


def build(name: str, **kwargs) -> keras.Model:
    """Builds the registered model `name` with the builder's keyword arguments."""
    if name not in REGISTRY:
        raise ValueError(f"model {name!r} is not registered; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name](**kwargs)
