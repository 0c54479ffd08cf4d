"""Hyperparameter search: the HyperModel's defaults, spaces and overrides; a search, its resume, chief + workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import keras
import keras_tuner
import pytest
from cli_runs import REPO, run_module

from trainer.config import hparams, train_config, validation
from trainer.training import recipe
from trainer.tuning import hypermodel, search, tune_config, tune_reports

SMALL = (32, 32, 3)  # builds fast; 4 blocks still fit
QUICK = ["--epochs=1", "--steps_per_epoch=2", "--batch_size=8", "--augment=none", "--shuffle_buffer=64", "--verbose=0"]


def _convs(model: keras.Model) -> list[int]:
    return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def _tuned_names(hp: keras_tuner.HyperParameters) -> list[str]:
    return [p.name for p in hp.space if not isinstance(p, keras_tuner.engine.hyperparameters.Fixed)]


def test_defaults_build_the_trainers_default_cnn():
    hp = keras_tuner.HyperParameters()
    model = hypermodel.CNNHyperModel(SMALL, "wide").build(hp)
    assert hp.values == hypermodel.DEFAULTS
    assert model.name == "tuned" and model.input_shape == (None, *SMALL)
    assert _convs(model) == [32, 64, 128]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert model.get_layer("dropout").rate == 0.5 and model.get_layer("dense").units == 128
    assert isinstance(model.optimizer, keras.optimizers.Adam) and not isinstance(
        model.optimizer, keras.optimizers.AdamW
    )
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3) and model.optimizer.weight_decay is None
    logs = model.evaluate(
        keras.ops.zeros((2, *SMALL)), keras.ops.convert_to_tensor([[0.0], [1.0]]), verbose=0, return_dict=True
    )
    assert {"loss", "accuracy", "auc"} <= set(logs)


def test_fixed_values_override_the_space():
    hp = keras_tuner.HyperParameters()
    fixed = {
        "learning_rate": 3e-4,
        "dropout": 0.3,
        "width": 16,
        "num_blocks": 2,
        "dense": 64,
        "batch_norm": True,
        "optimizer": "sgd",
        "weight_decay": 1e-4,
    }
    for name, value in fixed.items():
        hp.Fixed(name, value)
    model = hypermodel.CNNHyperModel(SMALL, "wide").build(hp)
    assert hp.values == fixed
    assert _convs(model) == [16, 32]
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)] == [
        "bn1",
        "bn2",
    ]
    assert not model.get_layer("conv1").use_bias  # batch norm makes the bias redundant
    assert model.get_layer("dropout").rate == 0.3 and model.get_layer("dense").units == 64
    opt = model.optimizer
    assert isinstance(opt, keras.optimizers.SGD) and opt.nesterov and opt.momentum == 0.9
    assert float(opt.learning_rate) == pytest.approx(3e-4) and opt.weight_decay == pytest.approx(1e-4)


def test_seed_space_is_the_notebooks_and_wide_space_tunes_seven_names():
    hp = keras_tuner.HyperParameters()
    hypermodel.CNNHyperModel(SMALL, "seed").build(hp)
    assert _tuned_names(hp) == ["learning_rate", "dropout"]
    assert hp.get("learning_rate") == 1e-3 and hp.get("width") == 32 and hp.get("num_blocks") == 3
    space = {p.name: p for p in hp.space}
    assert list(space["learning_rate"].values) == [1e-4, 3e-4, 1e-3]
    assert list(space["dropout"].values) == [0.3, 0.4, 0.5, 0.6, 0.7]  # 0.7 included (Float with step would miss it)

    hp = keras_tuner.HyperParameters()
    hypermodel.CNNHyperModel(SMALL, "wide").build(hp)
    assert _tuned_names(hp) == [
        "learning_rate",
        "dropout",
        "width",
        "num_blocks",
        "batch_norm",
        "optimizer",
        "weight_decay",
    ]
    assert {p.name: p for p in hp.space}["learning_rate"].sampling == "log"
    assert set(hp.values) <= set(hparams.KEYS)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"space": "huge"}, "--space='huge' is unknown; choose one of seed, wide"),
        ({"input_shape": (8, 8, 3)}, "too small for space 'wide'.*at least 16 pixels"),
        ({"input_shape": (32, 32)}, "must be three positive sizes"),
    ],
)
def test_hypermodel_checks_its_facts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hypermodel.CNNHyperModel(**kwargs)


def test_best_hyperparameters_round_trip_into_a_training_config(tmp_path):
    """best_hyperparameters.json -> read_hparams -> TrainConfig -> recipe.build_model: the trial's network."""
    hp = keras_tuner.HyperParameters()
    for name, value in {
        "learning_rate": 3e-4,
        "dropout": 0.6000000000000001,
        "width": 16,
        "num_blocks": 4,
        "batch_norm": True,
        "optimizer": "adamw",
        "weight_decay": 1e-5,
    }.items():
        hp.Fixed(name, value)
    hm = hypermodel.CNNHyperModel(SMALL, "wide")
    trial_model = hm.build(hp)
    hp.values["tuner/epochs"] = 3  # Hyperband's bookkeeping must not reach the file
    path = tmp_path / tune_reports.BEST_HPARAMS
    path.write_text(json.dumps(tune_reports.best_hparams(keras_tuner.engine.trial.Trial(hp), batch_size=32)))
    assert json.loads(path.read_text())["dropout"] == 0.6

    fields = hparams.to_fields(hparams.read(str(path)))
    cfg = validation.validate(train_config.TrainConfig(model="tuned", data_dir="d", model_dir="m", **fields))
    assert (cfg.filters, cfg.batch_norm, cfg.dense, cfg.optimizer, cfg.batch_size) == (
        (16, 32, 64, 128),
        True,
        128,
        "adamw",
        32,
    )
    assert (cfg.learning_rate, cfg.dropout, cfg.weight_decay) == (3e-4, 0.6, 1e-5)
    trained = recipe.build_model(cfg, input_shape=SMALL)
    assert [(w.name, w.shape) for w in trained.weights] == [(w.name, w.shape) for w in trial_model.weights]


