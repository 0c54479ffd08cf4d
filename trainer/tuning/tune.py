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

with the same flags everywhere (--data_dir may differ per machine). The flags are the fields of
`tune_config.TuneOptions`; those shared with pcam-train are declared once, in trainer.config.options.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from trainer import errors
from trainer.config import cli
from trainer.tuning import tune_config

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues) -> None:
    """A flag per TuneOptions field."""
    cli.define(flag_values, tune_config.TuneOptions)


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


def config_from_flags(flag_values, gpu: bool) -> tune_config.TuneConfig:
    """Turns parsed flags into a validated TuneConfig (the only place flags are read)."""
    return tune_config.resolve(cli.make(flag_values, tune_config.TuneOptions), gpu)


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
    define_flags(FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
