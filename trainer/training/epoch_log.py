"""training_log.csv, one row per epoch, that a kill cannot corrupt: a Keras callback.

EpochLog(model_dir / run_folder.HISTORY_CSV)          # in model.fit's callbacks
"""

from __future__ import annotations

import csv
import io

import keras
from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text


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
