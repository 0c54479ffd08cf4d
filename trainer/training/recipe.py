"""The training recipe that a pcam-train run, every pcam-tune trial and pcam-gpu-check share.

    recipe.set_precision(config)                          # before the model is built
    model = recipe.build_model(config)                    # the registered model with the config's arguments
    recipe.compile_for(model, config, learning_rate)      # optimizer, weight average, loss, metrics, XLA
    model.fit(..., callbacks=[recipe.schedule_callback(phase, per_epoch), *recipe.ema_callbacks(config)])

Everything here takes its values from a TrainConfig, so a trial trains exactly as a run with the same options.
"""

from __future__ import annotations

import keras
from absl import logging
from etils import epath

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import augment as augment_lib
from trainer import errors, models
from trainer.config.train_config import TrainConfig
from trainer.training import phases
from trainer.training import schedule as schedule_lib

# What validation reports (compile_model names the metric "auc"); the checkpoints, early stopping and a trial's
# score follow it.
MONITOR = "val_auc"


def steps_per_epoch(config: TrainConfig, num_train: int) -> int:
    """Batches per epoch: --steps_per_epoch, else one pass (estimated when --sample_fraction filters)."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    return max(1, -(-round(num_train * config.sample_fraction) // config.batch_size))


def load_channel_stats(path: str) -> tuple[list[float], list[float]]:
    """Train mean and std per channel (0..255) from beam_jobs.stats' stats.json, errors naming the flag."""
    from pcam_tfds.core.channel_stats import StatsError
    from pcam_tfds.core.channel_stats import load_channel_stats as load

    try:
        return load(path)
    except (OSError, ValueError, KeyError, StatsError) as e:
        raise errors.UsageError(f"--channel_stats={path!r}: {e}") from e


def build_model(config: TrainConfig, input_shape=PATCH_SHAPE, weights: str | None = "config") -> keras.Model:
    """The registered model, given the config's values for the arguments its builder takes.

    The CNNs take widths and channel statistics, the transfer models their base's weights; `weights`
    overrides config.weights ("none" there means None: a random init).
    """
    if weights == "config":
        weights = None if config.weights == "none" else config.weights
    values = {
        "input_shape": input_shape,
        "dropout": config.dropout,
        "filters": config.filters,
        "dense": config.dense,
        "batch_norm": config.batch_norm,
        "channel_stats": load_channel_stats(config.channel_stats) if config.channel_stats else None,
        "stain_norm": config.stain_norm,
        "crop": config.crop,
        "padding": config.padding,
        "weights": weights,
    }
    takes = models.arguments(config.model)
    return models.build(config.model, **{name: value for name, value in values.items() if name in takes})


class _WarmEMA:
    """Mixin: the weights' moving average uses momentum min(m, (1 + t) / (10 + t)) at step t.

    Keras' average has a fixed momentum from the first step, so at m = 0.999 a 250-step run would
    keep 78% of the random initial weights in its average; this warm-up (as in
    tf.train.ExponentialMovingAverage's num_updates) lets short runs average only their recent steps.
    """

    @property
    def ema_momentum(self):
        if getattr(self, "_iterations", None) is None:  # during __init__
            return self._ema_target
        t = keras.ops.cast(self.iterations, "float32")
        return keras.ops.minimum(self._ema_target, (1.0 + t) / (10.0 + t))

    @ema_momentum.setter
    def ema_momentum(self, value):
        self._ema_target = value

    def get_config(self):
        return {**super().get_config(), "ema_momentum": self._ema_target}


_OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}


def make_optimizer(
    name: str, learning_rate: float, weight_decay: float = 0.0, ema: float = 0.0
) -> keras.optimizers.Optimizer:
    """adam, adamw (decoupled weight decay), sgd (Nesterov momentum 0.9) or rmsprop; weight decay on any of them.

    ema > 0 keeps an exponential moving average of the weights with that momentum (Polyak averaging,
    with a warm-up: `_WarmEMA`); the trainer validates and saves the averaged weights
    (keras.callbacks.SwapEMAWeights).
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is unknown; choose {', '.join(_OPTIMIZERS)}")
    kwargs = {"weight_decay": weight_decay or None}
    if name == "adamw":
        kwargs["weight_decay"] = weight_decay or 1e-4
    if name == "sgd":
        kwargs.update(momentum=0.9, nesterov=True)
    cls = _OPTIMIZERS[name]
    if ema:
        cls = type(f"Averaged{cls.__name__}", (_WarmEMA, cls), {})
        kwargs.update(use_ema=True, ema_momentum=ema)
    return cls(learning_rate, **kwargs)


PRECISION_POLICIES = {"off": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def compile_model(
    model: keras.Model, optimizer, jit_compile: bool, label_smoothing: float = 0.0, steps_per_execution: int = 1
) -> None:
    """Binary cross-entropy; metric names are fixed so logs say val_auc and val_accuracy.

    Under the mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer (float16 gradients
    underflow without loss scaling); mixed_bfloat16 needs none (tests/test_gpu_path.py checks both).
    """
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def set_precision(config: TrainConfig) -> None:
    """Keras' global dtype policy for config.mixed_precision; models built afterwards compute in it."""
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[config.mixed_precision])


def compile_for(model: keras.Model, config: TrainConfig, learning_rate: float, augment_salt: int = 0) -> None:
    """The one compile of pcam-train's phases and of every pcam-tune trial: config's optimizer and weight decay
    with its weight average (EMA), the loss with its label smoothing, XLA and steps per execution, and the
    augmentation in the train step with --augment_on=device. The rate is the schedule's peak
    (`schedule_callback` sets it per step)."""
    if config.augment_on == "device":
        augment_lib.on_device(model, config.augment, config.seed + augment_salt)
    compile_model(
        model,
        make_optimizer(config.optimizer, learning_rate, config.weight_decay, config.ema),
        config.jit_compile,
        config.label_smoothing,
        config.steps_per_execution,
    )


def schedule_callback(
    phase: phases.Phase, per_epoch: int, first_epoch: int = 0, stored: dict | None = None, budget=None
) -> schedule_lib.ScheduleCallback:
    """The learning-rate schedule of `phase` as the callback that sets the rate before every batch."""
    return schedule_lib.ScheduleCallback(phases.make_schedule(phase, per_epoch, stored), first_epoch, budget)


def ema_callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """With a weight average, validation (hence val_auc, the checkpoints and a trial's score) uses the average."""
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.ema else []


def tensorboard_callbacks(log_dir: epath.Path) -> list[keras.callbacks.Callback]:
    """The TensorBoard callback, or none with a warning when the tensorboard package is missing.

    TensorFlow 2.21 does not install tensorboard; without it tf.summary fails at the first epoch end.
    """
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        logging.warning("tensorboard is not installed: no TensorBoard logs in %s (pip install tensorboard)", log_dir)
        return []
    return [keras.callbacks.TensorBoard(str(log_dir))]
