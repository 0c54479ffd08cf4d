"""The settings of one hyperparameter search, their validation, and the check that a restart keeps them.

    from trainer import tune_config
    config = tune_config.validate(tune_config.TuneConfig(data_dir=..., tuner_dir=..., space="seed", max_trials=5))

`python -m trainer.tune` turns its flags into a `TuneConfig`. The settings every trial trains with (data,
epochs, batch size, input, budget, devices) are validated by `trainer.config.validate`, as a
`TrainConfig` (`TuneConfig.trial_config`), so a search accepts exactly what `python -m trainer` does;
only the search's own settings are checked here. TUNER_DIR/tune_config.json records the settings
(with the channel statistics' values); a search restarted with other settings is refused.
"""

from __future__ import annotations

import dataclasses
import json

from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text
from trainer import config as config_lib
from trainer.errors import UsageError

TUNE_CONFIG_FILE = "tune_config.json"
TUNERS = ("random", "hyperband", "bayesian")  # trainer.tuners.make_tuner
SPACES = ("seed", "wide")  # trainer.hypermodel's search spaces
MODELS = ("tuned",)  # the model family searched: the CNN of --model=tuned
# The fields of config.resolve_recipe that a search holds; the trial's rate and dropout come from its hyperparameters.
RECIPE_FIELDS = ("schedule", "ema", "label_smoothing", "mixed_precision", "jit_compile", "steps_per_execution")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """One search; `python -m trainer.tune --helpfull` documents each field."""

    data_dir: str
    tuner_dir: str
    model: str = "tuned"
    dataset: str = "pcam/full"
    tuner: str = "random"
    space: str = "wide"
    max_trials: int = 10
    executions_per_trial: int = 1
    epochs: int = 5
    max_minutes: float | None = None
    max_cpu_minutes: float | None = None
    hyperband_factor: int = 3
    batch_size: int = 64
    seed: int = 42
    augment: str = "dihedral"
    sample_fraction: float = 1.0
    steps_per_epoch: int | None = None
    shuffle_buffer: int = 8192
    channel_stats: str | None = None
    # The recipe and hardware of every trial, resolved by config.resolve_recipe as for pcam-train.
    schedule: str = "constant"  # constant or cosine over the trial's epochs
    ema: float = 0.0
    label_smoothing: float = 0.0
    mixed_precision: str = "off"  # off, float16 or bfloat16
    jit_compile: bool = False
    steps_per_execution: int = 1
    verbose: str = "auto"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def trial_config(self) -> config_lib.TrainConfig:
        """What every trial trains with, as the `TrainConfig` of `python -m trainer --model=tuned` with these flags.

        The trial's own hyperparameters (learning rate, widths, ...) come from the search space instead.
        """
        return config_lib.TrainConfig(
            model=self.model,
            data_dir=self.data_dir,
            model_dir=self.tuner_dir,
            dataset=self.dataset,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            augment=self.augment,
            sample_fraction=self.sample_fraction,
            steps_per_epoch=self.steps_per_epoch,
            shuffle_buffer=self.shuffle_buffer,
            channel_stats=self.channel_stats,
            schedule=self.schedule,
            ema=self.ema,
            label_smoothing=self.label_smoothing,
            # A trial keeps its best epoch's score: early stopping would only shorten it.
            early_stopping_patience=0,
            mixed_precision=self.mixed_precision,
            jit_compile=self.jit_compile,
            steps_per_execution=self.steps_per_execution,
            max_minutes=self.max_minutes,
            max_cpu_minutes=self.max_cpu_minutes,
            verbose=self.verbose,
        )


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
_RECORDED_BEFORE = {"schedule": "constant", "ema": 0.0, "label_smoothing": 0.0}


def validate(config: TuneConfig) -> TuneConfig:
    """Returns `config` unchanged, or raises ValueError naming the flag, its value and what is allowed."""
    config_lib.check_choice("model", config.model, MODELS)
    config_lib.check_choice("tuner", config.tuner, TUNERS)
    config_lib.check_choice("space", config.space, SPACES)
    if not config.tuner_dir:
        raise UsageError("--tuner_dir is required: the folder for the search state and its results")
    if config.schedule == "budget":
        raise UsageError(
            "--schedule=budget sizes a run to its time budget, but a trial trains --epochs; tune with "
            "--schedule=cosine (the budget schedule's warm-up and decay over the trial's epochs) or constant"
        )
    config_lib.validate(config.trial_config())
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
    from trainer.train import load_channel_stats  # TensorFlow: only once a search starts

    stats = load_channel_stats(config.channel_stats) if config.channel_stats else None
    record = {**json.loads(config.to_json()), "channel_stats_values": stats and [list(stats[0]), list(stats[1])]}
    if path.exists():
        old = json.loads(path.read_text())
        differ = [
            f"{f.name}: {old.get(f.name)!r} -> {getattr(config, f.name)!r}"
            for f in dataclasses.fields(TuneConfig)
            if f.name not in _RESTART_FREE_FIELDS
            and old.get(f.name, _RECORDED_BEFORE.get(f.name)) != getattr(config, f.name)
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