def test_restart_with_other_settings_is_refused(tmp_path):
    cfg = tune_config.validate(tune_config.TuneConfig.of(str(tmp_path), "d", space="seed"))
    tune_config.check_and_write_config(cfg)
    tune_config.check_and_write_config(cfg.replace(max_trials=20, data_dir="e"))
    with pytest.raises(ValueError, match="space: 'seed' -> 'wide'"):
        tune_config.check_and_write_config(cfg.replace(space="wide"))
    with pytest.raises(ValueError, match="--executions_per_trial=0 must be >= 1"):
        tune_config.validate(cfg.replace(executions_per_trial=0))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tuner": "grid"}, "--tuner='grid' is not allowed; choose one of random, hyperband, bayesian"),
        ({"tuner_dir": ""}, "--tuner_dir is required"),
        ({"hyperband_factor": 1}, "--hyperband_factor=1 must be >= 2"),
        # What a trial trains with is checked by the trainer's own validation.
        ({"data_dir": ""}, "--data_dir is required"),
        ({"augment": "heavy"}, "--augment='heavy' is not allowed; choose one of hed, dihedral, seed, none"),
        ({"sample_fraction": 1.5}, "--sample_fraction=1.5 must be in (0, 1]"),
        ({"batch_size": 0}, "--batch_size=0 must be > 0"),
        ({"max_cpu_minutes": -1.0}, "--max_cpu_minutes=-1.0 must be > 0"),
        ({"channel_stats": "nope.json"}, "--channel_stats='nope.json': no such file"),
    ],
)
def test_search_settings_are_validated_with_the_trainers_rules(change, message, tmp_path):
    cfg = tune_config.TuneConfig.of(str(tmp_path), "d")
    assert tune_config.validate(cfg) is cfg
    with pytest.raises(ValueError) as info:
        tune_config.validate(cfg.replace(**change))
    assert message in str(info.value)


