"""The model registry: name -> the module whose `build` makes that model, one module per model.

    from trainer import models
    model = models.build("baseline", dropout=0.5)          # input_shape defaults to PATCH_SHAPE

Builders take 0..255 RGB images and return one sigmoid probability (float32 under mixed precision);
the trainer compiles. `NAMES` is the one list of model names: the flags, the config's validation and
gpu_check read it.
A model module that sets `INVARIANT = True` builds models whose output is the same for the 8 flips and
rotations of an input (the P4M models); `invariant(name)` reads it, and prediction skips TTA for them. Reading it imports no Keras; a model's module is imported when it is first built,
so `python -m trainer --help` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

REGISTRY: dict[str, str] = {
    "baseline": "trainer.models.baseline",
    "tuned": "trainer.models.tuned",
    "resnet50": "trainer.models.resnet50",
    "densenet169": "trainer.models.densenet169",
    "p4m": "trainer.models.p4m",
    "p4m_params": "trainer.models.p4m_params",
}
NAMES = tuple(REGISTRY)
# The models on a pretrained ImageNet base (trainer.models.transfer): they train a head, then fine-tune.
TRANSFER = ("resnet50", "densenet169")


def builder(name: str) -> Callable:
    """The `build` function of the registered model `name`."""
    if name not in REGISTRY:
        raise ValueError(f"model {name!r} is not registered; choose one of {', '.join(NAMES)}")
    return importlib.import_module(REGISTRY[name]).build


def arguments(name: str) -> frozenset[str]:
    """The keyword arguments the builder of `name` takes."""
    return frozenset(inspect.signature(builder(name)).parameters)


def build(name: str, **kwargs):
    """Builds the registered model `name` (a keras.Model) with the builder's keyword arguments."""
    return builder(name)(**kwargs)


def _constant(name: str, constant: str, default):
    """A module-level constant of the registered model `name`'s module; `default` if absent or not registered."""
    return getattr(importlib.import_module(REGISTRY[name]), constant, default) if name in REGISTRY else default


def width_multiple(name: str) -> int:
    """What each of --filters must be a multiple of for the registered model `name` (8 for p4m, whose widths
    count feature planes, 8 per group channel; else 1)."""
    return int(_constant(name, "WIDTH_MULTIPLE", 1))


def invariant(name: str) -> bool:
    """Whether the registered model `name` is invariant by construction to the 8 flips and 90-degree rotations."""
    return bool(_constant(name, "INVARIANT", False))
