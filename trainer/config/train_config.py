"""The typed, frozen configuration of one training run, its validation and its JSON form.

`trainer/__main__.py` turns the command-line flags into one `TrainConfig`, calls `validate`,
and writes it to `RUN_DIR/config.json` before anything trains; library code receives the
config (or plain arguments taken from it) and never reads flags.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text
from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import models, run_folder
from trainer.errors import UsageError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
AUGMENTATIONS = ("hed", "dihedral", "seed", "none")  # trainer.augment
STRATEGIES = ("auto", "mirrored", "one_device", "default", "multi_worker")
PADDINGS = ("same", "valid")  # the CNNs' convolutions: zero padding, or none (exact dense slide inference)
STAIN_NORMS = ("none", "reinhard")  # trainer.models.stain_norm, first layer of the CNNs
AUGMENT_ON = ("host", "device")  # where the augmentation runs: in the tf.data pipeline or in the train step
SCHEDULES = ("budget", "cosine", "constant")  # trainer.training.schedule; the flag's "auto" is resolved before this
PRECISIONS = ("off", "float16", "bfloat16")  # mixed precision's compute dtype (variables stay float32)

# The seed notebook weighted the positive class 1.5 when training the transfer models.
SEED_TRANSFER_CLASS_WEIGHTS = (1.0, 1.5)

# The model families pcam-tune searches (trainer.tuning.tune_config.MODELS), whose runs take its result as --hparams.
SEARCHED_MODELS = ("tuned", "p4m")
# Keys a tuning result (--hparams) may hold; keras-tuner writes its best hyperparameters as such a flat JSON.
HPARAM_KEYS = (
    "learning_rate",
    "dropout",
    "filters",
    "width",
    "num_blocks",
    "dense",
    "batch_norm",
    "optimizer",
    "weight_decay",
    "batch_size",
)

# Fields that may differ between an interrupted run and its restart.
# A budget schedule's length is fixed once, in the run's state, so a restart may bring another budget. The
# data may move: the run's identity is the dataset itself (RUN_DIR/dataset.json, checked by trainer.training.loop).
# How many steps one call to the device runs changes the speed, not the result (but for when the budget is checked).
_RESTART_FREE_FIELDS = ("verbose", "max_minutes", "max_cpu_minutes", "data_dir", "steps_per_execution")
# Keys that config.json files of older versions hold and that mean nothing now; reading such a file drops them.
_RETIRED_FIELDS = ("crash_after_epochs",)  # a testing aid; tests now pass a callback to trainer.training.loop.run


# Defaults that depend on the schedule (trainer/__main__.py applies them where a flag is not given).
# SEED_RECIPE: the seed notebook's values, kept without a time budget, where short fixed-epoch runs were
# measured (the demo). BUDGET_RECIPE: the budget schedule's, measured on the real sample under 30 CPU-minutes
# (bench/RESULTS.md, "Default recipe on slides the model has never seen"); learning rate, dropout and label
# smoothing apply to
# the CNNs (baseline, tuned), the weight average to every model.
SEED_RECIPE = {"learning_rate": 1e-3, "dropout": 0.5, "ema": 0.0, "label_smoothing": 0.0}
BUDGET_RECIPE = {"learning_rate": 3e-3, "dropout": 0.1, "ema": 0.999, "label_smoothing": 0.1}


# The flag values of precision, XLA and steps per execution that mean "choose for this machine".
PRECISION_CHOICES = ("auto", "on", "off", *PRECISIONS[1:])
AUTO_ON_OFF = ("auto", "on", "off")


def _auto(value: str, gpu: bool) -> bool:
    return gpu if value == "auto" else value == "on"


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (oneDNN then runs bfloat16 convolutions faster per CPU-second
    than float32: bench/RESULTS.md, "Throughput: bfloat16 and the augmentations"); elsewhere bfloat16 is
    emulated and slower."""
    try:
        with open(cpuinfo) as f:
            flags_line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags_line.split()))


