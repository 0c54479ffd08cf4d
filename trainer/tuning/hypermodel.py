"""The search spaces of the CNN family and the keras-tuner HyperModel that samples them.

    hp = keras_tuner.HyperParameters()
    model = CNNHyperModel(space="seed").build(hp)        # compiled; hp now holds every name in DEFAULTS

`CNNHyperModel.build(hp)` samples named hyperparameters (the keys of `trainer.config.hparams.KEYS`), puts
them into the trial's `TrainConfig` with the mapping of `trainer.config.hparams.to_fields` (as --hparams does), and
builds and compiles with pcam-train's own `recipe.build_model` and `recipe.compile_for`; `fit` adds the
trainer's schedule and weight-average callbacks. So a trial trains the same network in the same precision,
schedule, weight average and label smoothing as `python -m trainer --model=tuned` with the same flags. Names outside the chosen space are `hp.Fixed` at the trainer's defaults, so every trial
records the full set and `hp.Fixed` set in advance overrides any of them. `trainer.tuning.search` runs the search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer.config import choices, hparams, train_config
from trainer.training import phases, recipe
from trainer.tuning.tune_config import SPACES

_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(train_config.TrainConfig)}
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
assert set(DEFAULTS) <= set(hparams.KEYS), sorted(set(DEFAULTS) - set(hparams.KEYS))

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
        "optimizer": lambda hp, d: hp.Choice("optimizer", list(choices.OPTIMIZERS), default=d),
        "weight_decay": lambda hp, d: hp.Choice("weight_decay", [0.0, 1e-5, 1e-4, 1e-3], default=d),
    },
}
assert tuple(_SAMPLERS) == SPACES, (tuple(_SAMPLERS), SPACES)
# The most conv blocks a space can ask for (each halves the image).
_MAX_BLOCKS = {"seed": DEFAULTS["num_blocks"], "wide": 4}


class CNNHyperModel(keras_tuner.HyperModel):
    """The `tuned` CNN over a search space; builds and fits each trial the way pcam-train trains.

    trial_config: what every trial trains with (`TuneConfig.trial`: precision, XLA, steps per execution,
    schedule, weight average, smoothing, input normalisation); a trial's hyperparameters replace its fields
    (`trial`). `build` makes the model with `recipe.build_model` and compiles it with `recipe.compile_for`, and
    `fit` adds the trainer's schedule and weight-average callbacks (`recipe.schedule_callback`,
    `recipe.ema_callbacks`): pcam-train's own functions. steps_per_epoch: batches in one trial epoch (the
    schedule's unit); None: the fit's steps_per_epoch.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = PATCH_SHAPE,
        space: str = "wide",
        trial_config: train_config.TrainConfig | None = None,
        steps_per_epoch: int | None = None,
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
        self.trial_config = trial_config or train_config.TrainConfig(model="tuned", data_dir="", model_dir="")
        self.steps_per_epoch = steps_per_epoch
        self.last_recipe: dict[str, Any] | None = None  # what the last fitted trial's compiled model ran with

    def values(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """Registers (or reads) every hyperparameter in `hp` and returns {name: value} in DEFAULTS' order."""
        samplers = _SAMPLERS[self.space]
        return {
            name: samplers[name](hp, default) if name in samplers else hp.Fixed(name, default)
            for name, default in DEFAULTS.items()
        }

    def trial(self, hp: keras_tuner.HyperParameters) -> train_config.TrainConfig:
        """The trial's TrainConfig: trial_config with the hyperparameters (width, num_blocks -> filters, as --hparams)."""
        return dataclasses.replace(self.trial_config, **hparams.to_fields(self.values(hp)))

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        config = self.trial(hp)
        recipe.set_precision(config)
        model = recipe.build_model(config, input_shape=self.input_shape)
        recipe.compile_for(model, config, config.learning_rate)
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, callbacks=(), **kwargs):
        config = self.trial(hp)
        per_epoch = self.steps_per_epoch or kwargs.get("steps_per_epoch")
        if not per_epoch:
            raise ValueError("CNNHyperModel.fit needs the batches per epoch: steps_per_epoch (here or in fit)")
        epochs = kwargs.get("epochs", 1)  # Hyperband: this round's last epoch; the schedule spans the whole fit
        # Counted from epoch 0 (a Hyperband round resumes its earlier round's model at initial_epoch).
        phase = phases.Phase("train", epochs, config.learning_rate, config.schedule)
        # The clock (first in `callbacks`) sets the epoch, then the rate is set; the weight average is swapped in
        # for validation, so the trial's score is that of the weights pcam-train would validate and keep.
        callbacks = [
            *callbacks[:1],
            recipe.schedule_callback(phase, per_epoch),
            *recipe.ema_callbacks(config),
            *callbacks[1:],
        ]
        self.last_recipe = {
            "mixed_precision": _PRECISION_OF_POLICY[model.dtype_policy.name],
            "jit_compile": bool(model.jit_compile),
            "steps_per_execution": int(model.steps_per_execution),
            "schedule": config.schedule,
            "ema": float(model.optimizer.get_config()["ema_momentum"]) if model.optimizer.use_ema else 0.0,
            "label_smoothing": float(model.loss.label_smoothing),
        }
        return model.fit(*args, callbacks=callbacks, **kwargs)


_PRECISION_OF_POLICY = {policy: name for name, policy in recipe.PRECISION_POLICIES.items()}
