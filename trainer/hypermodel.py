"""The search spaces of the CNN family and the keras-tuner HyperModel that samples them.

    hp = keras_tuner.HyperParameters()
    model = CNNHyperModel(space="seed").build(hp)        # compiled; hp now holds every name in DEFAULTS

`CNNHyperModel.build(hp)` samples named hyperparameters (the keys of `trainer.config.HPARAM_KEYS`) and
calls the same `models.build("tuned", ...)` -> `cnn()` path that `python -m trainer --model=tuned` uses,
with the hyperparameter -> field mapping of `config.hparams_to_fields`, so a tuning result trains the
same network. Names outside the chosen space are `hp.Fixed` at the trainer's defaults, so every trial
records the full set and `hp.Fixed` set in advance overrides any of them. `trainer.search` runs the search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import config as config_lib
from trainer import models, train
from trainer.tune_config import SPACES

_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(config_lib.TrainConfig)}
# The hyperparameters every trial records, with the trainer's defaults (the seed CNN: 32-64-128, dense 128).
DEFAULTS: dict[str, Any] = {
    "learning_rate": _TRAIN_DEFAULTS["learning_rate"],
    "dropout": _TRAIN_DEFAULTS["dropout"],
    "width": _TRAIN_DEFAULTS["filters"][0],
    "num_blocks": len(_TRAIN_DEFAULTS["filters"]),
    "dense": _TRAIN_DEFAULTS["dense"],
    "batch_norm": _TRAIN_DEFAULTS["batch_norm"],
    "optimizer": _TRAIN_DEFAULTS["optimizer"],
    "weight_decay": _TRAIN_DEFAULTS["weight_decay"],
}
assert set(DEFAULTS) <= set(config_lib.HPARAM_KEYS), sorted(set(DEFAULTS) - set(config_lib.HPARAM_KEYS))

# Samplers of the tuned names per space; the others are hp.Fixed at DEFAULTS.
# The seed's dropout "0.3 to 0.7" is a Choice: keras-tuner's Float(0.3, 0.7, step=0.1) computes
# (0.7 - 0.3) // 0.1 = 3 steps in floating point and never samples 0.7.
_SAMPLERS: dict[str, dict[str, Callable[[keras_tuner.HyperParameters, Any], Any]]] = {
    "seed": {
        "learning_rate": lambda hp, d: hp.Choice("learning_rate", [1e-4, 3e-4, 1e-3], default=d),
        "dropout": lambda hp, d: hp.Choice("dropout", [0.3, 0.4, 0.5, 0.6, 0.7], default=d),
    },
    "wide": {
        "learning_rate": lambda hp, d: hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=d),
        "dropout": lambda hp, d: hp.Float("dropout", 0.1, 0.6, default=d),
        "width": lambda hp, d: hp.Choice("width", [16, 32, 64], default=d),
        "num_blocks": lambda hp, d: hp.Int("num_blocks", 2, 4, default=d),
        "batch_norm": lambda hp, d: hp.Boolean("batch_norm", default=d),
        "optimizer": lambda hp, d: hp.Choice("optimizer", list(config_lib.OPTIMIZERS), default=d),
        "weight_decay": lambda hp, d: hp.Choice("weight_decay", [0.0, 1e-5, 1e-4, 1e-3], default=d),
    },
}
assert tuple(_SAMPLERS) == SPACES, (tuple(_SAMPLERS), SPACES)
# The most conv blocks a space can ask for (each halves the image).
_MAX_BLOCKS = {"seed": DEFAULTS["num_blocks"], "wide": 4}


class CNNHyperModel(keras_tuner.HyperModel):
    """The `tuned` CNN over a search space; builds compiled models for keras-tuner."""

    def __init__(
        self,
        input_shape: tuple[int, int, int] = PATCH_SHAPE,
        space: str = "wide",
        jit_compile: bool = False,
        channel_stats: tuple[list[float], list[float]] | None = None,
    ):
        super().__init__(name=f"cnn_{space}")
        if space not in SPACES:
            raise ValueError(f"--space={space!r} is unknown; choose one of {', '.join(SPACES)}")
        if len(input_shape) != 3 or min(input_shape) <= 0:
            raise ValueError(f"input_shape={input_shape!r} must be three positive sizes (height, width, channels)")
        if min(input_shape[:2]) < 2 ** _MAX_BLOCKS[space]:
            raise ValueError(
                f"input_shape={input_shape!r} is too small for space {space!r}: its up to {_MAX_BLOCKS[space]} "
                f"conv blocks each halve the image, which needs at least {2 ** _MAX_BLOCKS[space]} pixels a side"
            )
        self.input_shape = tuple(input_shape)
        self.space = space
        self.jit_compile = jit_compile
        self.channel_stats = channel_stats

    def values(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Registers (or reads) every hyperparameter in `hp` and returns {name: value} in DEFAULTS' order."""
        samplers = _SAMPLERS[self.space]
        return {
            name: samplers[name](hp, default) if name in samplers else hp.Fixed(name, default)
            for name, default in DEFAULTS.items()
        }

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        values = self.values(hp)
        fields = config_lib.hparams_to_fields(values)  # width, num_blocks -> filters, as for --hparams
        model = models.build(
            "tuned",
            input_shape=self.input_shape,
            filters=fields["filters"],
            dense=fields["dense"],
            dropout=fields["dropout"],
            batch_norm=fields["batch_norm"],
            channel_stats=self.channel_stats,
        )
        optimizer = train.make_optimizer(fields["optimizer"], fields["learning_rate"], fields["weight_decay"])
        train.compile_model(model, optimizer, self.jit_compile)
        return model
