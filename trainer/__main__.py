"""Train one model on a built `pcam` TFDS dataset and evaluate it on the validation split.

    python -m trainer --model=baseline --data_dir=TFDS_DIR --model_dir=runs/baseline
    python -m trainer --model=resnet50 --weights=imagenet --head_epochs=2 --epochs=8 \\
        --data_dir=TFDS_DIR --model_dir=runs/resnet50
    python -m trainer --flagfile=runs/quick.flags          # one flag per line
    python -m trainer --model=baseline ... --epochs=1 --steps_per_epoch=20   # smoke run

Restarting an interrupted run with the same command continues where it stopped. Flags are defined
here and, those shared with pcam-tune, in `trainer.shared_flags`, each named as the field of
`trainer.config.TrainConfig` it sets; they become one validated, frozen TrainConfig that is written to
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

flags.DEFINE_enum("model", None, models.NAMES, "Which registered model to train.")
shared_flags.define(FLAGS)
flags.DEFINE_string("model_dir", None, "Run folder: config, checkpoints, logs, metrics, plots and model.keras.")

flags.DEFINE_integer(
    "epochs",
    None,
    "Epochs to train (transfer models: epochs of fine-tuning, after --head_epochs). Default: with a time budget "
    "(--max_minutes/--max_cpu_minutes), as many as the budget schedule fits into it; without one, 10.",
)
flags.DEFINE_float(
    "learning_rate",
    None,
    "Peak learning rate (transfer models: of the frozen-base head phase). Default: "
    f"{config_lib.BUDGET_RECIPE['learning_rate']:g} for baseline and tuned with the budget schedule (measured there), "
    f"else {config_lib.SEED_RECIPE['learning_rate']:g}.",
)
flags.DEFINE_enum(
    "schedule",
    "auto",
    ("auto", *config_lib.SCHEDULES),
    "Learning-rate schedule. budget: warm-up, then cosine decay to 0 sized from the measured cost of an epoch so "
    "that training ends when the time budget does; cosine: warm-up and cosine decay over --epochs; constant: the "
    "seed notebook's fixed rate with early stopping. auto: budget when a time budget is given and --epochs is not, "
    "else constant.",
)
flags.DEFINE_enum("optimizer", "adam", config_lib.OPTIMIZERS, "Optimizer; sgd uses Nesterov momentum 0.9.")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay (0 = none; adamw defaults to 1e-4 when 0).")
flags.DEFINE_float(
    "dropout",
    None,
    f"Dropout rate before the output layer. Default: {config_lib.BUDGET_RECIPE['dropout']:g} for baseline and tuned "
    f"with the budget schedule (measured there), else the seed notebook's {config_lib.SEED_RECIPE['dropout']:g}.",
)
flags.DEFINE_string(
    "class_weights",
    "auto",
    "Loss weights of label 0 and label 1 as 'W0,W1' (e.g. 1,1.5), 'none', or 'auto': the seed notebook's "
    "1,1.5 for transfer models and none for the CNNs.",
)
flags.DEFINE_integer(
    "early_stopping_patience",
    None,
    "Epochs without a better val_auc before a phase stops; "
    "0 = never. Default: 3 with --schedule=constant (without --refit), else 0 (a decaying schedule runs to "
    "its end, and the best epoch is kept anyway).",
)
flags.DEFINE_float(
    "max_minutes",
    None,
    "Time budget: stop after this many wall-clock minutes (checked after every "
    "batch; the epoch is still validated), then evaluate the best weights. The same command continues.",
)
flags.DEFINE_float(
    "max_cpu_minutes",
    None,
    "Time budget in CPU minutes of this process (all threads), as --max_minutes; fair when jobs share a machine.",
)

flags.DEFINE_enum(
    "augment_on",
    "host",
    config_lib.AUGMENT_ON,
    "Where --augment runs. host: in the tf.data pipeline on the CPU cores; device: inside the compiled train "
    "step on the accelerator, so the host only parses and ships uint8 images (not with --augment=seed). "
    "Validation and the saved model never augment.",
)

flags.DEFINE_bool(
    "refit",
    False,
    "The final fit, once the recipe is chosen on validation: train on the train and validation splits together "
    "(every labelled patch) and keep the last (averaged) weights. The validation metrics are then not held "
    "out (metrics.json says so) and no temperature is fitted; needs --early_stopping_patience=0 (the default "
    "with a time budget).",
)
flags.DEFINE_enum(
    "strategy",
    "auto",
    config_lib.STRATEGIES,
    "Distribution. auto: MirroredStrategy on >1 GPU, the one GPU (input prefetched to it) on 1, else the CPU; "
    "multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (BUILD.md); --batch_size is global.",
)

flags.DEFINE_list("filters", ["32", "64", "128"], "tuned: conv widths per block.")
flags.DEFINE_integer("dense", 128, "tuned: units of the dense layer.")
flags.DEFINE_bool("batch_norm", False, "tuned: batch normalisation after each conv.")
flags.DEFINE_string(
    "channel_stats",
    None,
    "baseline/tuned: stats.json of beam_jobs.stats; inputs are normalised per channel with its train mean and std "
    "instead of scaled by 1/255.",
)
flags.DEFINE_enum(
    "stain_norm",
    "none",
    config_lib.STAIN_NORMS,
    "baseline/tuned: reinhard = Reinhard colour normalisation of every patch inside the model (each patch's "
    "mean and std in l-alpha-beta set to those of typical PCam patches), in training and prediction alike.",
)
flags.DEFINE_string(
    "hparams",
    None,
    "tuned: JSON of hyperparameters from tuning (keys: " + ", ".join(config_lib.HPARAM_KEYS) + "). "
    "They replace the defaults; flags given explicitly on the command line win over them.",
)

flags.DEFINE_string("weights", "imagenet", "Transfer models: imagenet, none (random init) or a path to a _notop.h5.")
flags.DEFINE_integer("head_epochs", 2, "Transfer models: epochs with the base frozen (phase 1).")
flags.DEFINE_integer("unfreeze_layers", 30, "Transfer models: base layers unfrozen in phase 2 (BN stays frozen).")
flags.DEFINE_float("fine_tune_learning_rate", 1e-5, "Transfer models: learning rate of phase 2.")
flags.DEFINE_bool("full_fine_tune", False, "Transfer models: unfreeze the whole base in phase 2.")


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
    # Every other TrainConfig field is set by the flag of its name as it is (tests/test_trainer_cli.py checks
    # that each field has one), so adding an option is a field and its flag.
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
