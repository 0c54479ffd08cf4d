"""Learning-rate schedules, including one sized to a time budget from the measured cost of an epoch.

    schedule = Schedule.cosine(peak=1e-3, steps_per_epoch=250, epochs=20)   # warm-up, then cosine to 0
    schedule = Schedule.budget(peak=1e-3, steps_per_epoch=250)              # length fixed after epoch 2
    model.fit(..., callbacks=[ScheduleCallback(schedule, budget=budget, on_plan=save)])

`budget` (the default when --max_minutes or --max_cpu_minutes is given and --epochs is not): epoch 1
warms up linearly, epoch 2 runs at the peak rate and is timed (CPU and wall, training and validation
together, so its cost is that of every later epoch; epoch 1 also pays for tracing). At the end of
epoch 2 the plan is fixed: as many more epochs as `safety` x the budget left pays for, with a cosine
decay from the peak to zero over them. After each later epoch the plan is refined from the mean cost
of the recent epochs (the current rate is kept and decays to zero at the new end). Training ends on
the plan's last step, normally before the budget runs out; `BudgetStop` is only the hard stop. The plan
goes into the run's state, so a resumed run follows the same curve (the rate is a pure function of the
plan and the global step) and does not refine it.

`cosine`: warm-up (a tenth of the steps, at most one epoch) and cosine decay over --epochs.
`constant`: the rate of the seed notebook, with early stopping.
Why a decay: annealing to zero at the budget's end turns the last epochs into fine convergence instead
of noise (bench/RESULTS.md, "default recipe").
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
from absl import logging

SCHEDULES = ("auto", "budget", "cosine", "constant")
# The plan spends this share of the budget left after calibration; the rest absorbs the cost's noise.
DEFAULT_SAFETY = 0.95
# Epochs of a budget schedule before its length is fixed: warm-up, then one timed epoch at the peak.
CALIBRATION_EPOCHS = 2
# Epochs whose mean cost a refined plan uses.
RECENT_EPOCHS = 5


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Rate at global step s: linear warm-up to `peak` over `warmup_steps`, flat until `decay_start`, then
    a half cosine to zero at `total_steps`. `total_steps` None: not planned yet (flat after warm-up)."""

    kind: str
    peak: float
    steps_per_epoch: int
    warmup_steps: int
    decay_start: int
    total_steps: int | None = None

    def __post_init__(self):
        if self.kind not in ("budget", "cosine", "constant"):
            raise ValueError(f"schedule kind {self.kind!r} is unknown; choose budget, cosine or constant")
        if self.peak <= 0 or self.steps_per_epoch <= 0 or self.warmup_steps < 0:
            raise ValueError(f"schedule needs peak > 0, steps_per_epoch > 0, warmup_steps >= 0: {self}")
        if self.total_steps is not None and not self.warmup_steps <= self.decay_start <= self.total_steps:
            raise ValueError(f"schedule needs warmup_steps <= decay_start <= total_steps: {self}")

    @classmethod
    def constant(cls, peak: float, steps_per_epoch: int) -> Schedule:
        return cls("constant", peak, steps_per_epoch, 0, 0)

    @classmethod
    def cosine(cls, peak: float, steps_per_epoch: int, epochs: int) -> Schedule:
        total = steps_per_epoch * epochs
        warmup = min(steps_per_epoch, total // 10)
        return cls("cosine", peak, steps_per_epoch, warmup, warmup, total)

    @classmethod
    def budget(cls, peak: float, steps_per_epoch: int) -> Schedule:
        return cls("budget", peak, steps_per_epoch, steps_per_epoch, CALIBRATION_EPOCHS * steps_per_epoch)

    @property
    def planned(self) -> bool:
        return self.total_steps is not None

    @property
    def total_epochs(self) -> int | None:
        return None if self.total_steps is None else -(-self.total_steps // self.steps_per_epoch)

    def rate(self, step: int) -> float:
        """The learning rate of global step `step` (0-based: the first update is step 0)."""
        if self.kind == "constant":
            return self.peak
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.total_steps is None or step < self.decay_start:
            return self.peak
        span = self.total_steps - self.decay_start
        done = min(step - self.decay_start, span)
        return 0.5 * self.peak * (1.0 + math.cos(math.pi * done / span)) if span else 0.0

    def with_epochs(self, total_epochs: int) -> Schedule:
        """This schedule ending after `total_epochs` epochs (decay from the end of calibration)."""
        total = max(total_epochs, CALIBRATION_EPOCHS) * self.steps_per_epoch
        return dataclasses.replace(self, total_steps=total, decay_start=min(self.decay_start, total))

    def reanchored(self, step: int, total_epochs: int) -> Schedule:
        """The same rate at `step`, then a half cosine from it to 0 at the end of `total_epochs` (a refined plan)."""
        total = max(total_epochs * self.steps_per_epoch, step)
        return dataclasses.replace(self, peak=self.rate(step), decay_start=step, total_steps=total)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Schedule:
        return cls(**values)


def epochs_affordable(epoch_cost: dict[str, float], remaining: dict[str, float | None], safety: float) -> int:
    """Whole epochs that `safety` x the remaining budget pays for, at `epoch_cost` per epoch, over every limit.

    epoch_cost and remaining are keyed by measure ("wall_s", "cpu_s"); remaining None = no limit there.
    """
    counts = []
    for measure, left in remaining.items():
        if left is None:
            continue
        cost = epoch_cost[measure]
        if cost <= 0:
            raise ValueError(f"epoch cost {measure}={cost!r} must be > 0")
        counts.append(max(0, math.floor(safety * left / cost)))
    if not counts:
        raise ValueError("a budget schedule needs a time budget (--max_minutes or --max_cpu_minutes)")
    return min(counts)


class ScheduleCallback(keras.callbacks.Callback):
    """Sets the optimizer's rate before every batch, logs it per epoch, plans a budget schedule, ends on plan.

    initial_epoch: the first epoch of this fit() (a resumed run's); the global step is counted from
    epoch 0 of the schedule (`first_epoch`, the phase's start). `on_plan(schedule)` is called once the
    budget schedule's length is fixed, so the caller can store it with the run's state.
    """

    def __init__(
        self, schedule: Schedule, first_epoch: int = 0, budget=None, safety: float | None = None, on_plan=None
    ):
        super().__init__()
        if schedule.kind == "budget" and not schedule.planned and budget is None:
            raise ValueError("a budget schedule needs a time budget (--max_minutes or --max_cpu_minutes)")
        self.schedule = schedule
        self.first_epoch = first_epoch
        self.budget = budget
        self.safety = DEFAULT_SAFETY if safety is None else safety
        self.on_plan = on_plan
        self._epoch = 0
        self._epoch_start: tuple[float, float] | None = None
        # A plan made by this process is refined as epochs are timed; one read from a run's state is followed.
        self._fresh = False
        self._costs: list[dict[str, float]] = []

    def _set(self, step: int) -> float:
        rate = self.schedule.rate(step)
        self.model.optimizer.learning_rate = rate
        return rate

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch - self.first_epoch
        self._epoch_start = (time.perf_counter(), time.process_time())
        self._set(self._epoch * self.schedule.steps_per_epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self._set(self._epoch * self.schedule.steps_per_epoch + batch)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the rate of the epoch's last step, for training_log.csv
            logs["learning_rate"] = self.schedule.rate((self._epoch + 1) * self.schedule.steps_per_epoch - 1)
        done = self._epoch + 1
        finished = self.schedule.planned and done >= self.schedule.total_epochs  # at rate 0: never extended
        if (
            self.schedule.kind == "budget"
            and done >= CALIBRATION_EPOCHS
            and not finished
            and (self._fresh or not self.schedule.planned)
        ):
            self._fresh = True  # this process fixes the plan, so it may refine it
            self._costs.append(self._epoch_cost())
            self._plan(done)
        total = self.schedule.total_epochs
        if total is not None and done >= total:
            self.model.stop_training = True

    def _epoch_cost(self) -> dict[str, float]:
        wall0, cpu0 = self._epoch_start
        return {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}

    def _plan(self, done: int) -> None:
        """Fixes the plan after calibration, then refines it after each later epoch of the same process.

        The cost of an epoch is the mean of the last RECENT_EPOCHS epochs since calibration: one epoch
        timed while other work shared the machine can be far off the mean (bench/RESULTS.md, "What the
        budget schedule did, and the refinement that followed"). A
        refined plan keeps the current rate and decays from it, as a new half cosine, to 0 at the new
        end, so the rate stays continuous and falls monotonically.
        """
        recent = self._costs[-RECENT_EPOCHS:]
        cost = {k: sum(c[k] for c in recent) / len(recent) for k in ("wall_s", "cpu_s")}
        used = self.budget.used()
        remaining = {
            "wall_s": None if self.budget.wall_s is None else self.budget.wall_s - used["wall_s"],
            "cpu_s": None if self.budget.cpu_s is None else self.budget.cpu_s - used["cpu_s"],
        }
        total = done + epochs_affordable(cost, remaining, self.safety)
        step = done * self.schedule.steps_per_epoch
        if not self.schedule.planned:
            self.schedule = self.schedule.with_epochs(total)
        elif total <= done:  # the budget left pays for no further epoch: end here
            self.schedule = dataclasses.replace(self.schedule, total_steps=step)
        elif total != self.schedule.total_epochs:
            self.schedule = self.schedule.reanchored(step, total)
        else:
            return
        logging.info(
            "budget schedule after epoch %d: %.1f s wall, %.1f s CPU an epoch (mean of %d); %s left -> %d epochs "
            "in all (rate %.3g now, 0 at step %d)",
            done,
            cost["wall_s"],
            cost["cpu_s"],
            len(recent),
            ", ".join(f"{v:.0f} {k}" for k, v in remaining.items() if v is not None),
            self.schedule.total_epochs,
            self.schedule.rate(done * self.schedule.steps_per_epoch),
            self.schedule.total_steps,
        )
        if self.on_plan is not None:
            self.on_plan(self.schedule)


class PlannedEpochProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, whose epoch header counts against the budget plan, not fit()'s `epochs`.

    A budget phase calls fit() with an unbounded epoch count and ends itself on plan, so Keras' own header
    would read "Epoch 3/100000"; this one reads "Epoch 3/35 (budget plan)", and "Epoch 1 (budget plan
    after epoch 2)" while the first epochs are timed. Keras uses it instead of its own (fit adds a
    ProgbarLogger only when the callbacks hold none).
    """

    def __init__(self, schedule: ScheduleCallback):
        super().__init__()
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        self._maybe_init_progbar()
        if self.verbose:
            total = self.schedule.schedule.total_epochs
            plan = f"/{total} (budget plan)" if total else f" (budget plan after epoch {CALIBRATION_EPOCHS})"
            print(f"Epoch {epoch + 1}{plan}", flush=True)
