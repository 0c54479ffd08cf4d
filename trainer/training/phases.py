"""The phases of a training run, and how a restarted run resumes them where it stopped.

    phases = plan_phases(config)              # [train] for the CNNs; [head, fine_tune] for transfer models
    progress = Progress(model_dir / run_folder.STATE_DIR)
    for index, phase in enumerate(phases):
        if progress.finished(index):
            continue
        entry = progress.enter(index)         # where fit() starts, what to reload
        model.fit(..., initial_epoch=entry.initial_epoch, callbacks=[..., StateCheckpoint(...)])
        phase_done = progress.end(index, phase.name)
        ...
        progress.close()

After every epoch `StateCheckpoint` saves the weights and optimizer state to
RUN_DIR/state/epoch-N.weights.h5; once every callback of the epoch has run (its training_log.csv row
and best.weights.h5 are written), RUN_DIR/state/state.json records which phase and epoch they belong
to, plus the early-stopping and best-AUC state and, once fixed, the budget schedule's plan. A process
killed at any point before that repeats the epoch when restarted (tests/test_kill_resume.py).
A run restarted with the same command reads that file (`Progress`) and:

- skips the phases it marks finished (the frozen-base phase of a transfer model);
- continues the phase it was in at its next epoch, with that phase's weights and optimizer state,
  early-stopping counter, best AUC and schedule plan;
- starts any later phase afresh from the saved weights.

Keras' BackupAndRestore is not used because it forgets early stopping and deletes its backup at the end
of every fit() call, so a two-phase schedule would restart phase one.
"""

from __future__ import annotations

import dataclasses
import json

import keras
from etils import epath

from trainer import errors, run_folder
from trainer.config.train_config import TrainConfig
from trainer.training import schedule as schedule_lib