def test_restart_with_other_channel_statistics_is_refused(tmp_path):
    def stats_file(name, mean):
        path = tmp_path / name
        path.write_text(json.dumps({"groups": {"train": {"patches": 10, "mean": mean, "std": [50.0, 50.0, 50.0]}}}))
        return str(path)

    a, same_values, other = (
        stats_file("a.json", [200.0, 150.0, 200.0]),
        stats_file("b.json", [200.0, 150.0, 200.0]),
        stats_file("c.json", [180.0, 140.0, 190.0]),
    )
    cfg = tune_config.TuneConfig.of(str(tmp_path / "tune"), "d", space="seed", channel_stats=a)
    tune_config.check_and_write_config(cfg)
    tune_config.check_and_write_config(cfg.replace(channel_stats=same_values))
    with pytest.raises(ValueError, match="channel statistics"):
        tune_config.check_and_write_config(cfg.replace(channel_stats=other))
    with pytest.raises(ValueError, match="channel statistics"):
        tune_config.check_and_write_config(cfg.replace(channel_stats=None))
    recorded = json.loads((tmp_path / "tune" / tune_config.TUNE_CONFIG_FILE).read_text())
    assert recorded["channel_stats_values"] == [[200.0, 150.0, 200.0], [50.0, 50.0, 50.0]]


def _trials(tuner_dir) -> list[dict]:
    return json.loads((tuner_dir / tune_reports.TRIALS_JSON).read_text())["trials"]


@pytest.mark.slow
def test_the_p4m_family_searches_widths_in_feature_planes_and_its_best_trains_with_pcam_train(tmp_path):
    """pcam-tune --model=p4m: the space's width counts planes (16 = 2 group channels x 8), its network is invariant,
    and best_hyperparameters.json rebuilds the trial's network with --model=p4m."""
    import numpy as np

    from trainer.models import gconv

    hp = keras_tuner.HyperParameters()
    for name, value in {"width": 16, "num_blocks": 4, "batch_norm": True, "dropout": 0.0}.items():
        hp.Fixed(name, value)
    trial = train_config.TrainConfig(model="p4m", data_dir="d", model_dir="m")
    model = hypermodel.CNNHyperModel(SMALL, "wide", trial_config=trial).build(hp)
    assert model.name == "p4m"
    assert [model.get_layer(f"conv{i}").filters for i in range(1, 5)] == [2, 4, 8, 16]
    x = np.random.default_rng(0).uniform(0, 255, (2, *SMALL)).astype("float32")
    np.testing.assert_allclose(
        model.predict(np.ascontiguousarray(gconv.transform(x, 5, axes=(1, 2))), verbose=0),
        model.predict(x, verbose=0),
        atol=1e-5,
    )
    path = tmp_path / tune_reports.BEST_HPARAMS
    path.write_text(json.dumps(tune_reports.best_hparams(keras_tuner.engine.trial.Trial(hp), batch_size=32)))
    cfg = train_config.resolved(False, model="p4m", data_dir="d", model_dir=str(tmp_path / "run"), hparams=str(path))
    assert cfg.filters == (16, 32, 64, 128) and cfg.batch_norm
    trained = recipe.build_model(cfg, input_shape=SMALL)
    assert [(w.name, w.shape) for w in trained.weights] == [(w.name, w.shape) for w in model.weights]
    assert (
        tune_config.validate(
            tune_config.TuneConfig.of(str(tmp_path / "tune"), "d", model="p4m", space="wide")
        ).trial.model
        == "p4m"
    )


