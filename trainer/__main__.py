"""Train one model on a built `pcam` TFDS dataset and evaluate it on the validation split.

    python -m trainer --model=baseline --data_dir=TFDS_DIR --model_dir=runs/baseline
    python -m trainer --model=resnet50 --weights=imagenet --head_epochs=2 --epochs=8 \\
        --data_dir=TFDS_DIR --model_dir=runs/resnet50
    python -m trainer --flagfile=runs/quick.flags          # one flag per line
    python -m trainer --model=baseline ... --epochs=1 --steps_per_epoch=20   # smoke run

Restarting an interrupted run with the same command continues where it stopped. Each flag is a field of
`trainer.config.train_config.TrainConfig`, made from the field by `trainer.config.cli` (its help, choices
and default live with the field); the flags become one validated, frozen TrainConfig that is written to
RUN_DIR/config.json before training.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from trainer import errors
from trainer.config import cli, restart, train_config

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues) -> None:
    """A flag per TrainConfig field, made from the field (its help, choices and flag default)."""
    cli.define(flag_values, train_config.TrainConfig)


def config_from_flags(flag_values, gpu: bool) -> train_config.TrainConfig:
    """Turns parsed flags into a validated TrainConfig (the only place flags are read): the flags given on the
    command line (or in a --flagfile) go to `train_config.resolved`, which fills in the rest as the flags'
    defaults would (they are made from the same fields), so a library caller of `resolved` gets what this
    command does."""
    return train_config.resolved(gpu, **cli.given(flag_values, train_config.TrainConfig))


def _main(argv):
    errors.no_arguments(argv)
    import tensorflow as tf  # after flag parsing, so --help stays fast

    from trainer import data, run_folder
    from trainer.training import distribute, loop

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
            restart.write_config(config)
            logging.info("config written to %s/%s", config.model_dir, run_folder.CONFIG_FILE)
        loop.run(config)
    finally:
        if lock is not None:
            lock.release()


def main() -> None:
    """The console script `pcam-train` (and `python -m trainer`)."""
    define_flags(FLAGS)
    for field in cli.flag_fields(train_config.TrainConfig):
        flags.declare_key_flag(cli.flag_name(field))  # listed by --help, not only --helpfull
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
