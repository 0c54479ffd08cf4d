"""Train one model on a built `pcam` TFDS dataset and evaluate it on the validation split.

    python -m trainer --model=baseline --data_dir=TFDS_DIR --model_dir=runs/baseline
    python -m trainer --model=resnet50 --weights=imagenet --head_epochs=2 --epochs=8 \\
        --data_dir=TFDS_DIR --model_dir=runs/resnet50
    python -m trainer --flagfile=runs/quick.flags          # one flag per line
    python -m trainer --model=baseline ... --epochs=1 --steps_per_epoch=20   # smoke run

Restarting an interrupted run with the same command continues where it stopped. Each flag is a field of
`trainer.config.TrainConfig`, defined from the field by `trainer.shared_flags` (its help, choices and
default live with the field); the flags become one validated, frozen TrainConfig that is written to
RUN_DIR/config.json before training.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags, logging

from trainer import config as config_lib
from trainer import errors, models, shared_flags

FLAGS = flags.FLAGS

# A flag per TrainConfig field, made from the field (trainer.config.option: its help, choices and flag default).
shared_flags.define(FLAGS, shared_flags.TRAIN)
for _name in shared_flags.TRAIN:
    flags.declare_key_flag(_name)  # listed by --help, not only --helpfull


# Flags whose value the --hparams file supplies unless they are given on the command line.
_HPARAM_FLAGS = (
    "learning_rate",
    "dropout",
    "dense",
    "batch_norm",
    "optimizer",
    "weight_decay",
    "batch_size",
    "filters",
)


def _class_weights(value: str, model: str) -> tuple[float, float] | None:
    if value == "auto":
        return config_lib.SEED_TRANSFER_CLASS_WEIGHTS if model in models.TRANSFER else None
    if value == "none":
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise errors.UsageError(
            f"--class_weights={value!r}: expected 'auto', 'none' or two numbers like 1,1.5"
        ) from None


# Flags that only reach the model through its builder's keyword arguments (train.build_model passes a builder
# only the arguments it takes); given to a model whose builder takes none of them, they would change nothing.
_BUILDER_FLAGS = ("filters", "dense", "batch_norm", "weights")


def _refuse_flags_the_model_ignores(f) -> None:
    takes = models.arguments(f.model)
    ignored = [name for name in _BUILDER_FLAGS if f[name].present and name not in takes]
    if ignored:
        uses = "the seed's 32,64,128 widths and dense 128; --model=tuned takes them" if f.model == "baseline" else ""
        raise errors.UsageError(
            f"{', '.join('--' + n for n in ignored)} does not apply to --model={f.model}, which would ignore it"
            + (f" ({uses})" if uses else "")
        )


# TrainConfig fields whose flag is parsed here rather than passed on (the recipe's are resolved by resolve_recipe).
_PARSED = ("filters", "class_weights")
_FIELDS = tuple(f.name for f in dataclasses.fields(config_lib.TrainConfig))


def config_from_flags(flag_values, gpu: bool) -> config_lib.TrainConfig:
    """Turns parsed flags into a validated TrainConfig (the only place flags are read)."""
    f = flag_values
    recipe = config_lib.resolve_recipe(
        f.model,
        gpu,
        schedule=f.schedule,
        epochs=f.epochs,
        max_minutes=f.max_minutes,
        max_cpu_minutes=f.max_cpu_minutes,
        refit=f.refit,
        learning_rate=f.learning_rate,
        dropout=f.dropout,
        ema=f.ema,
        label_smoothing=f.label_smoothing,
        early_stopping_patience=f.early_stopping_patience,
        mixed_precision=f.mixed_precision,
        jit_compile=f.jit_compile,
        steps_per_execution=f.steps_per_execution,
        strategy=f.strategy,
    )
    try:
        filters = tuple(int(v) for v in f.filters)
    except ValueError:
        raise errors.UsageError(f"--filters={','.join(f.filters)}: expected integers like 32,64,128") from None
    _refuse_flags_the_model_ignores(f)
    # Every other TrainConfig field is set by the flag of its name as it is (the flags are made from the fields),
    # so adding an option is one field.
    values = {name: f[name].value for name in _FIELDS if name not in recipe and name not in _PARSED}
    values.update(recipe, filters=filters, class_weights=_class_weights(f.class_weights, f.model))
    if f.hparams:
        if f.model != "tuned":
            raise errors.UsageError(f"--hparams is for --model=tuned, not --model={f.model}")
        from_file = config_lib.hparams_to_fields(config_lib.read_hparams(f.hparams))
        values.update({k: v for k, v in from_file.items() if not (k in _HPARAM_FLAGS and f[k].present)})
    return config_lib.validate(config_lib.TrainConfig(**values))


def _main(argv):
    errors.no_arguments(argv)
    import tensorflow as tf  # after flag parsing, so --help stays fast

    from trainer import data, distribute, run_folder, train

    gpu = bool(tf.config.list_physical_devices("GPU"))
    config = config_from_flags(FLAGS, gpu)
    # On a cluster only the chief claims and writes the run folder; the other workers write nothing there.
    task = distribute.SINGLE
    if config.strategy == "multi_worker":
        task = distribute.task_from_tf_config(os.environ.get("TF_CONFIG"))
    data.load_builder(config.data_dir, config.dataset)  # the inputs check out before the folder is claimed
    lock = run_folder.RunLock(config.model_dir, " ".join(sys.argv)).acquire() if task.is_chief else None
    try:
        if task.is_chief:
            config_lib.write(config)
            logging.info("config written to %s/%s", config.model_dir, run_folder.CONFIG_FILE)
        train.run(config)
    finally:
        if lock is not None:
            lock.release()


def main() -> None:
    """The console script `pcam-train` (and `python -m trainer`)."""
    flags.mark_flags_as_required(["model", "data_dir", "model_dir"])
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
