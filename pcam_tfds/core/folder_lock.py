"""A folder that one process owns at a time: a lock file naming its holder, taken over when the holder is dead.

    with FolderLock(run_dir, "python -m trainer ..."):     # a second owner is refused at once, naming this one
        ...

The lock is FOLDER/.lock, created with O_EXCL and holding the owner's pid, host, start time and
command. A lock whose process is gone (same host, pid no longer running) is stale and is taken over,
so a SIGKILL never leaves a folder locked for good; a lock from another host cannot be checked and is
respected (delete it by hand once that host's job is gone). Used by trainer runs and searches, and by
the dataset build (which can then delete what a killed build left behind).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator

from etils import epath

LOCK_FILE = ".lock"


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[epath.Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends without error, so
    readers see the old file or the new one, never half of one. `suffix` keeps an extension a writer needs.
    The writer may make a folder there: it replaces an empty folder at `path`, and is removed on an error."""
    path = epath.Path(path)
    tmp = path.parent / f".{path.name}.tmp{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(str(tmp), str(path))
    finally:
        if tmp.is_dir():
            shutil.rmtree(str(tmp))
        elif tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class FolderBusy(RuntimeError):
    """Another live process holds the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """Exclusive ownership of a folder for the life of a `with` block."""

    def __init__(self, run_dir, command: str = ""):
        self.run_dir = epath.Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.command = command
        self._held = False

    def _describe(self, owner: dict) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
        return f"pid {owner.get('pid')} on host {owner.get('host')} since {started}" + (
            f" ({owner['command']})" if owner.get("command") else ""
        )

    def acquire(self) -> FolderLock:
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
                    raise FolderBusy(
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
        raise FolderBusy(f"{self.run_dir}: could not take the lock {self.path}; another process keeps creating it")

    def release(self) -> None:
        if self._held:
            try:
                os.unlink(str(self.path))
            except FileNotFoundError:
                pass
            self._held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
