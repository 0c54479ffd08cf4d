"""Search hyperparameters of the `tuned` CNN (or of `p4m`) with keras-tuner; the best go to `pcam-train --hparams`.

    pcam-tune --model=tuned --data_dir=TFDS_DIR --tuner_dir=runs/tune_seed \\
        --tuner=random --space=seed --max_trials=5 --executions_per_trial=5 --epochs=5   # the seed notebook
    pcam-tune --data_dir=TFDS_DIR --tuner_dir=runs/tune_hb --tuner=hyperband --space=wide --epochs=27
    pcam-tune --data_dir=TFDS_DIR --tuner_dir=runs/tune_bo --tuner=bayesian --max_trials=30
    pcam-tune ... --max_trials=2 --epochs=1 --steps_per_epoch=20 --sample_fraction=0.05  # smoke run
    pcam-tune --model=p4m --space=wide ...   # the P4M CNN: widths in feature planes (8 per group channel)
    pcam-train --model=tuned --hparams=runs/tune_seed/best_hyperparameters.json --data_dir=TFDS_DIR \\
        --model_dir=runs/tuned
    python -m trainer.tuning.tune ...         # the same as pcam-tune

The objective is the validation ROC AUC (`val_auc`, maximised). TUNER_DIR gets trials.json,
trials.md and best_hyperparameters.json; restarting an interrupted search with the same command runs
only the missing trials (a larger --max_trials adds trials).

Distributed (one chief serving the oracle, any number of workers running trials; TUNER_DIR must be one
folder all of them see, e.g. NFS or gs://):

    KERASTUNER_TUNER_ID=chief    KERASTUNER_ORACLE_IP=0.0.0.0  KERASTUNER_ORACLE_PORT=8000 pcam-tune ...
    KERASTUNER_TUNER_ID=tuner0   KERASTUNER_ORACLE_IP=CHIEF_IP KERASTUNER_ORACLE_PORT=8000 pcam-tune ...
    KERASTUNER_TUNER_ID=tuner1   KERASTUNER_ORACLE_IP=CHIEF_IP KERASTUNER_ORACLE_PORT=8000 pcam-tune ...

with the same flags everywhere (--data_dir may differ per machine). The search's own flags are defined here;
those shared with pcam-train are made from their TrainConfig fields by trainer.config.cli.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from trainer import errors
from trainer.config import cli as shared_flags
from trainer.config import defaults
from trainer.tuning import tune_config

FLAGS = flags.FLAGS

shared_flags.define(FLAGS)
flags.DEFINE_enum(
    "model",
    "tuned",
    tune_config.MODELS,
    "The model family searched: tuned (the CNN of --model=tuned) or p4m (its widths count feature planes, 8 per "
    "group channel, so the same space costs about the same FLOPs); pcam-train --model=NAME --hparams=best reads it.",
)
flags.DEFINE_string(
    "tuner_dir", None, "Search folder: keras-tuner state, trials.json, trials.md, best_hyperparameters.json."
)

for _field in tune_config.search_fields():  # the search's own settings, each flag made from its TuneConfig field
    shared_flags.define_field(FLAGS, _field)
flags.DEFINE_integer("epochs", 5, "Epochs per trial; for Hyperband the most epochs any model trains (max_epochs).")
flags.DEFINE_float(
    "max_minutes",
    None,
    "Time budget of this process in wall-clock minutes: the running trial stops "
    "at the next batch end (its epoch is still validated) and no trial starts after it.",
)
flags.DEFINE_float(
    "max_cpu_minutes",
    None,
    "Time budget in CPU minutes of this process (all threads), as --max_minutes; fair when searches share a machine.",
)
flags.DEFINE_string(
    "channel_stats",
    None,
    "stats.json of beam_jobs.stats: normalise inputs per channel (pass it to python -m trainer too).",
)
flags.DEFINE_enum(
    "schedule",
    "auto",
    ("auto", "cosine", "constant"),
    "Learning-rate schedule of every trial. auto: as pcam-train trains by default (with a time budget), so that "
    "the search measures the training its result gets: cosine (the budget schedule's warm-up and decay, over the "
    "trial's epochs) with the budget recipe's weight average (--ema "
    f"{defaults.BUDGET_RECIPE['ema']:g}) and label smoothing ({defaults.BUDGET_RECIPE['label_smoothing']:g}) "
    "unless those flags are given; cosine or constant: what pcam-train resolves for them (no average, no smoothing).",
)


def role_from_env(environ=os.environ) -> str:
    """standalone, chief or worker, from the variables keras-tuner reads (KERASTUNER_*)."""
    if "KERASTUNER_ORACLE_IP" not in environ:
        return "standalone"
    missing = [k for k in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID") if not environ.get(k)]
    if missing:
        raise errors.UsageError(
            f"KERASTUNER_ORACLE_IP is set but {' and '.join(missing)} is not; set all three "
            "(KERASTUNER_TUNER_ID=chief on the chief, a unique id such as tuner0 on each worker)"
        )
    return "chief" if "chief" in environ["KERASTUNER_TUNER_ID"] else "worker"


def config_from_flags(flag_values, gpu: bool):
    """Turns parsed flags into a validated TuneConfig (the only place flags are read)."""
    f = flag_values
    schedule, ema, label_smoothing = f.schedule, f.ema, f.label_smoothing
    if schedule == "auto":  # pcam-train's default recipe, for a trial's fixed epochs (tune_config.TRIAL_RECIPE)
        schedule = tune_config.TRIAL_RECIPE["schedule"]
        ema = tune_config.TRIAL_RECIPE["ema"] if ema is None else ema
        label_smoothing = tune_config.TRIAL_RECIPE["label_smoothing"] if label_smoothing is None else label_smoothing
    # The same resolution as pcam-train's, from the flags both commands have; the rate and dropout are the trial's.
    recipe = defaults.resolve_recipe(
        f.model,
        gpu,
        schedule=schedule,
        epochs=f.epochs,
        max_minutes=f.max_minutes,
        max_cpu_minutes=f.max_cpu_minutes,
        ema=ema,
        label_smoothing=label_smoothing,
        mixed_precision=f.mixed_precision,
        jit_compile=f.jit_compile,
        steps_per_execution=f.steps_per_execution,
    )
    trial = {**shared_flags.fields(f), **{k: recipe[k] for k in tune_config.RECIPE_FIELDS}}
    for name in ("model", "epochs", "max_minutes", "max_cpu_minutes", "channel_stats"):  # this command's own flags
        trial[name] = f[name].value
    search = {name: f[name].value for name in tune_config.SEARCH_FIELDS}  # the search's own settings
    return tune_config.validate(tune_config.TuneConfig.of(f.tuner_dir, **trial, **search))


def _main(argv):
    errors.no_arguments(argv)
    import tensorflow as tf  # after flag parsing, so --help stays fast

    from trainer import run_folder
    from trainer.tuning import search, tune_reports

    gpu = bool(tf.config.list_physical_devices("GPU"))
    lock = None
    try:
        role = role_from_env()
        config = config_from_flags(FLAGS, gpu)
        if role == "standalone":  # a chief shares the folder with its workers by design
            lock = run_folder.RunLock(config.tuner_dir, " ".join(sys.argv)).acquire()
        records = search.run_search(config, role)
    finally:
        if lock is not None:
            lock.release()
    if records is not None:
        print(f"best hyperparameters: {config.tuner_dir}/{tune_reports.BEST_HPARAMS}", flush=True)


def main() -> None:
    """The console script `pcam-tune` (and `python -m trainer.tuning.tune`)."""
    flags.mark_flags_as_required(["data_dir", "tuner_dir"])
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
