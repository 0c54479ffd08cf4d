"""A run folder that one process owns at a time, and an epoch log that a kill cannot corrupt.

    with RunLock(run_dir, "python -m trainer ..."):     # a second trainer or tuner here is refused at once
        ...
    EpochLog(run_dir / "training_log.csv")              # a Keras callback: one row per epoch, rewritten atomically

The lock is pcam_tfds.core.folder_lock's (RUN_DIR/.lock, naming its holder; stale locks of dead processes
are taken over).
"""

from __future__ import annotations

import csv
import io

import keras
from etils import epath

from pcam_tfds.core.folder_lock import LOCK_FILE, FolderBusy, FolderLock, atomic_path, atomic_write_text

# The trainer's names for them.
RunLock, RunFolderBusy = FolderLock, FolderBusy
__all__ = ["LOCK_FILE", "EpochLog", "RunFolderBusy", "RunLock", "atomic_path", "atomic_write_text"]


class EpochLog(keras.callbacks.Callback):
    """training_log.csv with exactly one row per epoch: rewritten whole, atomically, after every epoch.

    Replaces Keras' CSVLogger(append=True), which appends: a run killed after writing a row and resumed
    at that epoch logged it twice. Rows of epochs at or after a resumed run's first epoch are replaced.
    """

    def __init__(self, path):
        super().__init__()
        self.path = epath.Path(path)
        self.rows: dict[int, dict] = {}
        if self.path.exists():
            with self.path.open() as f:
                for row in csv.DictReader(f):
                    self.rows[int(row["epoch"])] = row

    def on_train_begin(self, logs=None):
        self._first = None

    def on_epoch_end(self, epoch, logs=None):
        if self._first is None:
            self._first = epoch
            self.rows = {e: r for e, r in self.rows.items() if e < epoch}
        self.rows[epoch] = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        keys = sorted({k for r in self.rows.values() for k in r} - {"epoch"})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["epoch", *keys], restval="", lineterminator="\n")
        writer.writeheader()
        for e in sorted(self.rows):
            writer.writerow(self.rows[e])
        atomic_write_text(self.path, out.getvalue())