def _precision(value: str, gpu: bool) -> str:
    if value == "auto":
        return "float16" if gpu else ("bfloat16" if cpu_has_bfloat16() else "off")
    return "float16" if value == "on" else value


def _steps_per_execution(value: str, gpu: bool, strategy: str) -> int:
    if value == "auto":
        return 32 if gpu and strategy != "multi_worker" else 1
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--steps_per_execution={value!r}: expected 'auto' or a positive integer") from None


def resolve_recipe(
    model: str,
    gpu: bool,
    *,
    schedule: str = "auto",
    epochs: int | None = None,
    max_minutes: float | None = None,
    max_cpu_minutes: float | None = None,
    refit: bool = False,
    learning_rate: float | None = None,
    dropout: float | None = None,
    ema: float | None = None,
    label_smoothing: float | None = None,
    early_stopping_patience: int | None = None,
    mixed_precision: str = "auto",
    jit_compile: str = "auto",
    steps_per_execution: str = "auto",
    strategy: str = "auto",
) -> dict[str, Any]:
    """The recipe and hardware fields of a `TrainConfig` from the values a user gave (None / "auto": not given).

    The one resolution of pcam-train, of every pcam-tune trial and of pcam-gpu-check's precision: the schedule
    (auto: budget with a time budget and no --epochs, else constant), the schedule's recipe of learning rate,
    dropout, weight average and label smoothing where they are not given, the epochs and the patience, and
    precision, XLA and steps per execution for this machine (`gpu`).
    """
    budget = max_minutes is not None or max_cpu_minutes is not None
    # Without a budget the old constant rate stays the default: on short fixed-epoch runs (the demo) the
    # cosine decay and the weight average slowed the escape from the initial plateau (bench/RESULTS.md).
    if schedule == "auto":
        schedule = "budget" if budget and epochs is None else "constant"
    # The budget recipe was chosen on validation AUC with 30 CPU-minutes and confirmed on other slides
    # (bench/RESULTS.md, "Default recipe on slides the model has never seen"); elsewhere the seed's values stay.
    recipe = BUDGET_RECIPE if schedule == "budget" else SEED_RECIPE
    cnn_recipe = recipe if model not in models.TRANSFER else SEED_RECIPE
    if early_stopping_patience is None:  # a refit trains on the validation split: nothing held out to stop on
        early_stopping_patience = 3 if schedule == "constant" and not refit else 0
    return {
        "schedule": schedule,
        "epochs": epochs if epochs is not None or schedule == "budget" else 10,
        "learning_rate": learning_rate if learning_rate is not None else cnn_recipe["learning_rate"],
        "dropout": dropout if dropout is not None else cnn_recipe["dropout"],
        "ema": ema if ema is not None else recipe["ema"],
        "label_smoothing": label_smoothing if label_smoothing is not None else cnn_recipe["label_smoothing"],
        "early_stopping_patience": early_stopping_patience,
        "mixed_precision": _precision(mixed_precision, gpu),
        "jit_compile": _auto(jit_compile, gpu),
        "steps_per_execution": _steps_per_execution(steps_per_execution, gpu, strategy),
    }


_SAME = object()  # an option's flag has the field's default


