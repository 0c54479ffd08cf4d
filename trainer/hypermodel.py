"""Hyperparameter search for the CNN family: the HyperModel, its search spaces, the tuners and their reports.

    from trainer import hypermodel
    config = hypermodel.validate(hypermodel.TuneConfig(data_dir=..., tuner_dir=..., space="seed", max_trials=5))
    hypermodel.run_search(config)          # `python -m trainer.tune` is the command-line form

`CNNHyperModel.build(hp)` samples named hyperparameters (the keys of `trainer.config.HPARAM_KEYS`) and
calls the same `models.build("tuned", ...)` -> `cnn()` path that `python -m trainer --model=tuned` uses,
with the hyperparameter -> field mapping of `config.hparams_to_fields`, so a tuning result trains the
same network. Names outside the chosen space are `hp.Fixed` at the trainer's defaults, so every trial
records the full set and `hp.Fixed` set in advance overrides any of them.

The search state lives in TUNER_DIR/keras_tuner/ (keras-tuner's files: oracle.json, trial_*/trial.json,
checkpoints); a search restarted with the same command reloads it and runs only the trials still
missing. Next to it: tune_config.json (the search settings; a restart must match them),
trials.json, trials.md and best_hyperparameters.json (the flat file `python -m trainer --hparams` reads).
Each trial also leaves trial_*/run_info.json: which tuner process ran it, its seconds, epochs and
the process RSS after the trial's model was released, so memory growth across trials is visible
(flat since each trial's graphs are released: `forget_custom_gradients`). A `Budget` (--max_minutes,
--max_cpu_minutes) stops the running trial at a batch end and starts no further trial.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import resource
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner
from absl import logging
from etils import epath

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import config as config_lib
from trainer import data, models, run_folder, train
from trainer.budget import Budget, BudgetStop

PROJECT = "keras_tuner"  # keras-tuner's project folder inside TUNER_DIR
TUNE_CONFIG_FILE = "tune_config.json"
TRIALS_JSON = "trials.json"
TRIALS_MD = "trials.md"
BEST_HPARAMS = "best_hyperparameters.json"
RUN_INFO = "run_info.json"
# The metric is compiled as AUC(name="auc") (train.compile_model); Keras prefixes validation metrics with val_.
OBJECTIVE = keras_tuner.Objective(train.MONITOR, direction="max")

TUNERS = ("random", "hyperband", "bayesian")
SPACES = ("seed", "wide")
ROLES = ("standalone", "chief", "worker")

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
    mixed_precision: bool = False
    jit_compile: bool = False
    verbose: str = "auto"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"


# May differ on a restart, or between the chief and workers of one search (paths and devices are per machine).
_RESTART_FREE_FIELDS = (
    "data_dir",
    "tuner_dir",
    "channel_stats",
    "max_trials",
    "mixed_precision",
    "jit_compile",
    "verbose",
    "max_minutes",
    "max_cpu_minutes",
)


def validate(config: TuneConfig) -> TuneConfig:
    """Returns `config` unchanged, or raises ValueError naming the flag, its value and what is allowed."""
    for flag, value, allowed in (
        ("model", config.model, ("tuned",)),
        ("tuner", config.tuner, TUNERS),
        ("space", config.space, SPACES),
        ("augment", config.augment, config_lib.AUGMENTATIONS),
        ("verbose", config.verbose, ("auto", "0", "1", "2")),
    ):
        if value not in allowed:
            raise ValueError(f"--{flag}={value!r} is not allowed; choose one of {', '.join(allowed)}")
    if not config.data_dir:
        raise ValueError("--data_dir is required: the TFDS data dir holding the built pcam dataset")
    if not config.tuner_dir:
        raise ValueError("--tuner_dir is required: the folder for the search state and its results")
    for flag in ("max_trials", "executions_per_trial", "epochs", "batch_size", "shuffle_buffer"):
        if getattr(config, flag) < 1:
            raise ValueError(f"--{flag}={getattr(config, flag)!r} must be >= 1")
    for flag in ("max_minutes", "max_cpu_minutes"):
        if getattr(config, flag) is not None and getattr(config, flag) <= 0:
            raise ValueError(f"--{flag}={getattr(config, flag)!r} must be > 0")
    if config.hyperband_factor < 2:
        raise ValueError(f"--hyperband_factor={config.hyperband_factor!r} must be >= 2")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise ValueError(f"--steps_per_epoch={config.steps_per_epoch!r} must be >= 1")
    if not 0.0 < config.sample_fraction <= 1.0:
        raise ValueError(f"--sample_fraction={config.sample_fraction!r} must be in (0, 1]")
    if config.channel_stats and not epath.Path(config.channel_stats).exists():
        raise ValueError(
            f"--channel_stats={config.channel_stats!r}: no such file; make one with python -m beam_jobs.stats"
        )
    return config


def check_and_write_config(config: TuneConfig, write: bool = True) -> None:
    """Refuses to continue a search in TUNER_DIR that was started with other settings; then records these.

    keras-tuner would silently reload the old search space and oracle, so a changed --space or --tuner
    would not take effect. Workers only check (`write=False`); the chief or a standalone search writes.
    """
    path = epath.Path(config.tuner_dir) / TUNE_CONFIG_FILE
    # The path of --channel_stats may differ between machines, but the normalisation it gives may not:
    # the values are recorded and compared, so trials never mix input normalisations.
    stats = train.load_channel_stats(config.channel_stats) if config.channel_stats else None
    record = {**json.loads(config.to_json()), "channel_stats_values": stats and [list(stats[0]), list(stats[1])]}
    if path.exists():
        old = json.loads(path.read_text())
        differ = [
            f"{f.name}: {old.get(f.name)!r} -> {getattr(config, f.name)!r}"
            for f in dataclasses.fields(TuneConfig)
            if f.name not in _RESTART_FREE_FIELDS and old.get(f.name) != getattr(config, f.name)
        ]
        if old.get("channel_stats_values") != record["channel_stats_values"]:
            differ.append(
                f"channel statistics (--channel_stats): {old.get('channel_stats_values')} -> "
                f"{record['channel_stats_values']}"
            )
        if differ:
            raise ValueError(
                f"{path} belongs to a search with other settings ({'; '.join(differ)}); restart with the same "
                "flags to continue it (--max_trials may grow), or choose a new --tuner_dir"
            )
    if write:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: workers starting at the same time must never read half a file.
        run_folder.atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB; current falls back to peak off Linux."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak_kib / 2**20 if sys.platform == "darwin" else peak_kib / 2**10  # macOS reports bytes
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        current = peak
    # The kernel updates ru_maxrss lazily (at page-fault accounting), so it can trail statm by a few pages.
    return round(current, 1), round(max(peak, current), 1)


def _custom_gradient_names() -> set[str]:
    """Names in TensorFlow's gradient registry that tf.custom_gradient registered (empty if the registry moved)."""
    from tensorflow.python.framework import ops  # private: there is no public way to unregister

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return {k for k in registry if k.startswith("CustomGradient-")} if isinstance(registry, dict) else set()


