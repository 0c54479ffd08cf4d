"""TrainConfig: the typed, frozen configuration of one training run, and `resolved`, which makes it from the options
a user gave, as pcam-train does.

`trainer/__main__.py` turns the command-line flags into one TrainConfig (`resolved`: the recipe and hardware
defaults resolved, --hparams applied, validated) and writes it to RUN_DIR/config.json before anything trains;
library code receives the config (or plain arguments taken from it) and never reads flags.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from typing import Any

from trainer import models
from trainer.config import hparams as hparams_lib
from trainer.config import options
from trainer.config.choices import OPTIMIZERS, PADDINGS, SCHEDULES, STAIN_NORMS, STRATEGIES
from trainer.config.defaults import BUDGET_RECIPE, SEED_RECIPE, resolve_recipe
from trainer.config.options import option
from trainer.config.validation import validate
from trainer.errors import UsageError

# The seed notebook weighted the positive class 1.5 when training the transfer models.
SEED_TRANSFER_CLASS_WEIGHTS = (1.0, 1.5)

# Keys that config.json files of older versions hold and that mean nothing now; reading such a file drops them.
_RETIRED_FIELDS = ("crash_after_epochs",)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run does; each field is also the pcam-train flag of its name
    (`option`: its help, choices and flag default), described by `python -m trainer --helpfull`."""

    model: str = option(help="Which registered model to train.", choices=models.NAMES, flag_default=None, required=True)
    data_dir: str = options.data_dir(required=True)
    model_dir: str = option(
        help="Run folder: config, checkpoints, logs, metrics, plots and model.keras.", flag_default=None, required=True
    )
    dataset: str = options.dataset()
    # Optimisation.
    epochs: int | None = option(  # None: as many as the budget schedule fits into the time budget
        10,
        "Epochs to train (transfer models: epochs of fine-tuning, after --head_epochs). Default: with a time "
        "budget (--max_minutes/--max_cpu_minutes), as many as the budget schedule fits into it; without one, 10.",
        flag_default=None,
    )
    batch_size: int = options.batch_size()
    learning_rate: float = option(  # the peak of the schedule
        1e-3,
        "Peak learning rate (transfer models: of the frozen-base head phase). Default: "
        f"{BUDGET_RECIPE['learning_rate']:g} {options.RECIPE_NOTE}, else {SEED_RECIPE['learning_rate']:g}.",
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
    ema: float = options.ema()
    label_smoothing: float = options.label_smoothing()
    dropout: float = option(
        0.5,
        f"Dropout rate before the output layer. Default: {BUDGET_RECIPE['dropout']:g} {options.RECIPE_NOTE}, else the "
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
    max_minutes: float | None = options.max_minutes()
    max_cpu_minutes: float | None = options.max_cpu_minutes()
    seed: int = options.seed()
    # Input.
    augment: str = options.augment()
    augment_on: str = options.augment_on()
    sample_fraction: float = options.sample_fraction()
    steps_per_epoch: int | None = options.steps_per_epoch()
    shuffle_buffer: int = options.shuffle_buffer()
    refit: bool = option(
        False,
        "The final fit, once the recipe is chosen on validation: train on the train and validation splits "
        "together (every labelled patch) and keep the last (averaged) weights. The validation metrics are then "
        "not held out (metrics.json says so) and no temperature is fitted; needs --early_stopping_patience=0 "
        "(the default with a time budget).",
    )
    # Devices.
    mixed_precision: str = options.mixed_precision()
    jit_compile: bool = options.jit_compile()
    strategy: str = option(
        "auto",
        "Distribution. auto: MirroredStrategy on >1 GPU, the one GPU (input prefetched to it) on 1, else the "
        "CPU; multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (BUILD.md); --batch_size "
        "is global.",
        choices=STRATEGIES,
    )
    steps_per_execution: int = options.steps_per_execution()
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
        "tuned, p4m: JSON of hyperparameters from pcam-tune (keys: "
        + ", ".join(hparams_lib.KEYS)
        + "). They replace the "
        "defaults; flags given explicitly on the command line win over them.",
    )
    channel_stats: str | None = options.channel_stats()
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
    verbose: str = options.verbose()

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


# Options that only reach the model through its builder's keyword arguments (recipe.build_model passes a builder
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
        if model not in hparams_lib.MODELS:
            raise UsageError(
                f"--hparams is for the models pcam-tune searches ({', '.join(hparams_lib.MODELS)}), not --model={model}"
            )
        from_file = hparams_lib.to_fields(hparams_lib.read(values["hparams"]))
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
