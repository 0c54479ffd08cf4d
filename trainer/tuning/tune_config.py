"""The settings of one hyperparameter search, their validation, and the check that a restart keeps them.

    from trainer.tuning import tune_config
    config = tune_config.validate(tune_config.TuneConfig.of(TUNER_DIR, DATA_DIR, space="seed", max_trials=5))

pcam-tune's flags are the fields of `TuneOptions` (the data, input, recipe, budget and device options declared
once for pcam-train and pcam-tune in trainer.config.options); `resolve` turns them into a `TuneConfig`: the
`TrainConfig` every trial trains with (`TuneConfig.trial`) and the search's own settings (`SearchSettings`). The trial's config is validated
by `trainer.config.validation.validate`, so a search accepts exactly what `python -m trainer` does; only the search's
own settings are checked here. TUNER_DIR/tune_config.json records the settings, flat (with the channel
statistics' values); a search restarted with other settings is refused, naming them.
"""

from __future__ import annotations

import dataclasses
import json

from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text
from trainer.config import defaults, hparams, options, train_config, validation
from trainer.config.options import option
from trainer.errors import UsageError

TUNE_CONFIG_FILE = "tune_config.json"
TUNERS = ("random", "hyperband", "bayesian")  # trainer.tuning.tuners.make_tuner
SPACES = ("seed", "wide")  # trainer.tuning.hypermodel's search spaces
MODELS = hparams.MODELS  # the model families searched: the CNN of --model=tuned, and the P4M CNN
# The fields of trainer.config.defaults.resolve_recipe that a search holds; the trial's rate and dropout come from its hyperparameters.
RECIPE_FIELDS = ("schedule", "ema", "label_smoothing", "mixed_precision", "jit_compile", "steps_per_execution")

# What pcam-tune's trials train with by default (--schedule=auto): pcam-train's default recipe, the budget recipe
# of a run with a time budget, for a trial that trains a fixed number of epochs: the budget schedule's warm-up and
# decay over those epochs (cosine), its weight average and its label smoothing. So the search measures the
# training its result gets; the learning rate and dropout are the trial's own, from the search space.
TRIAL_RECIPE = {
    "schedule": "cosine",
    "ema": defaults.BUDGET_RECIPE["ema"],
    "label_smoothing": defaults.BUDGET_RECIPE["label_smoothing"],
}


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The search's own settings, beside what its trials train with; each is also the pcam-tune flag of its name."""

    tuner: str = option(
        "random", "keras-tuner algorithm: RandomSearch, Hyperband or BayesianOptimization.", choices=TUNERS
    )
    space: str = option(
        "wide",
        "seed: the notebook's learning rate {1e-4, 3e-4, 1e-3} x dropout {0.3..0.7}; wide: learning rate (log), "
        "dropout, width of the first block, conv blocks, batch norm, optimizer and weight decay.",
        choices=SPACES,
    )
    max_trials: int = option(10, "Trials in all (random, bayesian); a restart may raise it to add trials.")
    executions_per_trial: int = option(1, "Trainings per trial, their best val_auc averaged (seed: 5).")
    hyperband_factor: int = option(3, "Hyperband's reduction factor between rounds.")


