"""Progress lines for long jobs: how many done, how fast, and about how long is left.

    progress = Progress("validate", total=277_483, unit="files")
    for n in ...:
        progress.update(done)        # prints at most one line every EVERY seconds
    progress.finish(done)            # the last line, always

    validate: 81,920/277,483 files (29.5%), 1,204 files/s, about 2 min 42 s left

The rate is over the whole run so far, so the estimate steadies as the job goes. Lines go to
`emit` (default: stderr, where they do not mix with a command's result on stdout); the clock is
an argument so tests drive it. `Tally` counts across processes: Beam's local workers add to it,
the driver reads the sum (`beam_jobs.cli.run_pipeline`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

EVERY = 10.0  # seconds between lines


def print_line(line: str) -> None:
    """One line for the person at the terminal: stderr, flushed, so it never mixes with a result on stdout.
    Every progress line of the project's commands goes through here."""
    print(line, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """3 s, 2 min 05 s, 1 h 02 min."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "files",
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] = print_line,
    ):
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.clock, self.emit = clock, emit
        self.start = clock()
        self.last_line = self.start

    def line(self, done: int | None, note: str | None = None) -> str:
        """The progress line for DONE so far; with DONE unknown (None), NOTE and the time so far."""
        elapsed = self.clock() - self.start
        if done is None:
            return f"{self.label}: {note or 'running'}, {duration(elapsed)} so far"
        of_total = f"/{self.total:,}" if self.total is not None else ""
        if done == 0:  # e.g. workers still starting
            return f"{self.label}: 0{of_total} {self.unit}, none done yet, {duration(elapsed)} so far"
        if self.total is not None and done >= self.total:  # the rest of the job: combining, writing
            return f"{self.label}: all {self.total:,} {self.unit} done, finishing, {duration(elapsed)} so far"
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{done:,}/{self.total:,} {self.unit}" if self.total is not None else f"{done:,} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * done / self.total:.1f}%)"
        parts.append(f"{rate:,.0f} {self.unit}/s")
        if self.total is not None:
            parts.append(f"about {duration((self.total - done) / rate)} left")
        return f"{self.label}: " + ", ".join(parts)

    def update(self, done: int | None, note: str | None = None) -> bool:
        """Emits a line if EVERY seconds have passed since the last one; returns whether it did."""
        now = self.clock()
        if now - self.last_line < self.every:
            return False
        self.last_line = now
        self.emit(self.line(done, note))
        return True

    def finish(self, done: int | None) -> None:
        """The closing line: how many in how long."""
        elapsed = self.clock() - self.start
        if done is None:
            self.emit(f"{self.label}: done in {duration(elapsed)}")
            return
        rate = done / elapsed if elapsed > 0 else 0.0
        self.emit(f"{self.label}: {done:,} {self.unit} in {duration(elapsed)} ({rate:,.0f} {self.unit}/s)")


class Tally:
    """A count that several processes add to: each `add` appends one line to a file (O_APPEND writes of a few
    bytes are atomic), and `count` sums them. Local only: remote workers cannot see the driver's disk."""

    def __init__(self, path: str):
        self.path = path

    def add(self, n: int) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{n}\n".encode())
        finally:
            os.close(fd)

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                return sum(int(x) for x in f.read().split())
        except FileNotFoundError:
            return 0
