"""The keras-tuner tuners of a search, with per-trial data, seeds, memory release and a record of each trial.

    tuner = make_tuner(config, CNNHyperModel(space=config.space), datasets, budget=budget)
    tuner.search(epochs=config.trial.epochs, ...)

`RandomSearch`, `Hyperband` and `BayesianOptimization` are keras-tuner's, with the mixin `_TrackedTuner`:
each trial gets freshly built datasets and the same seed, and leaves TUNER_DIR/keras_tuner/trial_*/run_info.json
(which tuner process ran it, its seconds, epochs and best epoch, the recipe its compiled model ran with, and
the process RSS after its model was released: `trainer.tuning.memory`). A `Budget` (--max_minutes, --max_cpu_minutes) stops the running trial at a
batch end and starts no further trial (`BudgetSpent`).
"""

from __future__ import annotations

import gc
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner
from etils import epath

from pcam_tfds.core.progress import print_line
from trainer import determinism
from trainer.training import recipe
from trainer.training.budget import Budget, BudgetStop
from trainer.tuning import memory, tune_config

PROJECT = "keras_tuner"  # keras-tuner's project folder inside TUNER_DIR
RUN_INFO = "run_info.json"
# The metric is compiled as AUC(name="auc") (recipe.compile_model); Keras prefixes validation metrics with val_.
OBJECTIVE = keras_tuner.Objective(recipe.MONITOR, direction="max")


def _best_epoch(history: keras.callbacks.History) -> int:
    """The 1-based epoch with the highest val_auc (History.epoch holds absolute 0-based epochs)."""
    scores = history.history[recipe.MONITOR]
    return history.epoch[max(range(len(scores)), key=lambda i: scores[i])] + 1


class _TrackedTuner:
    """Mixin for the keras-tuner tuners: per-trial data and seed, memory release and a run_info.json per trial.

    Every trial gets freshly built datasets and the same seed, so trials differ only in their
    hyperparameters (and a restarted search repeats the trials an uninterrupted one would run).
    """

    def __init__(
        self,
        *args,
        datasets: Callable[[Any], tuple[Any, Any]],
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
        self._gradients_before = memory.custom_gradient_names()
        super().on_trial_begin(trial)

    def pre_create_trial(self):
        # keras-tuner's search loop calls this before asking the oracle for the next trial.
        super().pre_create_trial()
        if self.budget and self.budget.spent():
            raise BudgetSpent(self.budget.describe())

    def run_trial(self, trial, *args, **kwargs):
        determinism.seed_everything(self._seed)
        # The clock goes first: it sets the epoch the input pipeline reads, and reseeds dropout, per epoch.
        clock = determinism.EpochClock(self._seed)
        kwargs["callbacks"] = [clock, *kwargs.get("callbacks", [])]
        if self.budget:  # keras-tuner deep-copies callbacks per execution; the copies keep the start times
            kwargs["callbacks"] = [*kwargs["callbacks"], BudgetStop(self.budget)]
        train_ds, val_ds = self._datasets(clock.epoch)
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
            best = [_best_epoch(h) for h in runs if recipe.MONITOR in h.history]
            if best:
                info["best_epoch"] = round(sum(best) / len(best))
        # The precision, XLA, steps per execution, schedule, weight average and smoothing its model ran with.
        compiled = getattr(self.hypermodel, "last_recipe", None)
        if compiled:
            info["recipe"] = compiled
        self._run_info[trial.trial_id] = info
        return histories

    def on_trial_end(self, trial):
        # Release this trial's models and graphs before the next one builds (keras-tuner only clears
        # when the next model is built, after the oracle call, so RSS measured here shows what stays).
        keras.backend.clear_session()
        memory.forget_custom_gradients(self._gradients_before)
        gc.collect()
        rss, peak = memory.rss_mib()
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
        score = "" if trial.score is None else f", score {trial.score:.4f}"
        print_line(f"trial {trial.trial_id}: {trial.status}{score}, RSS {rss:.0f} MiB (peak {peak:.0f} MiB)")
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
    config: tune_config.TuneConfig,
    hypermodel: keras_tuner.HyperModel,
    datasets: Callable[[Any], tuple[Any, Any]],
    after_trial: Callable[[keras_tuner.Tuner], None] | None = None,
    budget: Budget | None = None,
) -> keras_tuner.Tuner:
    """The tuner of --tuner on TUNER_DIR/keras_tuner, reloading the search found there (never overwriting)."""
    common = {
        "hypermodel": hypermodel,
        "objective": OBJECTIVE,
        "seed": config.trial.seed,
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
        return Hyperband(max_epochs=config.trial.epochs, factor=config.hyperband_factor, **common)
    raise ValueError(f"--tuner={config.tuner!r} is unknown; choose one of {', '.join(tune_config.TUNERS)}")
