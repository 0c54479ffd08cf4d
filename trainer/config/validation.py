"""TrainConfig's checks, each failure a UsageError naming the flag, its value and what is allowed.

validate(config)          # check_values, then check_model (the registry), then check_files (what exists)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from etils import epath

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import models
from trainer.config.choices import (
    AUGMENT_ON,
    AUGMENTATIONS,
    OPTIMIZERS,
    PADDINGS,
    PRECISIONS,
    SCHEDULES,
    STAIN_NORMS,
    STRATEGIES,
    VERBOSITIES,
)
from trainer.errors import UsageError

if TYPE_CHECKING:
    from trainer.config.train_config import TrainConfig


def validate(config: TrainConfig) -> TrainConfig:
    """Returns `config` unchanged, or raises UsageError naming the flag, its value and what is allowed."""
    check_values(config)
    check_model(config)
    check_files(config)
    return config


def check_choice(flag: str, value, allowed) -> None:
    """Raises UsageError naming the flag, its value and the allowed values unless `value` is one of them."""
    if value not in allowed:
        raise UsageError(f"--{flag}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _positive(flag: str, value, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"--{flag}={value!r} must be {bound}")


def check_values(config: TrainConfig) -> None:
    """The choices, the ranges and the combinations of values that cannot work together."""
    check_choice("model", config.model, models.NAMES)
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    check_choice("augment", config.augment, AUGMENTATIONS)
    check_choice("strategy", config.strategy, STRATEGIES)
    check_choice("augment_on", config.augment_on, AUGMENT_ON)
    check_choice("stain_norm", config.stain_norm, STAIN_NORMS)
    check_choice("padding", config.padding, PADDINGS)
    check_choice("schedule", config.schedule, SCHEDULES)
    check_choice("mixed_precision", config.mixed_precision, PRECISIONS)
    check_choice("verbose", config.verbose, VERBOSITIES)
    if not config.data_dir:
        raise UsageError("--data_dir is required: the TFDS data dir holding the built pcam dataset")
    if not config.model_dir:
        raise UsageError("--model_dir is required: the run folder for checkpoints, logs and results")
    if "/" not in config.dataset:
        raise UsageError(f"--dataset={config.dataset!r} must be NAME/CONFIG[:VERSION], e.g. pcam/full or pcam/sample25")
    if config.epochs is None:
        if config.schedule != "budget":
            raise UsageError(
                f"--epochs is required with --schedule={config.schedule} (only a budget schedule sizes itself)"
            )
    else:
        _positive("epochs", config.epochs, allow_zero=config.is_transfer)
    if config.schedule == "budget" and config.max_minutes is None and config.max_cpu_minutes is None:
        raise UsageError("--schedule=budget needs a time budget: --max_minutes or --max_cpu_minutes")
    if not (config.ema == 0.0 or 0.0 < config.ema < 1.0):
        raise UsageError(f"--ema={config.ema!r} must be 0 (off) or a momentum in (0, 1), e.g. 0.999")
    if not 0.0 <= config.label_smoothing < 0.5:
        raise UsageError(f"--label_smoothing={config.label_smoothing!r} must be in [0, 0.5)")
    _positive("batch_size", config.batch_size)
    _positive("learning_rate", config.learning_rate)
    _positive("fine_tune_learning_rate", config.fine_tune_learning_rate)
    _positive("weight_decay", config.weight_decay, allow_zero=True)
    _positive("early_stopping_patience", config.early_stopping_patience, allow_zero=True)
    if config.refit and config.early_stopping_patience:
        raise UsageError(
            f"--refit with --early_stopping_patience={config.early_stopping_patience}: a refit trains on the "
            "validation split, so stopping on it would choose on patches it has seen; give a time budget or "
            "--epochs with --early_stopping_patience=0"
        )
    _positive("shuffle_buffer", config.shuffle_buffer)
    _positive("head_epochs", config.head_epochs, allow_zero=True)
    _positive("unfreeze_layers", config.unfreeze_layers, allow_zero=True)
    for flag in ("max_minutes", "max_cpu_minutes"):
        if getattr(config, flag) is not None:
            _positive(flag, getattr(config, flag))
    if config.is_transfer and config.head_epochs + (config.epochs if config.epochs is not None else 1) == 0:
        raise UsageError("--head_epochs and --epochs are both 0: nothing would train")
    _positive("steps_per_execution", config.steps_per_execution)
    if config.augment_on == "device" and config.augment == "seed":
        raise UsageError(
            "--augment=seed runs Keras random layers, which keep their own state; on the device use "
            "--augment=dihedral, hed or none, or --augment_on=host"
        )
    if config.strategy == "multi_worker":
        if config.steps_per_execution != 1:
            # Keras 3.15 fails to run collectives inside its multi-step loop under MultiWorkerMirroredStrategy.
            raise UsageError(
                f"--steps_per_execution={config.steps_per_execution} with --strategy=multi_worker: "
                "multi-worker training runs one step per execution (1)"
            )
        if config.schedule == "budget":
            raise UsageError(
                "--schedule=budget with --strategy=multi_worker: the budget schedule plans from this "
                "process's clock; give --epochs (with --schedule=cosine or constant), the time budget still "
                "stops every worker at the same step"
            )
    if not 0.0 <= config.dropout < 1.0:
        raise UsageError(f"--dropout={config.dropout!r} must be in [0, 1)")
    if not 0.0 < config.sample_fraction <= 1.0:
        raise UsageError(f"--sample_fraction={config.sample_fraction!r} must be in (0, 1]")
    if config.steps_per_epoch is not None:
        _positive("steps_per_epoch", config.steps_per_epoch)
    if config.class_weights is not None and (len(config.class_weights) != 2 or min(config.class_weights) <= 0):
        raise UsageError(
            f"--class_weights={','.join(map(str, config.class_weights))} must be two positive numbers "
            "(weight of label 0, weight of label 1), e.g. 1,1.5; or 'auto' or 'none'"
        )
    if not config.filters or min(config.filters) <= 0:
        raise UsageError(f"--filters={config.filters!r} must be one or more positive integers, e.g. 32,64,128")
    _positive("dense", config.dense)
    side = min(PATCH_SHAPE[:2])
    if config.crop and not (0 < config.crop <= side and (side - config.crop) % 2 == 0):
        raise UsageError(
            f"--crop={config.crop}: the centre crop must fit in the {side}x{side} patch and leave equal margins "
            f"(an even number from 2 to {side}, e.g. 64), or 0 for the whole patch"
        )


def check_model(config: TrainConfig) -> None:
    """What the registered model's module says of its inputs, the widths and the crop (it imports the model's
    module)."""
    takes = models.arguments(config.model)
    for name, given in (("channel_stats", bool(config.channel_stats)), ("stain_norm", config.stain_norm != "none")):
        if given and name not in takes:
            uses = "uses ImageNet preprocessing" if config.is_transfer else "would ignore it"
            raise UsageError(f"--{name} is for the CNN models (baseline, tuned); --model={config.model} {uses}")
    multiple = models.width_multiple(config.model)  # the model is a registered one: check_values saw to it
    if any(f % multiple for f in config.filters):
        raise UsageError(
            f"--filters={','.join(map(str, config.filters))}: --model={config.model} counts widths in feature planes, "
            f"{multiple} per group channel; give multiples of {multiple}, e.g. 32,64,128"
        )
    if "crop" in takes and models.invariant(config.model):
        from trainer.models.p4m import exact_sides, pools_exactly

        # An invariant model (p4m) needs every map even before each of its poolings, one per block of --filters.
        side = min(PATCH_SHAPE[:2])
        blocks, seen = len(config.filters), config.crop or side
        if not pools_exactly(seen, blocks, config.padding):
            sides = [n for n in exact_sides(blocks, config.padding, side) if (side - n) % 2 == 0][:3]
            raise UsageError(
                f"--crop={config.crop}: --model={config.model} with --padding={config.padding} halves its maps "
                f"{blocks} times and stays exactly invariant only if each map is even before its pooling; "
                f"give --crop={sides[0] if sides else 'N'}"
                + (f" (or {', '.join(map(str, sides[1:]))})" if sides[1:] else "")
            )


def check_files(config: TrainConfig) -> None:
    """The files the options name exist."""
    if config.channel_stats and not epath.Path(config.channel_stats).exists():
        raise UsageError(
            f"--channel_stats={config.channel_stats!r}: no such file; make one with python -m beam_jobs.stats"
        )
    if config.is_transfer and config.weights not in ("imagenet", "none") and not epath.Path(config.weights).exists():
        raise UsageError(f"--weights={config.weights!r}: no such file; choose imagenet, none or a path to a .h5 file")
