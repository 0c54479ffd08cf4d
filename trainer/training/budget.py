"""Time budgets for training runs and searches: wall-clock seconds, process CPU seconds, or both.

    budget = Budget(wall_s=3600)                   # stop after an hour on the clock
    budget = Budget(cpu_s=3600)                    # stop after an hour of this process's CPU (all threads)
    model.fit(..., callbacks=[BudgetStop(budget)])

On a multi-worker cluster every worker must stop at the same step, so the workers follow the chief's
budget: `SharedBudget(budget, agree)` asks `agree` (an all-reduce, trainer.training.distribute.agree) for the
chief's verdict each time it is checked.

CPU time is the fair measure when several jobs share a machine (benchmarks run side by side): a job
slowed by its neighbours is not charged for their work. A budget counts this process only, from when
the Budget was made, so a resumed run or search gets its budget afresh.
"""

from __future__ import annotations

import time

import keras

from pcam_tfds.core.progress import print_line


class Budget:
    """Seconds of wall clock and/or process CPU time; `spent()` once either limit is reached."""

    def __init__(self, wall_s: float | None = None, cpu_s: float | None = None):
        for name, value in (("wall_s", wall_s), ("cpu_s", cpu_s)):
            if value is not None and value <= 0:
                raise ValueError(f"budget {name}={value!r} must be > 0")
        self.wall_s, self.cpu_s = wall_s, cpu_s
        self._wall0, self._cpu0 = time.perf_counter(), time.process_time()

    @classmethod
    def from_minutes(cls, wall_minutes: float | None, cpu_minutes: float | None) -> Budget | None:
        """A Budget from the --max_minutes / --max_cpu_minutes flags, or None when neither is set."""
        if wall_minutes is None and cpu_minutes is None:
            return None
        return cls(
            None if wall_minutes is None else 60.0 * wall_minutes, None if cpu_minutes is None else 60.0 * cpu_minutes
        )

    def used(self) -> dict[str, float]:
        return {
            "wall_s": round(time.perf_counter() - self._wall0, 1),
            "cpu_s": round(time.process_time() - self._cpu0, 1),
        }

    def spent(self) -> bool:
        used = self.used()
        return (self.wall_s is not None and used["wall_s"] >= self.wall_s) or (
            self.cpu_s is not None and used["cpu_s"] >= self.cpu_s
        )

    def describe(self) -> str:
        limits = [
            f"{limit:g} s {name}" for name, limit in (("wall", self.wall_s), ("CPU", self.cpu_s)) if limit is not None
        ]
        used = self.used()
        return f"budget {' / '.join(limits)}; used {used['wall_s']:g} s wall, {used['cpu_s']:g} s CPU"


class SharedBudget(Budget):
    """A Budget whose `spent()` is the cluster's verdict: `agree(local verdict)` returns the chief's.

    Every worker must call `spent()` at the same points (BudgetStop: after every batch), since `agree`
    is a collective operation; `used()` and `describe()` stay local and may be called anywhere.
    """

    def __init__(self, budget: Budget, agree):
        super().__init__(budget.wall_s, budget.cpu_s)
        self._wall0, self._cpu0 = budget._wall0, budget._cpu0
        self._agree = agree

    def spent(self) -> bool:
        return self._agree(super().spent())


class BudgetStop(keras.callbacks.Callback):
    """Stops fit() at the first batch end after the budget is spent; Keras still validates that epoch.

    So a budget overshoots by at most one batch and one validation pass, and the interrupted epoch
    still reports val_auc (its weights saw part of an epoch more than the one before).
    """

    def __init__(self, budget: Budget):
        super().__init__()
        self.budget = budget
        self.stopped = False

    def on_train_batch_end(self, batch, logs=None):
        if not self.stopped and self.budget.spent():
            self.stopped = True
            self.model.stop_training = True
            print_line(f"time budget spent ({self.budget.describe()}): stopping after this epoch's validation")