def test_one_trial_search_writes_trials_and_best_hyperparameters(pcam_data, tmp_path):
    cfg = tune_config.validate(
        tune_config.TuneConfig.of(
            str(tmp_path),
            str(pcam_data["tfds"]),
            space="wide",
            max_trials=1,
            epochs=1,
            steps_per_epoch=2,
            batch_size=8,
            augment="none",
            shuffle_buffer=64,
            verbose="0",
        )
    )
    records = search.run_search(cfg)
    assert records == _trials(tmp_path)
    [trial] = records
    assert trial["status"] == "COMPLETED" and 0.0 <= trial["score"] <= 1.0
    assert trial["metrics"]["val_auc"] == trial["score"] and "val_loss" in trial["metrics"]
    assert (trial["epochs"], trial["best_epoch"], trial["tuner_id"]) == (1, 1, "tuner0")
    assert trial["rss_mib"] > 0 and trial["peak_rss_mib"] >= trial["rss_mib"]
    table = (tmp_path / tune_reports.TRIALS_MD).read_text()
    assert (
        "| trial | learning_rate | dropout | width | num_blocks | batch_norm | optimizer | weight_decay | val_auc |"
        in table
    )

    best = hparams.read(str(tmp_path / tune_reports.BEST_HPARAMS))
    assert best == {**{k: trial["hyperparameters"][k] for k in hypermodel.DEFAULTS}, "batch_size": 8}
    fields = hparams.to_fields(best)
    cfg_train = validation.validate(train_config.TrainConfig(model="tuned", data_dir="d", model_dir="m", **fields))
    assert len(cfg_train.filters) == best["num_blocks"] and cfg_train.filters[0] == best["width"]
    # Each trial logs to TensorBoard, with its hyperparameters for the hparams dashboard.
    events = b"".join(p.read_bytes() for p in (tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert b"_hparams_/session_start_info" in events and b"learning_rate" in events


@pytest.mark.slow
def test_interrupted_search_continues_with_the_missing_trials(pcam_data, tmp_path):
    args = [
        "trainer.tuning.tune",
        "--model=tuned",
        f"--data_dir={pcam_data['tfds']}",
        f"--tuner_dir={tmp_path}",
        "--tuner=random",
        "--space=seed",
        *QUICK,
    ]
    run_module(*args, "--max_trials=2")
    first = _trials(tmp_path)
    assert [t["status"] for t in first] == ["COMPLETED"] * 2
    run_module(*args, "--max_trials=3")
    second = _trials(tmp_path)
    assert [t["status"] for t in second] == ["COMPLETED"] * 3
    assert second[:2] == first  # the finished trials were reloaded, not rerun
    assert second[2]["pid"] != first[0]["pid"] == first[1]["pid"]
    # The notebook's space as the best result: the file python -m trainer --hparams reads.
    best = hparams.read(str(tmp_path / tune_reports.BEST_HPARAMS))
    assert best["learning_rate"] in (1e-4, 3e-4, 1e-3) and best["dropout"] in (0.3, 0.4, 0.5, 0.6, 0.7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_shares_the_trials_out_among_two_workers(pcam_data, tmp_path):
    port = str(_free_port())
    cmd = [
        sys.executable,
        "-m",
        "trainer.tuning.tune",
        f"--data_dir={pcam_data['tfds']}",
        f"--tuner_dir={tmp_path}",
        "--tuner=random",
        "--space=wide",
        "--max_trials=4",
        *QUICK,
    ]
    procs = {}
    try:
        for tuner_id in ("chief", "tuner0", "tuner1"):
            env = {
                **os.environ,
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "KERASTUNER_TUNER_ID": tuner_id,
                "KERASTUNER_ORACLE_IP": "127.0.0.1",
                "KERASTUNER_ORACLE_PORT": port,
            }
            procs[tuner_id] = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        # The chief leaves once both workers have been told that no trial is left (it polls every 20 s).
        outputs = {tuner_id: proc.communicate(timeout=400) for tuner_id, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, f"{tuner_id} exited {proc.returncode}:\n{outputs[tuner_id][1][-4000:]}"
    trials = _trials(tmp_path)  # written by the chief
    assert [t["status"] for t in trials] == ["COMPLETED"] * 4
    ran_by = [t["tuner_id"] for t in trials]
    assert set(ran_by) == {"tuner0", "tuner1"}, ran_by
    assert (tmp_path / tune_reports.BEST_HPARAMS).exists()


_SHARED_TRAIN_FLAGS = [
    "--epochs=2",
    "--steps_per_epoch=2",
    "--batch_size=8",
    "--augment=none",
    "--shuffle_buffer=64",
    "--verbose=0",
    "--schedule=cosine",
    "--ema=0.99",
    "--label_smoothing=0.1",
    "--mixed_precision=auto",
    "--jit_compile=off",
]
_PCAM_TRAIN_CONFIG = """
import sys
from absl import flags
import trainer.__main__ as main
main.define_flags(flags.FLAGS)
flags.FLAGS(sys.argv)
print(main.config_from_flags(flags.FLAGS, gpu=False).to_json())
"""


@pytest.mark.slow
def test_a_trial_trains_with_the_recipe_pcam_train_resolves_for_the_same_flags(pcam_data, tmp_path):
    tuner_dir = tmp_path / "search"
    run_module(
        "trainer.tuning.tune", f"--data_dir={pcam_data['tfds']}", f"--tuner_dir={tuner_dir}", "--max_trials=1",
        *_SHARED_TRAIN_FLAGS, timeout=900,
    )  # fmt: skip
    [trial] = _trials(tuner_dir)
    proc = subprocess.run(
        [sys.executable, "-c", _PCAM_TRAIN_CONFIG, "--model=tuned", "--data_dir=d", "--model_dir=m",
         *_SHARED_TRAIN_FLAGS],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    train_config = json.loads(proc.stdout)
    # What the trial's compiled model ran with (read off the model: policy, optimizer, loss), as pcam-train would.
    assert trial["recipe"] == {k: train_config[k] for k in tune_config.RECIPE_FIELDS}
    assert trial["recipe"]["schedule"] == "cosine" and trial["recipe"]["ema"] == 0.99
    assert trial["status"] == "COMPLETED" and trial["epochs"] == 2


_TUNE_CONFIG = """
import sys
from absl import flags
import trainer.tuning.tune as tune
tune.define_flags(flags.FLAGS)
flags.FLAGS(sys.argv)
print(json.dumps(tune.config_from_flags(flags.FLAGS, gpu=False).record()))
"""


@pytest.mark.parametrize(
    "args, recipe",
    [
        ([], ("cosine", 0.999, 0.1)),  # pcam-train's default recipe: a time budget's
        (["--ema=0", "--label_smoothing=0.05"], ("cosine", 0.0, 0.05)),
        (["--schedule=cosine"], ("cosine", 0.0, 0.0)),  # as pcam-train resolves --schedule=cosine
        (["--schedule=constant"], ("constant", 0.0, 0.0)),
    ],
)
def test_trials_train_with_pcam_trains_default_recipe_unless_told_otherwise(args, recipe):
    """A search's trials by default train as pcam-train does by default (the budget recipe), so the learning rate
    it picks was measured under the schedule, average and smoothing it will be used with."""
    proc = subprocess.run(
        [sys.executable, "-c", "import json" + _TUNE_CONFIG, "--tuner_dir=t", "--data_dir=d", *args],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (record["schedule"], record["ema"], record["label_smoothing"]) == recipe


def test_a_search_recorded_before_trials_held_a_train_config_continues(tmp_path):
    """tune_config.json as the flat TuneConfig of earlier versions wrote it: the same flags continue the search."""
    cfg = tune_config.validate(tune_config.TuneConfig.of(str(tmp_path), "d", space="seed"))
    old = {
        "augment": "dihedral",
        "batch_size": 64,
        "channel_stats": None,
        "channel_stats_values": None,
        "data_dir": "d",
        "dataset": "pcam/full",
        "epochs": 5,
        "executions_per_trial": 1,
        "hyperband_factor": 3,
        "max_cpu_minutes": None,
        "max_minutes": None,
        "max_trials": 10,
        "model": "tuned",
        "sample_fraction": 1.0,
        "seed": 42,
        "shuffle_buffer": 8192,
        "space": "seed",
        "steps_per_epoch": None,
        "tuner": "random",
        "tuner_dir": str(tmp_path),
        "verbose": "auto",
    }  # before the recipe fields too: schedule, ema and label_smoothing count as constant, 0, 0
    path = tmp_path / tune_config.TUNE_CONFIG_FILE
    path.write_text(json.dumps(old))
    tune_config.check_and_write_config(cfg, write=False)
    with pytest.raises(ValueError, match="epochs: 5 -> 9"):
        tune_config.check_and_write_config(cfg.replace(epochs=9), write=False)
    with pytest.raises(ValueError, match="ema: 0.0 -> 0.999"):
        tune_config.check_and_write_config(cfg.replace(ema=0.999), write=False)
