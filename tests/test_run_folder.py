"""Run folders: one owner at a time, stale locks taken over, an epoch log without duplicates, the folder
claimed only after the inputs check out, and a run that follows its dataset when the data moves."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from cli_runs import REPO, run_module

from trainer import run_folder
from trainer.training.epoch_log import EpochLog


def test_second_owner_is_refused_with_the_holder_named(tmp_path):
    with run_folder.RunLock(tmp_path, "python -m trainer --model=baseline"):
        with pytest.raises(run_folder.RunFolderBusy) as info:
            run_folder.RunLock(tmp_path).acquire()
        message = str(info.value)
        assert f"pid {os.getpid()}" in message and "python -m trainer --model=baseline" in message
    assert not (tmp_path / run_folder.LOCK_FILE).exists()  # released
    run_folder.RunLock(tmp_path).acquire().release()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / run_folder.LOCK_FILE).write_text(
        json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0, "command": "killed"})
    )
    with run_folder.RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    (tmp_path / run_folder.LOCK_FILE).write_text("")  # killed while writing its lock: unreadable, taken over
    run_folder.RunLock(tmp_path).acquire().release()
    (tmp_path / run_folder.LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host", "started": 0}))
    with pytest.raises(run_folder.RunFolderBusy, match="another-host"):
        run_folder.RunLock(tmp_path).acquire()


def test_epoch_log_keeps_one_row_per_epoch_across_a_resume(tmp_path):
    path = tmp_path / "training_log.csv"
    log = EpochLog(path)
    log.on_train_begin()
    for epoch in range(3):
        log.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_auc": 0.5 + epoch / 10})
    # Killed after epoch 2's row (index 2) was written but before its state was saved: the resume repeats it.
    again = EpochLog(path)
    again.on_train_begin()
    again.on_epoch_end(2, {"loss": 0.3, "val_auc": 0.75})
    again.on_epoch_end(3, {"loss": 0.25, "val_auc": 0.8})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[2]["val_auc"]) == 0.75 and rows[0]["loss"] == "1.0"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_atomic_write_replaces_whole_files(tmp_path):
    path = tmp_path / "metrics.json"
    run_folder.atomic_write_text(path, "old")
    run_folder.atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.slow
def test_typo_in_data_dir_claims_nothing_and_a_moved_dataset_resumes(pcam_data, tmp_path):
    run_dir = tmp_path / "run"
    common = [
        "trainer",
        "--model=baseline",
        f"--model_dir={run_dir}",
        "--epochs=2",
        "--batch_size=16",
        "--steps_per_epoch=2",
        "--augment=none",
        "--verbose=0",
    ]
    typo = run_module(*common, f"--data_dir={tmp_path / 'no_such_dir'}", check=False)
    assert typo.returncode == 2 and "error: --dataset=" in typo.stderr and "no_such_dir" in typo.stderr
    assert "Traceback" not in typo.stderr
    assert not (run_dir / "config.json").exists()
    moved = tmp_path / "moved_tfds"
    shutil.copytree(pcam_data["tfds"], moved)
    # A time budget spent in the first batch stops the run after its first epoch, to be continued.
    run_module(*common, f"--data_dir={moved}", "--max_minutes=1e-6")
    state = json.loads((run_dir / "state" / "state.json").read_text())
    assert (state["epoch"], state["phase_done"]) == (1, False)
    moved.rename(tmp_path / "moved_again")
    run_module(*common, f"--data_dir={tmp_path / 'moved_again'}")  # same dataset elsewhere: resumes
    assert json.loads((run_dir / "state" / "state.json").read_text())["epoch"] == 2
    with open(run_dir / "training_log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]
    assert not (run_dir / run_folder.LOCK_FILE).exists()
    assert REPO.exists()


@pytest.mark.slow
def test_two_trainers_in_one_folder_one_runs_one_is_refused(pcam_data, tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "trainer",
        "--model=baseline",
        f"--model_dir={run_dir}",
        "--epochs=3",
        "--batch_size=16",
        "--augment=none",
        "--verbose=0",
        f"--data_dir={pcam_data['tfds']}",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # until the first holds the lock
            if (run_dir / run_folder.LOCK_FILE).exists():
                break
            if first.poll() is not None:
                pytest.fail(f"the first trainer ended early: {first.stderr.read()[-2000:]}")
            import time

            time.sleep(0.1)
        second = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and "is in use by pid" in second.stderr
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    with open(run_dir / "training_log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2"]
    assert json.loads((run_dir / "metrics.json").read_text())["num_examples"] > 0


def test_the_resume_state_is_typed_and_keeps_the_file_format(tmp_path):
    """state.json as the trainer has always written it loads into a frozen RunState and is written back the same."""
    import dataclasses

    from trainer import errors
    from trainer.training import phases

    old = {
        "phase_index": 1,
        "phase_starts": [0, 2],
        "epoch": 3,
        "phase_done": False,
        "weights": "epoch-3.weights.h5",
        "best_auc": 0.91,
        "early_stopping": {"wait": 1, "best": 0.9},
        "schedule": {"kind": "budget", "peak": 0.003},
    }
    (tmp_path / run_folder.STATE_FILE).write_text(json.dumps(old))
    state = phases.read_state(tmp_path)
    assert (state.epoch, state.phase_starts, state.early_stopping_wait, state.early_stopping_best) == (
        3,
        (0, 2),
        1,
        0.9,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.epoch = 4
    phases.write_state(tmp_path, state)
    assert json.loads((tmp_path / run_folder.STATE_FILE).read_text()) == old
    progress = phases.Progress(tmp_path)
    assert progress.resumed and progress.epoch == 3 and progress.finished(0) and not progress.finished(1)
    entry = progress.enter(1)
    assert entry.continues and (entry.early_stopping_wait, entry.early_stopping_best, entry.best_auc) == (1, 0.9, 0.91)
    del old["early_stopping"]
    (tmp_path / run_folder.STATE_FILE).write_text(json.dumps(old))
    with pytest.raises(errors.UsageError, match=r"state\.json: not a trainer run's state \(KeyError: 'early_stopping'"):
        phases.read_state(tmp_path)
    (tmp_path / run_folder.STATE_FILE).write_text("{")
    with pytest.raises(errors.UsageError, match=r"state\.json: not JSON"):
        phases.read_state(tmp_path)


def test_the_callbacks_that_resume_depends_on_must_keep_their_order():
    import keras

    from trainer.training import loop, phases, schedule
    from trainer.training.budget import Budget, BudgetStop

    sched = schedule.ScheduleCallback(schedule.Schedule.constant(1e-3, 10))
    stopping = phases.ResumableEarlyStopping(monitor="val_auc", mode="max")
    state = phases.StateCheckpoint(None, 0, [0], 10, stopping, None, sched, monitor="val_auc")
    ema = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    best = keras.callbacks.ModelCheckpoint("best.weights.h5", save_weights_only=True)
    stop = BudgetStop(Budget(wall_s=60))
    log = keras.callbacks.Callback()  # anything else may sit anywhere
    loop.check_callback_order([sched, log, stopping, state, ema, best, stop, log])
    loop.check_callback_order([sched, stopping, state, best])  # without EMA or budget
    for wrong in ([stopping, sched, state], [sched, stopping, ema, state], [sched, stopping, state, stop, best]):
        with pytest.raises(RuntimeError, match="resume needs ScheduleCallback, ResumableEarlyStopping"):
            loop.check_callback_order(wrong)