def option(default=dataclasses.MISSING, help: str = "", *, choices=None, flag_default=_SAME, flag_type=None):
    """A TrainConfig field together with its command-line flag: the flag's help text and choices live here.

    `trainer.shared_flags.define` turns each field into its absl flag, so adding an option is this one field
    (and, if it needs one, a check in `validate`). The flag takes the field's default and its type from the
    annotation, unless the flag means something the field does not hold yet: FLAG_DEFAULT (e.g. None or "auto"
    for a value that `resolve_recipe` fills in) and FLAG_TYPE ("string" or "list", for a value
    `resolved` parses). CHOICES make an enum flag.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "flag_default": default if flag_default is _SAME else flag_default,
        "flag_type": flag_type,
    }
    return dataclasses.field(default=default, metadata=metadata)


_RECIPE_NOTE = "for baseline and tuned with the budget schedule (measured there)"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run does; each field is also the pcam-train flag of its name
    (`option`: its help, choices and flag default), described by `python -m trainer --helpfull`."""

    model: str = option(help="Which registered model to train.", choices=models.NAMES, flag_default=None)
    data_dir: str = option(
        help="TFDS data dir holding the built dataset (TFDS_DIR/pcam/<config>/<version>).", flag_default=None
    )
    model_dir: str = option(
        help="Run folder: config, checkpoints, logs, metrics, plots and model.keras.", flag_default=None
    )
    dataset: str = option("pcam/full", "TFDS dataset NAME/CONFIG[:VERSION], e.g. pcam/full or pcam/sample25.")
    # Optimisation.
    epochs: int | None = option(  # None: as many as the budget schedule fits into the time budget
        10,
        "Epochs to train (transfer models: epochs of fine-tuning, after --head_epochs). Default: with a time "
        "budget (--max_minutes/--max_cpu_minutes), as many as the budget schedule fits into it; without one, 10.",
        flag_default=None,
    )
    batch_size: int = option(64, "Global batch size (split across replicas under a distribution strategy).")
    learning_rate: float = option(  # the peak of the schedule
        1e-3,
        "Peak learning rate (transfer models: of the frozen-base head phase). Default: "
        f"{BUDGET_RECIPE['learning_rate']:g} {_RECIPE_NOTE}, else {SEED_RECIPE['learning_rate']:g}.",
        flag_default=None,
    )
    schedule: str = option(
        "constant",
        "Learning-rate schedule. budget: warm-up, then cosine decay to 0 sized from the measured cost of an "
        "epoch so that training ends when the time budget does; cosine: warm-up and cosine decay over --epochs; "
        "constant: the seed notebook's fixed rate with early stopping. auto: budget when a time budget is given "
        "and --epochs is not, else constant.",
        choices=("auto", *SCHEDULES),
        flag_default="auto",
    )
    optimizer: str = option("adam", "Optimizer; sgd uses Nesterov momentum 0.9.", choices=OPTIMIZERS)
    weight_decay: float = option(0.0, "Decoupled weight decay (0 = none; adamw defaults to 1e-4 when 0).")
    ema: float = option(
        0.0,
        "Momentum of an exponential moving average of the weights, which is what is validated and saved; "
        f"0 = off. Default: {BUDGET_RECIPE['ema']:g} with the budget schedule (where it was measured), else 0.",
        flag_default=None,
    )
    label_smoothing: float = option(
        0.0,
        f"Label smoothing of the binary cross-entropy. Default: {BUDGET_RECIPE['label_smoothing']:g} "
        f"{_RECIPE_NOTE}, else {SEED_RECIPE['label_smoothing']:g}.",
        flag_default=None,
    )
    dropout: float = option(
        0.5,
        f"Dropout rate before the output layer. Default: {BUDGET_RECIPE['dropout']:g} {_RECIPE_NOTE}, else the "
        f"seed notebook's {SEED_RECIPE['dropout']:g}.",
        flag_default=None,
    )
    class_weights: tuple[float, float] | None = option(
        None,
        "Loss weights of label 0 and label 1 as 'W0,W1' (e.g. 1,1.5), 'none', or 'auto': the seed notebook's "
        "1,1.5 for transfer models and none for the CNNs.",
        flag_default="auto",
        flag_type="string",
    )
    early_stopping_patience: int = option(
        3,
        "Epochs without a better val_auc before a phase stops; 0 = never. Default: 3 with --schedule=constant "
        "(without --refit), else 0 (a decaying schedule runs to its end, and the best epoch is kept anyway).",
        flag_default=None,
    )
    max_minutes: float | None = option(  # wall-clock budget of this process (trainer.training.budget)
        None,
        "Time budget: stop after this many wall-clock minutes (checked after every batch; the epoch is still "
        "validated), then evaluate the best weights. The same command continues.",
    )
    max_cpu_minutes: float | None = option(  # CPU-time budget of this process
        None,
        "Time budget in CPU minutes of this process (all threads), as --max_minutes; fair when jobs share a machine.",
    )
    seed: int = option(42, "Seed of weights init, shuffling and augmentation.")
    # Input.
    augment: str = option(
        "dihedral",
        "dihedral: the 8 flips/90-degree rotations plus brightness, contrast, saturation and hue (stain) jitter; "
        "hed: the 8 flips/rotations plus H&E stain jitter in colour-deconvolved stain space (Tellez et al.); "
        "seed: the notebook's flip, rotation 0.1, zoom 0.1, contrast 0.1; none.",
        choices=AUGMENTATIONS,
    )
    augment_on: str = option(
        "host",
        "Where --augment runs. host: in the tf.data pipeline on the CPU cores; device: inside the compiled train "
        "step on the accelerator, so the host only parses and ships uint8 images (not with --augment=seed). "
        "Validation and the saved model never augment.",
        choices=AUGMENT_ON,
    )
    sample_fraction: float = option(1.0, "Train and validate on this fraction of each split (quick runs).")
    steps_per_epoch: int | None = option(None, "Batches per epoch (quick runs); default: one pass over the data.")
    shuffle_buffer: int = option(8192, "Records in the shuffle buffer (serialized, about 27 kB each).")
    refit: bool = option(
        False,
        "The final fit, once the recipe is chosen on validation: train on the train and validation splits "
        "together (every labelled patch) and keep the last (averaged) weights. The validation metrics are then "
        "not held out (metrics.json says so) and no temperature is fitted; needs --early_stopping_patience=0 "
        "(the default with a time budget).",
    )
    # Devices.
    mixed_precision: str = option(
        "off",
        "Mixed precision (float32 variables, 16-bit compute). float16 (with loss scaling) or bfloat16; on = "
        "float16. auto: float16 with a GPU, bfloat16 on a CPU with native bfloat16 units (AMX or AVX512_BF16), "
        "else off.",
        choices=PRECISION_CHOICES,
        flag_default="auto",
    )
    jit_compile: bool = option(
        False, "XLA-compile the train step; auto = on with a GPU.", choices=AUTO_ON_OFF, flag_default="auto"
    )
    strategy: str = option(
        "auto",
        "Distribution. auto: MirroredStrategy on >1 GPU, the one GPU (input prefetched to it) on 1, else the "
        "CPU; multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (BUILD.md); --batch_size "
        "is global.",
        choices=STRATEGIES,
    )
    steps_per_execution: int = option(
        1,
        "Train steps per call into the compiled function (fewer host round trips; the time budget and the "
        "learning-rate schedule are then applied every N steps). auto: 32 with a GPU, else 1 (and 1 with "
        "--strategy=multi_worker).",
        flag_default="auto",
        flag_type="string",
    )
    # The CNN family (baseline uses the seed's values; tuned and p4m read these, possibly from --hparams).
    filters: tuple[int, ...] = option(
        (32, 64, 128),
        "tuned, p4m: conv widths per block (p4m: feature planes, a multiple of 8: width / 8 group channels, each "
        "in 8 orientations, so equal widths cost about equal FLOPs in both).",
        flag_type="list",
    )
    dense: int = option(128, "tuned, p4m: units of the dense layer.")
    batch_norm: bool = option(
        False, "tuned, p4m: batch normalisation after each conv (p4m: over each channel's 8 planes)."
    )
    hparams: str | None = option(
        None,
        "tuned, p4m: JSON of hyperparameters from pcam-tune (keys: " + ", ".join(HPARAM_KEYS) + "). They replace the "
        "defaults; flags given explicitly on the command line win over them.",
    )
    channel_stats: str | None = option(
        None,
        "baseline/tuned: stats.json of beam_jobs.stats; inputs are normalised per channel with its train mean "
        "and std instead of scaled by 1/255.",
    )
    stain_norm: str = option(
        "none",
        "baseline/tuned: reinhard = Reinhard colour normalisation of every patch inside the model (each "
        "patch's mean and std in l-alpha-beta set to those of typical PCam patches), in training and prediction "
        "alike.",
        choices=STAIN_NORMS,
    )
    crop: int = option(
        0,
        "baseline, tuned, p4m: the model's first layer keeps the centre NxN pixels of each patch, around the "
        "centre 32x32 that decides its label (0: the whole 96x96). Saved with the model: predict, evaluate "
        "and export crop alike. An even difference from 96 (equal margins), and for p4m a multiple of 2**blocks.",
    )
    padding: str = option(
        "same",
        "baseline, tuned, p4m: same = zero padding around every convolution; valid = none, so a window's output "
        "depends on its own pixels alone and pcam-slide's dense inference equals per-window inference exactly. "
        "Saved with the model. p4m with valid needs a centre crop that stays even before each pooling (--crop=94).",
        choices=PADDINGS,
    )
    # Transfer models.
    weights: str = option("imagenet", "Transfer models: imagenet, none (random init) or a path to a _notop.h5.")
    head_epochs: int = option(2, "Transfer models: epochs with the base frozen (phase 1).")
    unfreeze_layers: int = option(30, "Transfer models: base layers unfrozen in phase 2 (BN stays frozen).")
    fine_tune_learning_rate: float = option(1e-5, "Transfer models: learning rate of phase 2.")
    full_fine_tune: bool = option(False, "Transfer models: unfreeze the whole base in phase 2.")
    # Logging.
    verbose: str = option("auto", "Keras progress: 1 = bar, 2 = a line per epoch.", choices=("auto", "0", "1", "2"))

    @property
    def is_transfer(self) -> bool:
        return self.model in models.TRANSFER

    @property
    def train_splits(self) -> tuple[str, ...]:
        """The splits training reads: train, and with --refit the validation split too (every labelled patch)."""
        return ("train", "validation") if self.refit else ("train",)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in _RETIRED_FIELDS}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise UsageError(f"unknown config fields {unknown}; known fields are {sorted(fields)}")
        for name in ("class_weights", "filters"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


# Options that only reach the model through its builder's keyword arguments (train.build_model passes a builder
# only the arguments it takes); given to a model whose builder takes none of them, they would change nothing.
_BUILDER_OPTIONS = ("filters", "dense", "batch_norm", "crop", "padding", "weights")
# What resolve_recipe takes besides the model and the machine.
_RECIPE_OPTIONS = tuple(
    name for name, p in inspect.signature(resolve_recipe).parameters.items() if p.kind is p.KEYWORD_ONLY
)


def resolved(gpu: bool, **given) -> TrainConfig:
    """The validated TrainConfig pcam-train makes when given these options as flags, on a machine with or
    without a GPU: every other field at its flag's default (`option`), the schedule's recipe, precision, XLA
    and steps per execution resolved (`resolve_recipe`), filters and class weights parsed, and a --hparams
    file applied under the options given. The one resolution of the command and of library callers:

        config = resolved(gpu=False, model="baseline", data_dir=TFDS_DIR, model_dir=RUN, max_cpu_minutes=30)
    """
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise UsageError(f"unknown options {unknown}; the options are TrainConfig's fields: {sorted(fields)}")
    values = {name: f.metadata["flag_default"] for name, f in fields.items()}
    values = {name: None if v is dataclasses.MISSING else v for name, v in values.items()}
    values.update(given)
    model = values["model"]
    _refuse_options_the_model_ignores(model, given)
    recipe = resolve_recipe(model, gpu, **{name: values[name] for name in _RECIPE_OPTIONS})
    values.update(
        recipe, filters=_filters(values["filters"]), class_weights=_class_weights(values["class_weights"], model)
    )
    if values["hparams"]:
        if model not in SEARCHED_MODELS:
            raise UsageError(
                f"--hparams is for the models pcam-tune searches ({', '.join(SEARCHED_MODELS)}), not --model={model}"
            )
        from_file = hparams_to_fields(read_hparams(values["hparams"]))
        values.update({k: v for k, v in from_file.items() if k not in given})  # the options given win
    return validate(TrainConfig(**values))


def _filters(value) -> tuple[int, ...]:
    """--filters as the flag gives it (strings) or as a library caller does (integers)."""
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else repr(value)
        raise UsageError(f"--filters={shown}: expected integers like 32,64,128") from None


def _class_weights(value, model: str) -> tuple[float, float] | None:
    """--class_weights: 'auto', 'none' or 'W0,W1' (the flag), or already a pair or None (a library caller)."""
    if value is None or isinstance(value, (tuple, list)):
        return tuple(float(v) for v in value) if value is not None else None
    if value == "auto":
        return SEED_TRANSFER_CLASS_WEIGHTS if model in models.TRANSFER else None
    if value == "none":
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--class_weights={value!r}: expected 'auto', 'none' or two numbers like 1,1.5") from None


def _refuse_options_the_model_ignores(model: str | None, given: dict) -> None:
    if model not in models.NAMES:
        return  # validate names the model and the choices
    takes = models.arguments(model)
    ignored = [name for name in _BUILDER_OPTIONS if name in given and name not in takes]
    if ignored:
        uses = "the seed's 32,64,128 widths and dense 128; --model=tuned takes them" if model == "baseline" else ""
        raise UsageError(
            f"{', '.join('--' + n for n in ignored)} does not apply to --model={model}, which would ignore it"
            + (f" ({uses})" if uses else "")
        )


def check_choice(flag: str, value, allowed) -> None:
    """Raises ValueError naming the flag, its value and the allowed values unless `value` is one of them."""
    if value not in allowed:
        raise UsageError(f"--{flag}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _positive(flag: str, value, allow_zero: bool = False) -> None:
    if value is None or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"--{flag}={value!r} must be {bound}")


def validate(config: TrainConfig) -> TrainConfig:
    """Returns `config` unchanged, or raises ValueError naming the flag, its value and what is allowed."""
    check_choice("model", config.model, models.NAMES)
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    check_choice("augment", config.augment, AUGMENTATIONS)
    check_choice("strategy", config.strategy, STRATEGIES)
    check_choice("augment_on", config.augment_on, AUGMENT_ON)
    check_choice("stain_norm", config.stain_norm, STAIN_NORMS)
    check_choice("padding", config.padding, PADDINGS)
    check_choice("schedule", config.schedule, SCHEDULES)
    check_choice("mixed_precision", config.mixed_precision, PRECISIONS)
    check_choice("verbose", config.verbose, ("auto", "0", "1", "2"))
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
    multiple = models.width_multiple(config.model)  # the model is a registered one: checked above
    if any(f % multiple for f in config.filters):
        raise UsageError(
            f"--filters={','.join(map(str, config.filters))}: --model={config.model} counts widths in feature planes, "
            f"{multiple} per group channel; give multiples of {multiple}, e.g. 32,64,128"
        )
    _positive("dense", config.dense)
    side = min(PATCH_SHAPE[:2])
    if config.crop and not (0 < config.crop <= side and (side - config.crop) % 2 == 0):
        raise UsageError(
            f"--crop={config.crop}: the centre crop must fit in the {side}x{side} patch and leave equal margins "
            f"(an even number from 2 to {side}, e.g. 64), or 0 for the whole patch"
        )
    if "crop" in models.arguments(config.model) and models.invariant(config.model):
        from trainer.models.p4m import exact_sides, pools_exactly

        # An invariant model (p4m) needs every map even before each of its poolings, one per block of --filters.
        blocks, seen = len(config.filters), config.crop or side
        if not pools_exactly(seen, blocks, config.padding):
            sides = [n for n in exact_sides(blocks, config.padding, side) if (side - n) % 2 == 0][:3]
            raise UsageError(
                f"--crop={config.crop}: --model={config.model} with --padding={config.padding} halves its maps "
                f"{blocks} times and stays exactly invariant only if each map is even before its pooling; "
                f"give --crop={sides[0] if sides else 'N'}"
                + (f" (or {', '.join(map(str, sides[1:]))})" if sides[1:] else "")
            )
    if config.channel_stats and config.is_transfer:
        raise UsageError(
            f"--channel_stats is for the CNN models (baseline, tuned); --model={config.model} uses ImageNet preprocessing"
        )
    if config.stain_norm != "none" and config.is_transfer:
        raise UsageError(
            f"--stain_norm is for the CNN models (baseline, tuned); --model={config.model} uses ImageNet preprocessing"
        )
    if config.channel_stats and not epath.Path(config.channel_stats).exists():
        raise UsageError(
            f"--channel_stats={config.channel_stats!r}: no such file; make one with python -m beam_jobs.stats"
        )
    if config.is_transfer and config.weights not in ("imagenet", "none") and not epath.Path(config.weights).exists():
        raise UsageError(f"--weights={config.weights!r}: no such file; choose imagenet, none or a path to a .h5 file")
    return config


def read_hparams(path: str) -> dict[str, Any]:
    """A tuning result: a flat JSON object {hyperparameter name: value} with keys from HPARAM_KEYS."""
    try:
        values = json.loads(epath.Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--hparams={path!r}: no such file") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--hparams={path!r} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise UsageError(f"--hparams={path!r} must hold a JSON object of name -> value, got {type(values).__name__}")
    unknown = sorted(set(values) - set(HPARAM_KEYS))
    if unknown:
        raise UsageError(f"--hparams={path!r} has unknown keys {unknown}; allowed keys are {', '.join(HPARAM_KEYS)}")
    for key, value in values.items():
        kind = _HPARAM_TYPES[key]
        ok = (isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))) or (
            key == "filters" and isinstance(value, list) and value and all(isinstance(v, int) for v in value)
        )
        if not ok:
            names = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
            expected = names[kind[0] if isinstance(kind, tuple) else kind]
            raise UsageError(
                f"--hparams={path!r}: {key}={value!r} must be {expected}"
                + (" or a list of integers" if key == "filters" else "")
            )
    return values