SEARCH_FIELDS = tuple(f.name for f in dataclasses.fields(SearchSettings))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TuneConfig(SearchSettings):
    """One search: what every trial trains with, and the search's own settings.

    `trial` is the `TrainConfig` of `python -m trainer --model=tuned` with the same flags (its model_dir is
    the search folder, TUNER_DIR), so a trial trains as pcam-train would, validated by the trainer's rules;
    the trial's own hyperparameters (learning rate, widths, ...) come from the search space instead.
    Library callers build one with `of`; pcam-tune from its flags (TuneOptions) with `resolve`.
    """

    trial: train_config.TrainConfig

    @classmethod
    def of(cls, tuner_dir: str, data_dir: str, **settings) -> TuneConfig:
        """A search from flat settings, as the command's flags give them: the search's own (`tuner`, `space`, ...)
        and any `TrainConfig` field for the trials (model "tuned", epochs 5, no early stopping by default)."""
        own = {k: settings.pop(k) for k in list(settings) if k in SEARCH_FIELDS}
        trial = {"model": "tuned", "epochs": 5, **settings}
        # A trial keeps its best epoch's score: early stopping would only shorten it.
        trial = train_config.TrainConfig(data_dir=data_dir, model_dir=tuner_dir, early_stopping_patience=0, **trial)
        return cls(trial=trial, **own)

    def replace(self, **changes) -> TuneConfig:
        """A copy with flat settings changed (search fields, `tuner_dir`, or the trials' TrainConfig fields)."""
        own = {k: changes.pop(k) for k in list(changes) if k in SEARCH_FIELDS}
        if "tuner_dir" in changes:
            changes["model_dir"] = changes.pop("tuner_dir")
        return dataclasses.replace(self, trial=dataclasses.replace(self.trial, **changes), **own)

    @property
    def tuner_dir(self) -> str:
        return self.trial.model_dir

    def record(self) -> dict:
        """The settings as TUNER_DIR/tune_config.json holds them: flat, the search folder as "tuner_dir"."""
        trial = {k: v for k, v in dataclasses.asdict(self.trial).items() if k != "model_dir"}
        own = {f: getattr(self, f) for f in SEARCH_FIELDS}
        return json.loads(json.dumps({**trial, **own, "tuner_dir": self.tuner_dir}))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TuneOptions(SearchSettings):
    """pcam-tune's command line, a flag per field: the search folder, the search's own settings, and what every
    trial trains with, as pcam-train's options of the same names (trainer.config.options) but for the model,
    the epochs and the schedule, which are a search's. `resolve` makes the TuneConfig."""

    tuner_dir: str = option(
        help="Search folder: keras-tuner state, trials.json, trials.md, best_hyperparameters.json.", required=True
    )
    data_dir: str = options.data_dir(required=True)
    dataset: str = options.dataset()
    model: str = option(
        "tuned",
        "The model family searched: tuned (the CNN of --model=tuned) or p4m (its widths count feature planes, 8 per "
        "group channel, so the same space costs about the same FLOPs); pcam-train --model=NAME --hparams=best "
        "reads it.",
        choices=MODELS,
    )
    epochs: int = option(5, "Epochs per trial; for Hyperband the most epochs any model trains (max_epochs).")
    schedule: str = option(
        "auto",
        "Learning-rate schedule of every trial. auto: as pcam-train trains by default (with a time budget), so that "
        "the search measures the training its result gets: cosine (the budget schedule's warm-up and decay, over "
        f"the trial's epochs) with the budget recipe's weight average (--ema {TRIAL_RECIPE['ema']:g}) and label "
        f"smoothing ({TRIAL_RECIPE['label_smoothing']:g}) unless those flags are given; cosine or constant: what "
        "pcam-train resolves for them (no average, no smoothing).",
        choices=("auto", "cosine", "constant"),
    )
    ema: float | None = options.ema()
    label_smoothing: float | None = options.label_smoothing()
    batch_size: int = options.batch_size()
    seed: int = options.seed()
    augment: str = options.augment()
    sample_fraction: float = options.sample_fraction()
    steps_per_epoch: int | None = options.steps_per_epoch()
    shuffle_buffer: int = options.shuffle_buffer()
    channel_stats: str | None = options.channel_stats()
    max_minutes: float | None = options.max_minutes()
    max_cpu_minutes: float | None = options.max_cpu_minutes()
    mixed_precision: str = options.mixed_precision()
    jit_compile: bool | str = options.jit_compile()
    steps_per_execution: int | str = options.steps_per_execution()
    verbose: str = options.verbose()


def resolve(opts: TuneOptions, gpu: bool) -> TuneConfig:
    """The validated TuneConfig of pcam-tune's options on a machine with or without a GPU: the trials' recipe and
    hardware resolved as pcam-train resolves the same options (`trainer.config.defaults.resolve_recipe`)."""
    values = dataclasses.asdict(opts)
    search = {name: values.pop(name) for name in SEARCH_FIELDS}
    tuner_dir = values.pop("tuner_dir")
    if values["schedule"] == "auto":  # pcam-train's default recipe, for a trial's fixed epochs (TRIAL_RECIPE)
        values["schedule"] = TRIAL_RECIPE["schedule"]
        for name in ("ema", "label_smoothing"):
            values[name] = TRIAL_RECIPE[name] if values[name] is None else values[name]
    # The same resolution as pcam-train's, from the options both commands have; the rate and dropout are the trial's.
    recipe = defaults.resolve_recipe(
        values["model"],
        gpu,
        **{name: values[name] for name in (*RECIPE_FIELDS, "epochs", "max_minutes", "max_cpu_minutes")},
    )
    values.update({name: recipe[name] for name in RECIPE_FIELDS})
    return validate(TuneConfig.of(tuner_dir, **values, **search))


