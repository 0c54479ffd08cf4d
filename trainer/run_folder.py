"""A run folder that one process owns at a time, and an epoch log that a kill cannot corrupt.

    with RunLock(run_dir, "python -m trainer ..."):     # a second trainer or tuner here is refused at once
        ...
    EpochLog(run_dir / "training_log.csv")              # a Keras callback: one row per epoch, rewritten atomically

The lock is RUN_DIR/.lock, created with O_EXCL and holding the owner's pid, host, start time and
command. A lock whose process is gone (same host, pid no longer running) is stale and is taken over,
so a SIGKILL never leaves a folder locked for good; a lock from another host cannot be checked and is
respected (delete it by hand once that host's job is gone).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time

import keras
from etils import epath

LOCK_FILE = ".lock"


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def atomic_write_text(path, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, then renames it over `path`: readers see old or new."""
    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}"
    tmp.write_text(text)
    os.replace(str(tmp), str(path))


class RunLock:
    """Exclusive ownership of a run folder for the life of a `with` block."""

    def __init__(self, run_dir, command: str = ""):
        self.run_dir = epath.Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command
        self._held = False

    def _describe(self, owner: dict) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
        return (f"pid {owner.get('pid')} on host {owner.get('host')} since {started}"
                + (f" ({owner['command']})" if owner.get("command") else ""))

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": self.command}
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text() or "{}")
                except (OSError, json.JSONDecodeError):
                    owner = {}
                same_host = owner.get("host") == socket.gethostname()
                if owner and (not same_host or _alive(int(owner.get("pid", -1)))):
                    raise RunFolderBusy(
                        f"{self.run_dir} is in use by {self._describe(owner)}; wait for it to finish, or choose "
                        f"another folder (if that process is gone, delete {self.path})"
                    ) from None
                # Stale (its process is gone) or unreadable (killed while writing it): take it over.
                try:
                    os.unlink(str(self.path))
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self._held = True
            return self
        raise RunFolderBusy(f"{self.run_dir}: could not take the lock {self.path}; another process keeps creating it")

    def release(self) -> None:
        if self._held:
            try:
                os.unlink(str(self.path))
            except FileNotFoundError:
                pass
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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
