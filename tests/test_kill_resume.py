"""A trainer killed with SIGKILL, restarted with the same command, ends as a run never interrupted (issue 11).

Each kill point is a moment where a real process can die: inside an epoch, between the writes that end an epoch
(training_log.csv, the state's weights, state.json, best.weights.h5) and between training and the final evaluation.
After each kill `python -m trainer` with the same flags must exit 0 with one training_log.csv row per epoch and the
training_log.csv, metrics.json and val_predictions.csv of the uninterrupted run with the same seed, to the bit (on
CPU a run is a function of its seed: trainer.determinism).

The killed process is this file run as a script, `python tests/test_kill_resume.py POINT FLAGS...`: the trainer's
own command (trainer.__main__.main) with one hook that SIGKILLs it at POINT. The trainer has no testing flag for
this (issue 12 removed --crash_after_epochs). The phase boundary of a transfer model is not killed here: three
ResNet50 runs cost minutes of CPU; test_trainer_cli's two-phase test resumes one in its second phase.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import REPO, run_module

# 1-based epochs, as the trainer's output counts them; the hooks below use Keras' 0-based ones. Two epochs of
# five batches (the tiny dataset of tests/conftest.py, batch 16), so epoch 2 resumes from epoch 1's state.
KILL_POINTS = {
    "mid_epoch": "inside epoch 2, after its third batch",
    "log_row_written": "epoch 2's training_log.csv row written, the rest of its end not yet",
    "weights_before_state": "epoch 1's weights and optimizer state saved, state.json not yet written",
    "before_best_weights": "epoch 2, the best, ended; best.weights.h5 not yet updated",
    "before_metrics": "training done and model.keras saved; metrics.json not yet written",
}
OUTPUTS = ("training_log.csv", "metrics.json", "val_predictions.csv")


def _flags(pcam_data, run_dir: Path) -> list[str]:
    return [
        "--model=baseline",
        f"--data_dir={pcam_data['tfds']}",
        f"--model_dir={run_dir}",
        "--epochs=2",
        "--batch_size=16",
        "--mixed_precision=off",
        "--jit_compile=off",
        "--verbose=0",
    ]


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "training_log.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def uninterrupted(pcam_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_module("trainer", *_flags(pcam_data, run_dir), timeout=900)
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_outputs(pcam_data, uninterrupted, tmp_path, point):
    history = _log(uninterrupted)
    # What before_best_weights kills: the run's best epoch is its last.
    assert float(history[1]["val_auc"]) > float(history[0]["val_auc"]), history
    run_dir = tmp_path / "run"
    flags = _flags(pcam_data, run_dir)
    killed = subprocess.run(
        [sys.executable, __file__, point, *flags],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},  # as run_module runs the trainer
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert killed.returncode == -signal.SIGKILL, (
        f"expected the kill {KILL_POINTS[point]}; exit status {killed.returncode}:\n{killed.stderr[-4000:]}"
    )
    assert not (run_dir / "metrics.json").exists()

    run_module("trainer", *flags, timeout=900)  # the same command again
    assert [int(row["epoch"]) for row in _log(run_dir)] == [0, 1]  # one row per epoch
    for name in OUTPUTS:  # Python's repr of each float in all three: equal text is equal bits
        assert (run_dir / name).read_text() == (uninterrupted / name).read_text(), f"{name} after the kill {point}"
    assert json.loads((run_dir / "metrics.json").read_text())["num_examples"] > 0


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_around(owner, name: str, when, *, after: bool = False) -> None:
    """Replaces owner.NAME with a wrapper that SIGKILLs the process just before (or after) a call where when(*args)."""
    original = getattr(owner, name)

    def hooked(*args, **kwargs):
        if not after and when(*args):
            _kill()
        result = original(*args, **kwargs)
        if after and when(*args):
            _kill()
        return result

    setattr(owner, name, hooked)


def _install(point: str) -> None:
    """Arms the kill at POINT in this process, before the trainer's command runs."""
    import keras

    from trainer.evaluation import report
    from trainer.training import loop, phases
    from trainer.training.epoch_log import EpochLog

    if point == "mid_epoch":

        class KillMidEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                if self.epoch == 1 and batch == 2:
                    _kill()

        run = loop.run
        loop.run = lambda config, callbacks=(): run(config, [*callbacks, KillMidEpoch()])
    elif point == "log_row_written":
        _kill_around(EpochLog, "on_epoch_end", lambda log, epoch, *_: epoch == 1, after=True)
    elif point == "weights_before_state":
        _kill_around(phases, "write_state", lambda state_dir, state: state.epoch == 1)
    elif point == "before_best_weights":
        _kill_around(keras.callbacks.ModelCheckpoint, "on_epoch_end", lambda checkpoint, epoch, *_: epoch == 1)
    elif point == "before_metrics":
        _kill_around(report, "write_report", lambda *_: True)
    else:
        raise ValueError(f"unknown kill point {point!r}; choose {', '.join(KILL_POINTS)}")


if __name__ == "__main__":  # the killed process: python tests/test_kill_resume.py POINT TRAINER_FLAGS...
    _install(sys.argv.pop(1))
    from trainer.__main__ import main

    main()