# May differ on a restart, or between the chief and workers of one search (paths and devices are per machine).
_RESTART_FREE_FIELDS = (
    "data_dir",
    "tuner_dir",
    "channel_stats",
    "max_trials",
    "mixed_precision",
    "jit_compile",
    "steps_per_execution",
    "verbose",
    "max_minutes",
    "max_cpu_minutes",
)

# What searches recorded before these fields existed trained with (constant rate, no average, no smoothing),
# so such a search continues when the flags resolve to the same, and is refused, naming the field, when not.
# Other fields an older record lacks held values that no flag of pcam-tune could change then; they are not compared.
_RECORDED_BEFORE = {"schedule": "constant", "ema": 0.0, "label_smoothing": 0.0}


def validate(config: TuneConfig) -> TuneConfig:
    """Returns `config` unchanged, or raises ValueError naming the flag, its value and what is allowed."""
    validation.check_choice("model", config.trial.model, MODELS)
    validation.check_choice("tuner", config.tuner, TUNERS)
    validation.check_choice("space", config.space, SPACES)
    if not config.tuner_dir:
        raise UsageError("--tuner_dir is required: the folder for the search state and its results")
    if config.trial.schedule == "budget":
        raise UsageError(
            "--schedule=budget sizes a run to its time budget, but a trial trains --epochs; tune with "
            "--schedule=cosine (the budget schedule's warm-up and decay over the trial's epochs) or constant"
        )
    if config.trial.early_stopping_patience != 0:
        raise UsageError("a trial keeps its best epoch's score: its early_stopping_patience must be 0")
    validation.validate(config.trial)
    for flag in ("max_trials", "executions_per_trial"):
        if getattr(config, flag) < 1:
            raise UsageError(f"--{flag}={getattr(config, flag)!r} must be >= 1")
    if config.hyperband_factor < 2:
        raise UsageError(f"--hyperband_factor={config.hyperband_factor!r} must be >= 2")
    return config


def check_and_write_config(config: TuneConfig, write: bool = True) -> None:
    """Refuses to continue a search in TUNER_DIR that was started with other settings; then records these.

    keras-tuner would silently reload the old search space and oracle, so a changed --space or --tuner
    would not take effect. Workers only check (`write=False`); the chief or a standalone search writes.
    """
    path = epath.Path(config.tuner_dir) / TUNE_CONFIG_FILE
    # The path of --channel_stats may differ between machines, but the normalisation it gives may not:
    # the values are recorded and compared, so trials never mix input normalisations.
    from trainer.training.recipe import load_channel_stats  # TensorFlow: only once a search starts

    channel_stats = config.trial.channel_stats
    stats = load_channel_stats(channel_stats) if channel_stats else None
    settings = config.record()
    record = {**settings, "channel_stats_values": stats and [list(stats[0]), list(stats[1])]}
    if path.exists():
        old = json.loads(path.read_text())
        differ = [
            f"{name}: {old.get(name, _RECORDED_BEFORE.get(name))!r} -> {value!r}"
            for name, value in settings.items()
            if name not in _RESTART_FREE_FIELDS
            and (name in old or name in _RECORDED_BEFORE)
            and old.get(name, _RECORDED_BEFORE.get(name)) != value
        ]
        if old.get("channel_stats_values") != record["channel_stats_values"]:
            differ.append(
                f"channel statistics (--channel_stats): {old.get('channel_stats_values')} -> "
                f"{record['channel_stats_values']}"
            )
        if differ:
            raise UsageError(
                f"{path} belongs to a search with other settings ({'; '.join(differ)}); restart with the same "
                "flags to continue it (--max_trials may grow), or choose a new --tuner_dir"
            )
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: workers starting at the same time must never read half a file.
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
