"""Hyperparameter search for the CNN family: runs (or continues) the search that a `TuneConfig` describes.

    from trainer.tuning import search, tune_config
    config = tune_config.validate(tune_config.TuneConfig.of(TUNER_DIR, DATA_DIR, space="seed", max_trials=5))
    search.run_search(config)          # `python -m trainer.tuning.tune` is the command-line form

The parts: `trainer.tuning.tune_config` (the settings and the restart check), `trainer.tuning.hypermodel` (the search
spaces and the HyperModel), `trainer.tuning.tuners` (keras-tuner's tuners with per-trial tracking),
`trainer.tuning.memory` (what a trial leaves in memory) and `trainer.tuning.tune_reports` (the reports).

The search state lives in TUNER_DIR/keras_tuner/ (keras-tuner's files: oracle.json, trial_*/trial.json,
checkpoints); a search restarted with the same command reloads it and runs only the trials still
missing. Next to it: tune_config.json (the search settings; a restart must match them),
trials.json, trials.md and best_hyperparameters.json (the flat file `python -m trainer --hparams` reads).
Each trial also leaves trial_*/run_info.json: which tuner process ran it, its seconds, epochs and
the process RSS after the trial's model was released, so memory growth across trials is visible
(flat since each trial's graphs are released: `trainer.tuning.memory.forget_custom_gradients`). A `Budget`
(--max_minutes, --max_cpu_minutes) stops the running trial at a batch end and starts no further trial.
"""

from __future__ import annotations

from typing import Any

from absl import logging
from etils import epath

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import data, determinism
from trainer.training import recipe
from trainer.training.budget import Budget
from trainer.tuning import hypermodel, tune_config, tune_reports, tuners

ROLES = ("standalone", "chief", "worker")


def run_search(config: tune_config.TuneConfig, role: str = "standalone") -> list[dict[str, Any]] | None:
    """Runs (or continues) the search of `config`; returns the trial records (None on a worker).

    role: standalone (one process), chief (serves the oracle to workers and writes the reports; runs no
    trial) or worker (asks the chief for trials). keras-tuner itself reads the role from
    KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT; `role` must agree with them.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is unknown; choose one of {', '.join(ROLES)}")
    tune_config.check_and_write_config(config, write=role != "worker")
    trial_config = config.trial
    recipe.set_precision(trial_config)
    determinism.seed_everything(trial_config.seed)

    train_files = val_files = num_train = None
    if role != "chief":  # the chief serves the oracle and trains nothing, so it needs no data
        builder = data.load_builder(trial_config.data_dir, trial_config.dataset)
        train_files, val_files = data.split_files(builder, "train"), data.split_files(builder, "validation")
        num_train, num_val = data.num_examples(builder, "train"), data.num_examples(builder, "validation")

    def datasets(epoch):
        c = trial_config
        train_ds = data.train_dataset(
            train_files,
            c.batch_size,
            c.seed,
            c.augment,
            c.shuffle_buffer,
            c.sample_fraction,
            repeat=c.steps_per_epoch is not None,
            num_examples=num_train,
            epoch=epoch,  # the trial's determinism.EpochClock: each epoch's data come from (seed, epoch)
            steps_per_epoch=c.steps_per_epoch,
        )
        return train_ds, data.eval_dataset(val_files, c.batch_size, c.sample_fraction, num_examples=num_val)

    per_epoch = recipe.steps_per_epoch(trial_config, num_train) if num_train is not None else None
    model = hypermodel.CNNHyperModel(PATCH_SHAPE, config.space, trial_config, per_epoch)
    # A standalone search rewrites the reports after every trial, so they are current if it is stopped.
    after_trial = (lambda tuner: tune_reports.write_reports(tuner, config)) if role == "standalone" else None
    # The chief runs no trial, so a budget would never be checked there; it ends when the workers do.
    budget = Budget.from_minutes(trial_config.max_minutes, trial_config.max_cpu_minutes) if role != "chief" else None
    tuner = tuners.make_tuner(config, model, datasets, after_trial, budget)
    try:
        # keras-tuner gives each trial its own TensorBoard folder and logs its hyperparameters (the hparams
        # dashboard) when a TensorBoard callback is passed.
        tuner.search(
            epochs=trial_config.epochs,
            steps_per_epoch=trial_config.steps_per_epoch,
            shuffle=False,  # tf.data shuffles
            verbose=trial_config.verbose if trial_config.verbose == "auto" else int(trial_config.verbose),
            callbacks=recipe.tensorboard_callbacks(epath.Path(config.tuner_dir) / "tensorboard"),
        )
    except tuners.BudgetSpent as e:
        logging.warning("time budget spent, no further trials (%s); the same command continues the search", e)
    if role == "worker":
        logging.info("worker %s: the chief has no trials left", tuner.tuner_id)
        return None
    records = tune_reports.write_reports(tuner, config)
    completed = sum(r["status"] == "COMPLETED" for r in records)
    print(f"{len(records)} trials ({completed} completed); results in {config.tuner_dir}", flush=True)
    return records