_HPARAM_TYPES = {
    "learning_rate": (float, int),
    "dropout": (float, int),
    "filters": int,
    "width": int,
    "num_blocks": int,
    "dense": int,
    "batch_norm": bool,
    "optimizer": str,
    "weight_decay": (float, int),
    "batch_size": int,
}


def hparams_to_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Maps tuning hyperparameters onto TrainConfig fields.

    `filters` may be a list (the widths of the blocks) or one number; a number, like `width`, is the
    first block's width, doubled in each of `num_blocks` blocks (default 3), as in the seed CNN.
    """
    fields: dict[str, Any] = {}
    for key in ("learning_rate", "dropout", "dense", "batch_norm", "optimizer", "weight_decay", "batch_size"):
        if key in values:
            fields[key] = values[key]
    width = values.get("filters", values.get("width"))
    if isinstance(width, (list, tuple)):
        if "num_blocks" in values and values["num_blocks"] != len(width):
            raise UsageError(
                f"hparams: filters {list(width)} has {len(width)} blocks but num_blocks={values['num_blocks']}"
            )
        fields["filters"] = tuple(int(w) for w in width)
    elif width is not None or "num_blocks" in values:
        width = int(width if width is not None else 32)
        fields["filters"] = tuple(width * 2**i for i in range(int(values.get("num_blocks", 3))))
    return fields


def write(config: TrainConfig) -> None:
    """Writes RUN_DIR/config.json; a restart must use the same config as the run it continues."""
    model_dir = epath.Path(config.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / run_folder.CONFIG_FILE
    if path.exists():
        old = TrainConfig.from_json(path.read_text())
        differ = [
            f"{f.name}: {getattr(old, f.name)!r} -> {getattr(config, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in _RESTART_FREE_FIELDS and getattr(old, f.name) != getattr(config, f.name)
        ]
        if differ:
            raise UsageError(
                f"{path} belongs to a run with a different config ({'; '.join(differ)}); "
                "restart with the same flags to resume it, or choose a new --model_dir"
            )
    atomic_write_text(path, config.to_json())
