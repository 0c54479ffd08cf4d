"""A run is a function of its seed on CPU: the input pipeline per epoch, two identical searches, a kill and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainer import data, determinism, run_folder
from trainer.config import train_config, validation
from trainer.evaluation import files as evaluation_files
from trainer.training import loop
from trainer.tuning import search, tune_config


def _images(ds, batches=3) -> np.ndarray:
    return np.concatenate([images.numpy() for images, _ in ds.take(batches)])


@pytest.mark.slow
@pytest.mark.parametrize("repeat", [False, True], ids=["one_pass_per_epoch", "endless_stream"])
def test_each_epoch_is_a_function_of_seed_and_epoch(pcam_data, repeat):
    builder = data.load_builder(str(pcam_data["tfds"]), "pcam/full")
    files = data.split_files(builder, "train")
    clock = determinism.EpochClock(seed=5)
    kwargs = {"repeat": True, "steps_per_epoch": 2} if repeat else {}

    def make():
        return data.train_dataset(files, 8, seed=5, shuffle_buffer=32, epoch=clock.epoch, **kwargs)

    ds = make()
    clock.epoch.assign(0)
    first = _images(ds)
    clock.epoch.assign(1)
    second = _images(ds)
    clock.epoch.assign(0)
    np.testing.assert_array_equal(_images(ds), first)  # the same epoch again, in the same order, same augmentation
    assert not np.array_equal(first, second)  # another epoch, another order and augmentation
    clock.epoch.assign(1)
    np.testing.assert_array_equal(_images(make()), second)  # a fresh pipeline (a resumed run) started at epoch 1
    if repeat:  # ...is the continuation of the stream started at epoch 0
        clock.epoch.assign(0)
        stream = iter(ds)
        for _ in range(2):
            next(stream)
        np.testing.assert_array_equal(np.concatenate([next(stream)[0].numpy() for _ in range(3)]), second)


@pytest.mark.slow
def test_two_identical_searches_give_identical_trial_scores(pcam_data, tmp_path):
    def search_in(folder):
        cfg = tune_config.validate(
            tune_config.TuneConfig.of(
                str(folder),
                str(pcam_data["tfds"]),
                space="wide",
                max_trials=2,
                epochs=2,
                steps_per_epoch=2,
                batch_size=8,
                augment="dihedral",
                shuffle_buffer=64,
                verbose="0",
            )
        )
        return [(t["hyperparameters"], t["metrics"]) for t in search.run_search(cfg)]

    first, second = search_in(tmp_path / "a"), search_in(tmp_path / "b")
    assert len(first) == 2
    assert first == second  # bit for bit: every trial's hyperparameters, val_auc, val_loss, ...


def _without_paths(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in ("model_dir", "model_dirs")}


@pytest.mark.slow
def test_a_run_killed_after_epoch_one_and_resumed_ends_as_an_uninterrupted_one(pcam_data, tmp_path, crash_after):
    def config(folder):
        return validation.validate(
            train_config.TrainConfig(
                model="baseline",
                data_dir=str(pcam_data["tfds"]),
                model_dir=str(folder),
                epochs=3,
                batch_size=16,
                augment="dihedral",
                shuffle_buffer=64,
                verbose="0",
            )
        )

    whole, resumed = config(tmp_path / "whole"), config(tmp_path / "resumed")
    loop.run(whole)
    with pytest.raises(RuntimeError, match="simulated interruption after epoch 1"):
        loop.run(resumed, callbacks=[crash_after(1)])
    loop.run(resumed)
    a = evaluation_files.read_history(tmp_path / "whole" / run_folder.HISTORY_CSV)
    b = evaluation_files.read_history(tmp_path / "resumed" / run_folder.HISTORY_CSV)
    assert a.keys() == b.keys() and a["epoch"] == b["epoch"] == [0, 1, 2]
    for column in a:  # CSVLogger writes Python's repr of each float, so equal text is equal bits
        assert a[column] == b[column], column
    metrics = [json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("whole", "resumed")]
    assert _without_paths(metrics[0]) == _without_paths(metrics[1])
