"""Time budgets (trainer.training.budget): limits, the Keras callback, and budgeted training runs and searches."""

from __future__ import annotations

import gc
import json
import time

import keras
import numpy as np
import pytest

from trainer import run_folder
from trainer.config import restart, train_config, validation
from trainer.training import loop
from trainer.training.budget import Budget, BudgetStop
from trainer.tuning import memory, search, tune_config


def _burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_budget_limits_and_their_errors():
    assert Budget.from_minutes(None, None) is None
    assert (Budget.from_minutes(2, None).wall_s, Budget.from_minutes(None, 0.5).cpu_s) == (120.0, 30.0)
    with pytest.raises(ValueError, match="cpu_s=0 must be > 0"):
        Budget(cpu_s=0)
    cpu = Budget(cpu_s=0.05)
    wall = Budget(wall_s=0.05)
    assert not cpu.spent() and not wall.spent()
    time.sleep(0.1)  # wall time passes, CPU time hardly
    assert wall.spent() and not cpu.spent()
    _burn_cpu(0.06)
    assert cpu.spent()
    assert "0.05 s CPU; used" in cpu.describe()


def test_budget_stop_ends_fit_after_a_batch_and_still_validates():
    x, y = np.zeros((64, 4), "float32"), np.zeros((64, 1), "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    batches = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: batches.append(b))
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=5,
        validation_data=(x, y),
        verbose=0,
        callbacks=[BudgetStop(Budget(wall_s=1e-6)), counter],
    )
    assert history.epoch == [0] and batches == [0]
    assert "val_loss" in history.history


@pytest.mark.slow
def test_budget_stopped_run_is_evaluated_and_the_same_command_continues_it(pcam_data, tmp_path):
    cfg = validation.validate(
        train_config.TrainConfig(
            model="baseline",
            data_dir=str(pcam_data["tfds"]),
            model_dir=str(tmp_path),
            epochs=3,
            batch_size=16,
            steps_per_epoch=2,
            augment="none",
            max_minutes=1e-6,
            verbose="0",
        )
    )
    restart.write_config(cfg)
    loop.run(cfg)
    state = json.loads((tmp_path / run_folder.STATE_DIR / run_folder.STATE_FILE).read_text())
    assert (state["epoch"], state["phase_done"]) == (1, False)
    assert (tmp_path / "metrics.json").exists()  # evaluated with the best weights so far
    loop.run(train_config.TrainConfig(**{**cfg.__dict__, "max_minutes": None}))
    state = json.loads((tmp_path / run_folder.STATE_DIR / run_folder.STATE_FILE).read_text())
    assert (state["epoch"], state["phase_done"]) == (3, True)


def _func_graphs() -> int:
    return sum(type(o).__name__ == "FuncGraph" for o in gc.get_objects())


@pytest.mark.slow
def test_search_stops_at_its_budget_and_trials_leave_no_graphs_behind(pcam_data, tmp_path, monkeypatch):
    common = dict(
        data_dir=str(pcam_data["tfds"]),
        space="seed",
        epochs=2,
        steps_per_epoch=2,
        batch_size=8,
        augment="none",
        shuffle_buffer=64,
        verbose="0",
        max_trials=3,
    )
    gc.collect()
    graphs_before = _func_graphs()
    before = memory.custom_gradient_names()
    records = search.run_search(tune_config.validate(tune_config.TuneConfig.of(str(tmp_path / "a"), **common)))
    assert [r["status"] for r in records] == ["COMPLETED"] * 3
    # TensorFlow registers a custom gradient per traced train step and would keep each trial's graph.
    assert memory.custom_gradient_names() == before
    gc.collect()
    assert _func_graphs() == graphs_before

    class SpentAfterFirstCheck(Budget):  # the first trial starts, and its first batch spends the budget
        checks = 0

        def spent(self):
            self.checks += 1
            return self.checks > 1

    monkeypatch.setattr(Budget, "from_minutes", lambda wall, cpu: SpentAfterFirstCheck(wall_s=60 * wall))
    budgeted = tune_config.validate(tune_config.TuneConfig.of(str(tmp_path / "b"), max_minutes=60, **common))
    [trial] = search.run_search(budgeted)
    assert trial["status"] == "COMPLETED" and trial["epochs"] == 1  # stopped after a batch, validated, no 2nd trial