def forget_custom_gradients(keep: set[str]) -> int:
    """Drops the tf.custom_gradient registrations made since `keep` was taken; returns how many.

    Every trace of a Keras train step registers one (the optimizer's all-reduce of the gradients goes
    through tf.custom_gradient), and TensorFlow's global gradient registry keeps it, and through its
    closure the whole traced graph, forever: about 25 MiB a trial here. Once a trial's model is
    released nothing can ask for those gradients again.
    """
    from tensorflow.python.framework import ops

    stale = _custom_gradient_names() - keep
    for name in stale:
        ops._gradient_registry._registry.pop(name, None)
    return len(stale)


def _best_epoch(history: keras.callbacks.History) -> int:
    """The 1-based epoch with the highest val_auc (History.epoch holds absolute 0-based epochs)."""
    scores = history.history[train.MONITOR]
    return history.epoch[max(range(len(scores)), key=lambda i: scores[i])] + 1


class _TrackedTuner:
    """Mixin for the keras-tuner tuners: per-trial data and seed, memory release and a run_info.json per trial.

    Every trial gets freshly built datasets and the same seed, so trials differ only in their
    hyperparameters (and a restarted search repeats the trials an uninterrupted one would run).
    """

    def __init__(
        self,
        *args,
        datasets: Callable[[], tuple[Any, Any]],
        seed: int,
        after_trial: Callable[[keras_tuner.Tuner], None] | None = None,
        budget: Budget | None = None,
        **kwargs,
    ):
        self._datasets = datasets
        self._seed = seed
        self._after_trial = after_trial
        self.budget = budget
        self._run_info: dict[str, dict] = {}
        self._gradients_before: set[str] = set()
        super().__init__(*args, **kwargs)

    def on_trial_begin(self, trial):
        self._gradients_before = _custom_gradient_names()
        super().on_trial_begin(trial)

    def pre_create_trial(self):
        # keras-tuner's search loop calls this before asking the oracle for the next trial.
        super().pre_create_trial()
        if self.budget and self.budget.spent():
            raise BudgetSpent(self.budget.describe())

    def run_trial(self, trial, *args, **kwargs):
        keras.utils.set_random_seed(self._seed)
        if self.budget:  # keras-tuner deep-copies callbacks per execution; the copies keep the start times
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), BudgetStop(self.budget)]
        train_ds, val_ds = self._datasets()
        start = time.perf_counter()
        histories = super().run_trial(trial, train_ds, *args, validation_data=val_ds, **kwargs)
        info = {"seconds": round(time.perf_counter() - start, 1)}
        runs = [
            h
            for h in (histories if isinstance(histories, list) else [histories])
            if isinstance(h, keras.callbacks.History) and h.epoch
        ]
        if runs:
            info["epochs"] = max(h.epoch[-1] + 1 for h in runs)  # Hyperband: counting epochs of earlier rounds
            best = [_best_epoch(h) for h in runs if train.MONITOR in h.history]
            if best:
                info["best_epoch"] = round(sum(best) / len(best))
        self._run_info[trial.trial_id] = info
        return histories

    def on_trial_end(self, trial):
        # Release this trial's models and graphs before the next one builds (keras-tuner only clears
        # when the next model is built, after the oracle call, so RSS measured here shows what stays).
        keras.backend.clear_session()
        forget_custom_gradients(self._gradients_before)
        gc.collect()
        rss, peak = rss_mib()
        info = {
            **self._run_info.pop(trial.trial_id, {}),
            "tuner_id": self.tuner_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "status": trial.status,
            "rss_mib": rss,
            "peak_rss_mib": peak,
        }
        # Written before the oracle hears of the end, so a chief that finishes on it finds the file.
        (epath.Path(self.get_trial_dir(trial.trial_id)) / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
        logging.info("trial %s: %s, RSS %.0f MiB (peak %.0f MiB)", trial.trial_id, trial.status, rss, peak)
        super().on_trial_end(trial)
        if self._after_trial:
            self._after_trial(self)


class BudgetSpent(Exception):
    """Raised between trials when the search's time budget (--max_minutes, --max_cpu_minutes) is spent."""


class RandomSearch(_TrackedTuner, keras_tuner.RandomSearch):
    """keras_tuner.RandomSearch with the trial tracking of `_TrackedTuner`."""


class Hyperband(_TrackedTuner, keras_tuner.Hyperband):
    """keras_tuner.Hyperband with the trial tracking of `_TrackedTuner`."""


class BayesianOptimization(_TrackedTuner, keras_tuner.BayesianOptimization):
    """keras_tuner.BayesianOptimization with the trial tracking of `_TrackedTuner`."""


def make_tuner(
    config: TuneConfig,
    hypermodel: keras_tuner.HyperModel,
    datasets: Callable[[], tuple[Any, Any]],
    after_trial: Callable[[keras_tuner.Tuner], None] | None = None,
    budget: Budget | None = None,
) -> keras_tuner.Tuner:
    """The tuner of --tuner on TUNER_DIR/keras_tuner, reloading the search found there (never overwriting)."""
    common = {
        "hypermodel": hypermodel,
        "objective": OBJECTIVE,
        "seed": config.seed,
        "executions_per_trial": config.executions_per_trial,
        "directory": config.tuner_dir,
        "project_name": PROJECT,
        "overwrite": False,
        "datasets": datasets,
        "after_trial": after_trial,
        "budget": budget,
    }
    if config.tuner == "random":
        return RandomSearch(max_trials=config.max_trials, **common)
    if config.tuner == "bayesian":
        return BayesianOptimization(max_trials=config.max_trials, **common)
    if config.tuner == "hyperband":
        return Hyperband(max_epochs=config.epochs, factor=config.hyperband_factor, **common)
    raise ValueError(f"--tuner={config.tuner!r} is unknown; choose one of {', '.join(TUNERS)}")


def _clean(value):
    # 12 significant digits drop binary noise (0.6000000000000001) and keep every value that was meant.
    return float(f"{value:.12g}") if isinstance(value, float) else value


def best_hparams(trial, batch_size: int) -> dict[str, Any]:
    """The flat {name: value} file `python -m trainer --model=tuned --hparams=...` reads."""
    values = {
        k: _clean(trial.hyperparameters.values[k]) for k in config_lib.HPARAM_KEYS if k in trial.hyperparameters.values
    }
    values["batch_size"] = batch_size  # the learning rate was found at this batch size
    return values


def trial_records(tuner: keras_tuner.Tuner) -> list[dict[str, Any]]:
    """Every trial the oracle knows, in id order, with its run_info.json when the trial has ended."""
    records = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        info_path = epath.Path(tuner.project_dir) / f"trial_{trial_id}" / RUN_INFO
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        metrics = {
            name: _clean(float(trial.metrics.get_last_value(name)))
            for name in trial.metrics.metrics
            if trial.metrics.get_last_value(name) is not None
        }
        records.append(
            {
                "trial_id": trial_id,
                "status": trial.status,
                "score": None if trial.score is None else _clean(float(trial.score)),
                "hyperparameters": {k: _clean(v) for k, v in trial.hyperparameters.values.items()},
                "metrics": metrics,
                **{k: v for k, v in info.items() if k != "status"},
                **({"message": trial.message.strip().splitlines()[-1]} if trial.message else {}),
            }
        )
    return records


def _markdown(records: list[dict], columns: list[str], best: dict | None) -> str:
    ranked = sorted(records, key=lambda r: (r["score"] is None, -(r["score"] or 0.0), r["trial_id"]))
    head = ["trial", *columns, OBJECTIVE.name, "best epoch", "epochs", "status", "seconds", "RSS MiB", "tuner"]
    lines = [f"# Trials, best {OBJECTIVE.name} first", ""]
    if best:
        lines += [
            f"Best: trial {best['trial_id']}, {OBJECTIVE.name} {best['score']:.4f} "
            f"(epoch {best.get('best_epoch', '?')} of {best.get('epochs', '?')}); `{BEST_HPARAMS}` holds its "
            "hyperparameters.",
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ranked:
        hps = [r["hyperparameters"].get(c, "") for c in columns]
        cells = [
            r["trial_id"],
            *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in hps),
            "" if r["score"] is None else f"{r['score']:.4f}",
            r.get("best_epoch", ""),
            r.get("epochs", ""),
            r["status"],
            r.get("seconds", ""),
            r.get("rss_mib", ""),
            r.get("tuner_id", ""),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def write_reports(tuner: keras_tuner.Tuner, config: TuneConfig) -> list[dict[str, Any]]:
    """trials.json, trials.md and (once a trial completed) best_hyperparameters.json in TUNER_DIR."""
    out = epath.Path(config.tuner_dir)
    records = trial_records(tuner)
    # Columns: the tuned names, then Hyperband's round bookkeeping (tuner/epochs ...) if any.
    tuned = [
        hp.name
        for hp in tuner.oracle.hyperparameters.space
        if not isinstance(hp, keras_tuner.engine.hyperparameters.Fixed)
    ]
    extra = sorted(
        {k for r in records for k in r["hyperparameters"] if k.startswith("tuner/") and k != "tuner/trial_id"}
    )
    best_trials = tuner.oracle.get_best_trials(1)
    best = next((r for r in records if best_trials and r["trial_id"] == best_trials[0].trial_id), None)
    summary = {
        "objective": {"name": OBJECTIVE.name, "direction": OBJECTIVE.direction},
        "tuner": config.tuner,
        "space": config.space,
        "best_trial_id": best and best["trial_id"],
        # Every setting that decides what a trial computes, the channel statistics' values included.
        "search": json.loads((out / TUNE_CONFIG_FILE).read_text()) if (out / TUNE_CONFIG_FILE).exists() else None,
        "trials": records,
    }
    run_folder.atomic_write_text(out / TRIALS_JSON, json.dumps(summary, indent=2) + "\n")
    run_folder.atomic_write_text(out / TRIALS_MD, _markdown(records, tuned + extra, best))
    if best_trials:
        run_folder.atomic_write_text(
            out / BEST_HPARAMS, json.dumps(best_hparams(best_trials[0], config.batch_size), indent=2) + "\n"
        )
    else:
        logging.warning("no trial has completed yet: no %s", out / BEST_HPARAMS)
    return records


def run_search(config: TuneConfig, role: str = "standalone") -> list[dict[str, Any]] | None:
    """Runs (or continues) the search of `config`; returns the trial records (None on a worker).

    role: standalone (one process), chief (serves the oracle to workers and writes the reports; runs no
    trial) or worker (asks the chief for trials). keras-tuner itself reads the role from
    KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT; `role` must agree with them.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is unknown; choose one of {', '.join(ROLES)}")
    check_and_write_config(config, write=role != "worker")
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision else "float32")
    keras.utils.set_random_seed(config.seed)

    train_files = val_files = num_train = None
    if role != "chief":  # the chief serves the oracle and trains nothing, so it needs no data
        builder = data.load_builder(config.data_dir, config.dataset)
        train_files, val_files = data.split_files(builder, "train"), data.split_files(builder, "validation")
        num_train = data.num_examples(builder, "train")

    def datasets():
        train_ds = data.train_dataset(
            train_files,
            config.batch_size,
            config.seed,
            config.augment,
            config.shuffle_buffer,
            config.sample_fraction,
            repeat=config.steps_per_epoch is not None,
            num_examples=num_train,
        )
        return train_ds, data.eval_dataset(val_files, config.batch_size, config.sample_fraction)

    stats = train.load_channel_stats(config.channel_stats) if config.channel_stats else None
    model = CNNHyperModel(PATCH_SHAPE, config.space, config.jit_compile, stats)
    # A standalone search rewrites the reports after every trial, so they are current if it is stopped.
    after_trial = (lambda tuner: write_reports(tuner, config)) if role == "standalone" else None
    # The chief runs no trial, so a budget would never be checked there; it ends when the workers do.
    budget = Budget.from_minutes(config.max_minutes, config.max_cpu_minutes) if role != "chief" else None
    tuner = make_tuner(config, model, datasets, after_trial, budget)
    try:
        # keras-tuner gives each trial its own TensorBoard folder and logs its hyperparameters (the hparams
        # dashboard) when a TensorBoard callback is passed.
        tuner.search(
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            shuffle=False,  # tf.data shuffles
            verbose=config.verbose if config.verbose == "auto" else int(config.verbose),
            callbacks=train.tensorboard_callbacks(epath.Path(config.tuner_dir) / "tensorboard"),
        )
    except BudgetSpent as e:
        logging.warning("time budget spent, no further trials (%s); the same command continues the search", e)
    if role == "worker":
        logging.info("worker %s: the chief has no trials left", tuner.tuner_id)
        return None
    records = write_reports(tuner, config)
    logging.info(
        "%d trials (%d completed); results in %s",
        len(records),
        sum(r["status"] == "COMPLETED" for r in records),
        config.tuner_dir,
    )
    return records