# Epoch cap of a phase whose length the budget schedule decides (it ends the phase long before).
UNBOUNDED_EPOCHS = 100_000


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of epochs with one optimizer, one set of trainable layers and one learning-rate schedule."""

    name: str  # "train" (CNNs), "head" (frozen base) or "fine_tune"
    epochs: int  # at most; a budget schedule decides the length itself
    learning_rate: float  # the peak rate of the schedule
    schedule: str = "constant"  # budget, cosine or constant (trainer.training.schedule)


def plan_phases(config: TrainConfig) -> list[Phase]:
    """CNNs train in one phase; transfer models train the head at a constant rate, then fine-tune.

    The last phase follows config.schedule; its length is config.epochs, or, with epochs None, what the
    budget schedule fits into the time budget.
    """
    epochs = UNBOUNDED_EPOCHS if config.epochs is None else config.epochs
    if not config.is_transfer:
        return [Phase("train", epochs, config.learning_rate, config.schedule)]
    phases = [Phase("head", config.head_epochs, config.learning_rate)]
    phases.append(Phase("fine_tune", epochs, config.fine_tune_learning_rate, config.schedule))
    return [p for p in phases if p.epochs > 0]


def make_schedule(phase: Phase, steps_per_epoch: int, stored: dict | None = None) -> schedule_lib.Schedule:
    """The phase's schedule; `stored` (from the run's state) is a budget plan already fixed before a restart."""
    if stored is not None:
        return schedule_lib.Schedule.from_dict(stored)
    if phase.schedule == "budget":
        return schedule_lib.Schedule.budget(phase.learning_rate, steps_per_epoch)
    if phase.schedule == "cosine":
        return schedule_lib.Schedule.cosine(phase.learning_rate, steps_per_epoch, phase.epochs)
    return schedule_lib.Schedule.constant(phase.learning_rate, steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class RunState:
    """Where a run stands after its last finished epoch: RUN_DIR/state/state.json, which a restart resumes from.

    The file's keys are these fields (early_stopping as {"wait", "best"}); runs written before this class
    resume as they are.
    """

    phase_index: int  # the phase the epoch belonged to
    phase_starts: tuple[int, ...]  # the first epoch of each phase begun so far
    epoch: int  # the next epoch to run (0-based, over the whole run)
    phase_done: bool  # ended by early stopping, its epochs or its schedule; a spent budget or a crash leaves it open
    weights: str  # the file in the state folder with that epoch's weights and optimizer state
    best_auc: float | None  # the best validation AUC over the whole run so far
    early_stopping_wait: int  # epochs without improvement, carried into the restarted phase
    early_stopping_best: float | None
    schedule: dict | None  # the phase's learning-rate plan once its length is fixed (schedule.Schedule.to_dict)

    def to_dict(self) -> dict:
        return {
            "phase_index": self.phase_index,
            "phase_starts": list(self.phase_starts),
            "epoch": self.epoch,
            "phase_done": self.phase_done,
            "weights": self.weights,
            "best_auc": self.best_auc,
            "early_stopping": {"wait": self.early_stopping_wait, "best": self.early_stopping_best},
            "schedule": self.schedule,
        }

    @classmethod
    def from_dict(cls, doc: dict, path: str = "state.json") -> RunState:
        """The state a state.json holds; a UsageError (one line, exit 2) naming PATH and the key when it is not one."""
        try:
            stopping = doc["early_stopping"]
            return cls(
                phase_index=int(doc["phase_index"]),
                phase_starts=tuple(int(e) for e in doc["phase_starts"]),
                epoch=int(doc["epoch"]),
                phase_done=bool(doc["phase_done"]),
                weights=str(doc["weights"]),
                best_auc=None if doc["best_auc"] is None else float(doc["best_auc"]),
                early_stopping_wait=int(stopping["wait"]),
                early_stopping_best=None if stopping["best"] is None else float(stopping["best"]),
                schedule=doc.get("schedule"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise errors.UsageError(
                f"{path}: not a trainer run's state ({type(e).__name__}: {e}); remove the run folder's "
                "state/ to train from scratch"
            ) from None


def read_state(state_dir: epath.Path) -> RunState | None:
    path = state_dir / run_folder.STATE_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise errors.UsageError(
            f"{path}: not JSON ({e}); remove the run folder's state/ to train from scratch"
        ) from None
    return RunState.from_dict(doc, str(path))


def write_state(state_dir: epath.Path, state: RunState) -> None:
    # Write-then-rename, so a kill mid-write leaves the previous state intact.
    run_folder.atomic_write_text(state_dir / run_folder.STATE_FILE, json.dumps(state.to_dict(), indent=2) + "\n")


@dataclasses.dataclass(frozen=True)
class PhaseEntry:
    """How one phase begins in this process: a fresh start, or the continuation of an interrupted phase."""

    start: int  # the phase's first epoch (0-based, counted over the whole run)
    initial_epoch: int  # the epoch fit() begins with
    continues: bool  # the phase an interrupted run was in: reload its weights *and* optimizer state
    weights: epath.Path | None  # saved weights to load (None: the model in memory is current)
    early_stopping_wait: int  # epochs without improvement so far
    early_stopping_best: float | None  # the best val_auc so far in this phase
    best_auc: float | None  # over the whole run, for the best-weights checkpoint
    schedule: dict | None  # the phase's schedule plan, fixed before the restart


class Progress:
    """The resume state machine of one run over its phases, backed by RUN_DIR/state/state.json."""

    def __init__(self, state_dir: epath.Path, write_dir: epath.Path | None = None):
        """state_dir: where the run's state is read from; write_dir (default state_dir): where this process
        writes it (a worker of a cluster other than the chief reads the chief's and writes a temporary copy)."""
        self.state_dir = state_dir
        self.write_dir = write_dir or state_dir
        self.state = read_state(state_dir)  # as the last finished epoch (or phase) left it
        self.resumed = self.state is not None
        self.epoch = self.state.epoch if self.state else 0  # the next epoch to run
        self.phase_starts: list[int] = list(self.state.phase_starts) if self.state else []
        # A resumed run builds its model with a random init: the saved weights must be loaded once.
        self._weights_loaded = not self.resumed

    def finished(self, index: int) -> bool:
        """Whether phase `index` has ended: an earlier one, or this one with its end recorded."""
        s = self.state
        return s is not None and (index < s.phase_index or (index == s.phase_index and s.phase_done))

    def enter(self, index: int) -> PhaseEntry:
        """Begins phase `index` (one that has not finished), recording its first epoch unless it continues."""
        s = self.state
        continues = s is not None and index == s.phase_index
        if not continues:
            self.phase_starts.append(self.epoch)
        weights = None
        if not self._weights_loaded:
            weights = self.state_dir / s.weights
            self._weights_loaded = True
        return PhaseEntry(
            start=self.phase_starts[index],
            initial_epoch=self.epoch,
            continues=continues,
            weights=weights,
            early_stopping_wait=s.early_stopping_wait if continues else 0,
            early_stopping_best=s.early_stopping_best if continues else None,
            best_auc=s.best_auc if s else None,
            schedule=s.schedule if continues else None,
        )

    def end(self, index: int, name: str) -> bool:
        """After phase `index`'s fit(): reads the state its last epoch wrote; True when the phase is done.

        Not done means stopped early by a spent time budget: the same command continues the phase.
        """
        state = read_state(self.write_dir)
        if state is None or state.phase_index != index:
            raise RuntimeError(f"phase {name} ran no epoch (initial epoch {self.epoch}); state: {state}")
        self.state = state
        return state.phase_done

    def close(self) -> None:
        """Records the phase just ended as done, so a restart goes on with the next one."""
        self.state = dataclasses.replace(self.state, phase_done=True)
        write_state(self.write_dir, self.state)
        self.epoch = self.state.epoch


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose patience counter and best value can be carried over from an interrupted run."""

    def __init__(self, initial_wait: int = 0, initial_best: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self._initial = (initial_wait, initial_best)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.wait, self.best = self._initial


class StateCheckpoint(keras.callbacks.Callback):
    """Saves weights + optimizer state after every epoch, and the state file pointing at them once the epoch's
    other callbacks have run.

    Must come after the early-stopping and schedule callbacks in the list, so it records that epoch's
    decisions, and before SwapEMAWeights, so it saves the raw weights (the averages are optimizer state).
    The state file, which a restart takes as the epoch being over, is written at the next epoch's start or at
    the end of fit(): after the callbacks that follow this one, ModelCheckpoint's best.weights.h5 among
    them, so that a kill before best.weights.h5 is updated never leaves a state whose best AUC no saved
    weights have.
    """

    def __init__(
        self,
        state_dir: epath.Path,
        phase_index: int,
        phase_starts: list[int],
        phase_end: int,
        early_stopping: ResumableEarlyStopping,
        best_auc: float | None,
        schedule: schedule_lib.ScheduleCallback | None = None,
        *,
        monitor: str,
    ):
        super().__init__()
        self.state_dir = state_dir
        self.phase_index, self.phase_starts, self.phase_end = phase_index, list(phase_starts), phase_end
        self.early_stopping = early_stopping
        self.best_auc = best_auc
        self.schedule = schedule
        self.monitor = monitor
        self._pending: RunState | None = None  # the state of the epoch that ended, not written yet

    def on_epoch_end(self, epoch, logs=None):
        auc = (logs or {}).get(self.monitor)
        if auc is not None and (self.best_auc is None or auc > self.best_auc):
            self.best_auc = float(auc)
        weights = self.state_dir / f"epoch-{epoch + 1}.weights.h5"
        self.model.save_weights(str(weights))
        best = self.early_stopping.best
        plan = self.schedule.schedule if self.schedule is not None else None
        plan_end = None if plan is None or plan.total_epochs is None else self.phase_starts[-1] + plan.total_epochs
        self._pending = RunState(
            phase_index=self.phase_index,
            phase_starts=tuple(self.phase_starts),
            epoch=epoch + 1,
            # Done when early stopping ended it, its epochs ran out or its schedule ended; a spent time budget
            # (BudgetStop) or a crash leaves it open, so the same command continues it.
            phase_done=(
                self.early_stopping.stopped_epoch > 0
                or epoch + 1 >= self.phase_end
                or (plan_end is not None and epoch + 1 >= plan_end)
            ),
            weights=weights.name,
            best_auc=self.best_auc,
            early_stopping_wait=int(self.early_stopping.wait),
            early_stopping_best=None if best is None else float(best),
            # The phase's learning-rate schedule once its length is fixed, so a restart follows the same curve.
            schedule=plan.to_dict() if plan is not None and plan.planned else None,
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._write_pending()

    def on_train_end(self, logs=None):
        self._write_pending()

    def _write_pending(self) -> None:
        if self._pending is None:
            return
        write_state(self.state_dir, self._pending)
        for old in self.state_dir.glob("epoch-*.weights.h5"):
            if old.name != self._pending.weights:
                old.unlink()
        self._pending = None
