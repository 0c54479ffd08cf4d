"""RUN_DIR/config.json: written before anything trains, and the check that a restart continues the same run.

restart.write_config(config)      # a restarted run with other values (but RESTART_FREE_FIELDS) is refused
"""

from __future__ import annotations

import dataclasses

from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text
from trainer import run_folder
from trainer.config.train_config import TrainConfig
from trainer.errors import UsageError

# Fields that may differ between an interrupted run and its restart.
# A budget schedule's length is fixed once, in the run's state, so a restart may bring another budget. The
# data may move: the run's identity is the dataset itself (RUN_DIR/dataset.json, checked by trainer.training.loop).
# How many steps one call to the device runs changes the speed, not the result (but for when the budget is checked).
RESTART_FREE_FIELDS = ("verbose", "max_minutes", "max_cpu_minutes", "data_dir", "steps_per_execution")


def write_config(config: TrainConfig) -> None:
    """Writes RUN_DIR/config.json; a restart must use the same config as the run it continues."""
    model_dir = epath.Path(config.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / run_folder.CONFIG_FILE
    if path.exists():
        old = TrainConfig.from_json(path.read_text())
        differ = [
            f"{f.name}: {getattr(old, f.name)!r} -> {getattr(config, f.name)!r}"
            for f in dataclasses.fields(TrainConfig)
            if f.name not in RESTART_FREE_FIELDS and getattr(old, f.name) != getattr(config, f.name)
        ]
        if differ:
            raise UsageError(
                f"{path} belongs to a run with a different config ({'; '.join(differ)}); "
                "restart with the same flags to resume it, or choose a new --model_dir"
            )
    atomic_write_text(path, config.to_json())
