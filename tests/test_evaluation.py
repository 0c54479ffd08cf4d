"""Evaluation: thresholds and calibration metrics with exact values, temperature scaling, DeLong's test,
Grad-CAM where the answer is known, the labels CSV's errors, `trainer.inference.evaluate` against predict + scikit-learn
on a folder, on a TFDS split and as an ensemble, and compare. The metrics against scikit-learn: test_metrics.py."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from cli_runs import run_module
from sklearn import metrics as skm

from trainer.config import train_config
from trainer.evaluation import compare, files, metrics
from trainer.inference import calibration, evaluate

LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
SCORES = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_thresholds_and_calibration_metrics_have_exact_values():
    # Youden's J is 0.75 at 0.7 (tpr 0.75, fpr 0) and at 0.4 (tpr 1, fpr 0.25): the first, 0.7, wins.
    assert metrics.youden_threshold(LABELS, SCORES) == pytest.approx(0.7)
    # F1: 0.889 at 0.4 (tp 4, fp 1), 0.857 at 0.7, 0.8 at 0.3.
    assert metrics.f1_threshold(LABELS, SCORES) == pytest.approx(0.4)
    m = metrics.compute_metrics(LABELS, SCORES)
    assert m["average_precision"] == pytest.approx(0.25 * (1 + 1 + 1 + 0.8))
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.09 + 0.36 + 0.36 + 0.09 + 0.04 + 0.01) / 8)
    assert m["ece"] == pytest.approx(2.4 / 8)  # every score in its own bin: the mean |label - score|
    assert m["at_threshold"]["youden"] == {
        "threshold": pytest.approx(0.7),
        "accuracy": 0.875,
        "precision": 1.0,
        "recall": 0.75,
        "f1": pytest.approx(6 / 7),
        "specificity": 1.0,
        "confusion_matrix": [[4, 0], [1, 3]],
    }
    assert m["at_threshold"]["f1"]["confusion_matrix"] == [[3, 1], [0, 4]]
    assert m["at_threshold"]["0.5"]["accuracy"] == m["accuracy"] == 0.75
    # Given thresholds are applied, not re-chosen.
    given = metrics.compute_metrics(LABELS, SCORES, thresholds={"youden": 0.35})
    assert given["at_threshold"]["youden"]["confusion_matrix"] == [[3, 1], [0, 4]]
    assert "given" in given["thresholds_source"]


def test_a_refit_runs_validation_thresholds_are_not_reused(tmp_path):
    from trainer.inference import predict

    m = {**metrics.compute_metrics(LABELS, SCORES), "held_out": True}
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    assert predict.hard_label_threshold("youden", str(tmp_path), calibrated=False) == pytest.approx(0.7)
    assert evaluate._run_thresholds([str(tmp_path)]) == {"youden": pytest.approx(0.7), "f1": pytest.approx(0.4)}
    # A --refit run trained on its validation split: thresholds chosen there would flatter it.
    (tmp_path / "metrics.json").write_text(json.dumps({**m, "held_out": False}))
    with pytest.raises(
        ValueError,
        match="is a --refit run: its thresholds were chosen on validation patches it trained on; give --hard_labels a number",
    ):
        predict.hard_label_threshold("youden", str(tmp_path), calibrated=False)
    assert predict.hard_label_threshold("0.3", str(tmp_path), calibrated=False) == 0.3
    assert evaluate._run_thresholds([str(tmp_path)]) == {}
    # A held-out run that recorded no thresholds (an older run): a number works, a name is refused by name.
    (tmp_path / "metrics.json").write_text(json.dumps({"roc_auc": 0.9}))
    assert calibration.validation_thresholds(tmp_path) == {}
    with pytest.raises(ValueError, match="metrics.json has no f1 threshold"):
        predict.hard_label_threshold("f1", str(tmp_path), calibrated=False)
    with pytest.raises(FileNotFoundError, match="--refit runs, which trained on validation"):
        calibration.read_temperature(tmp_path)
    # Evaluating on a split one of the runs trained on says so (metrics.json held_out, the titles).
    refit = train_config.TrainConfig(model="baseline", data_dir="/d", model_dir=str(tmp_path), refit=True)
    (tmp_path / "config.json").write_text(refit.to_json())
    (tmp_path / "other").mkdir()
    assert evaluate._trained_splits([str(tmp_path / "other")]) == {"train"}
    assert evaluate._trained_splits([str(tmp_path / "other"), str(tmp_path)]) == {"train", "validation"}


def test_ece_of_a_calibrated_bin_is_zero_and_of_a_wrong_one_its_gap():
    assert metrics.expected_calibration_error([0, 0, 0, 1], [0.25] * 4) == pytest.approx(0.0)
    assert metrics.expected_calibration_error([1, 1, 1, 1], [0.25] * 4) == pytest.approx(0.75)
    assert metrics.expected_calibration_error([1], [1.0]) == pytest.approx(0.0)  # 1.0 falls in the last bin


def test_temperature_scaling_fixes_an_over_confident_model_and_keeps_auc():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.02, 0.98, 4000)
    labels = (rng.uniform(size=truth.size) < truth).astype(int)
    over_confident = 1 / (1 + np.exp(-3.0 * calibration.logit(truth)))  # logits 3x too large
    temperature = calibration.fit_temperature(labels, over_confident)
    assert temperature == pytest.approx(3.0, rel=0.15)
    scaled = calibration.apply_temperature(over_confident, temperature)
    before, after = metrics.calibration_metrics(labels, over_confident), metrics.calibration_metrics(labels, scaled)
    assert after["log_loss"] < before["log_loss"] - 0.05 and after["ece"] < before["ece"]
    assert skm.roc_auc_score(labels, scaled) == pytest.approx(skm.roc_auc_score(labels, over_confident), abs=1e-12)
    with pytest.raises(ValueError, match="both labels"):
        calibration.fit_temperature([1, 1], [0.2, 0.9])


def test_delong_agrees_with_sklearn_and_detects_a_real_difference():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 600)
    good = labels + rng.normal(0, 0.6, labels.size)
    poor = labels + rng.normal(0, 2.0, labels.size)
    same = metrics.delong_paired(labels, good, good)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0
    test = metrics.delong_paired(labels, good, poor)
    assert test["auc_a"] == pytest.approx(skm.roc_auc_score(labels, good))
    assert test["auc_b"] == pytest.approx(skm.roc_auc_score(labels, poor))
    assert test["difference"] > 0 and test["p_value"] < 0.05
    lo, hi = test["difference_ci95"]
    assert lo < test["difference"] < hi and lo > 0


def _fake_run(folder, labels, scores, name):
    folder.mkdir(parents=True)
    ids = [f"id{i:04d}" for i in range(len(labels))]
    files.write_predictions(folder / "val_predictions.csv", ids, labels, scores)
    (folder / "metrics.json").write_text(json.dumps({**metrics.compute_metrics(labels, scores), "model": name}))


def test_compare_tests_runs_pairwise_and_skips_folders_that_are_not_runs(tmp_path):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 400)
    _fake_run(tmp_path / "runs" / "good", labels, 1 / (1 + np.exp(-(labels * 2 - 1 + rng.normal(0, 0.7, 400)))), "cnn")
    _fake_run(tmp_path / "runs" / "poor", labels, 1 / (1 + np.exp(-(labels * 2 - 1 + rng.normal(0, 3, 400)))), "cnn")
    (tmp_path / "runs" / "tune_hb").mkdir()
    (tmp_path / "runs" / "tune_hb" / "trials.json").write_text("{}")
    result = compare.compare(sorted(str(p) for p in (tmp_path / "runs").iterdir()), str(tmp_path / "out"))
    assert [r["label"] for r in result["runs"]] == ["cnn (good)", "cnn (poor)"]
    (test,) = result["paired_tests"]
    assert test["a"] == "cnn (good)" and test["p_value"] < 0.05 and test["difference"] > 0
    assert result["skipped"] and "tune_hb" in result["skipped"][0]
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == result
    assert "Skipped (not runs)" in (tmp_path / "out" / "results.md").read_text()
    proc = run_module(
        "trainer.evaluation.compare",
        *(str(p) for p in sorted((tmp_path / "runs").iterdir())),
        f"--output_dir={tmp_path / 'cli'}",
        timeout=300,
    )
    assert "skipped" in proc.stderr and (tmp_path / "cli" / "results.md").exists()


@pytest.mark.slow
def test_gradcam_looks_at_the_centre_where_the_label_is_decided():
    import keras

    from pcam_tfds import synthetic
    from trainer import models
    from trainer.inference import explain

    keras.utils.set_random_seed(0)
    patches = [synthetic.draw_patch(5, "train", i) for i in range(768)]
    x = np.stack([p for p, _ in patches]).astype(np.float32)
    y = np.array([label for _, label in patches], np.float32)[:, None]
    # Inputs normalised per channel (--channel_stats): from 0..1 pixels the baseline can sit at chance for
    # several epochs first, and how many depends on the CPU's kernels (AVX-512 or not).
    stats = (x.mean(axis=(0, 1, 2)).tolist(), x.std(axis=(0, 1, 2)).tolist())
    model = models.build("baseline", input_shape=(96, 96, 3), dropout=0.1, channel_stats=stats)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    probs = model.predict(x, verbose=0).ravel()
    assert skm.roc_auc_score(y.ravel(), probs) > 0.9, "the model must separate the classes for this check"
    positives = x[(y.ravel() == 1) & (probs > 0.5)][:64]
    heat = explain.GradCam(model)(positives)
    assert heat.shape == positives.shape[:3] and heat.min() >= 0.0 and heat.max() <= 1.0
    centre = np.zeros((96, 96), bool)
    centre[32:64, 32:64] = True
    per_pixel_centre = heat[:, centre].mean()
    per_pixel_border = heat[:, ~centre].mean()
    assert per_pixel_centre > 1.5 * per_pixel_border


@pytest.mark.slow
def test_evaluate_on_a_folder_matches_predict_and_sklearn(baseline_run, pcam_data, tmp_path):
    kaggle = pcam_data["kaggle"]
    labels_csv = tmp_path / "labels.csv"
    with open(kaggle / "train_labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if (kaggle / "train" / f"{r['id']}.tif").exists()]
    readable = []
    from pcam_tfds.core import patches

    for r in rows:
        try:
            patches.read_patch(str(kaggle / "train" / f"{r['id']}.tif"))
            readable.append(r)
        except Exception:  # the synthetic layout may hold deliberately broken files
            continue
    folder = tmp_path / "patches"
    folder.mkdir()
    for r in readable:
        (folder / f"{r['id']}.tif").symlink_to(kaggle / "train" / f"{r['id']}.tif")
    with open(labels_csv, "w") as f:
        f.write("id,label\n" + "".join(f"{r['id']},{r['label']}\n" for r in readable))
    run_module(
        "trainer.inference.evaluate",
        f"--model_dir={baseline_run}",
        f"--input_dir={folder}",
        f"--labels={labels_csv}",
        f"--output_dir={tmp_path / 'eval'}",
    )
    run_module(
        "trainer.inference.predict",
        f"--model_dir={baseline_run}",
        f"--input_dir={folder}",
        f"--output={tmp_path / 'sub.csv'}",
    )
    with open(tmp_path / "sub.csv") as f:
        probs = {r["id"]: float(r["label"]) for r in csv.DictReader(f)}
    truth = {r["id"]: int(r["label"]) for r in readable}
    ids = sorted(truth)
    expected = skm.roc_auc_score([truth[i] for i in ids], [probs[i] for i in ids])
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    with open(tmp_path / "eval" / "predictions.csv") as f:
        evaluated = {r["id"]: float(r["probability"]) for r in csv.DictReader(f)}
    assert evaluated == pytest.approx(probs, abs=2e-6)  # the same predictions, both written to 6 decimals
    # The submission's rounding to 6 decimals can tie near-equal scores; evaluate scores the unrounded ones.
    assert m["roc_auc"] == pytest.approx(expected, abs=2e-3)
    assert m["num_examples"] == len(ids) and str(folder) in m["set"]
    validation = json.loads((baseline_run / "metrics.json").read_text())["at_threshold"]
    assert m["at_threshold"]["youden"]["threshold"] == validation["youden"]["threshold"]  # chosen on validation
    for name in ("error_gallery.png", "gradcam_gallery.png", "reliability.png", "precision_recall.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:4] == b"\x89PNG", name
    hard = run_module(
        "trainer.inference.predict",
        f"--model_dir={baseline_run}",
        f"--input_dir={folder}",
        "--hard_labels=youden",
        "--calibrate",
        f"--output={tmp_path / 'hard.csv'}",
    )
    assert "0/1 labels" in hard.stdout
    with open(tmp_path / "hard.csv") as f:
        assert {r["label"] for r in csv.DictReader(f)} <= {"0", "1"}
    missing = run_module(
        "trainer.inference.predict",
        f"--model_dir={baseline_run}",
        f"--input_dir={folder}",
        f"--output={tmp_path / 'no' / 'such' / 'sub.csv'}",
        check=False,
    )
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("name,label\na,1\n", ": expected a header with the columns id and label, got name,label"),
        ("", ": expected a header with the columns id and label, got an empty file"),
        ("id,label\na,1\nb,2\n", " line 3: label '2' of id 'b' is not 0 or 1"),
        ("id,label\na,1\nb\n", " line 3: label '' of id 'b' is not 0 or 1"),
        ("id,label\na,1\n,0\n", " line 3: the id is empty"),
        ("id,label\na,1\nb,0\na,0\n", " line 4: id 'a' appears twice (first on line 2)"),
        ("id,label\n", ": no rows under the header"),
    ],
    ids=["no-label-column", "empty", "bad-label", "short-row", "empty-id", "duplicate", "no-rows"],
)
def test_a_bad_labels_csv_names_the_file_the_line_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        files.read_labels_csv(str(path))
    assert str(info.value) == f"{path}{problem}"


def test_a_labels_csv_may_have_a_byte_order_mark_spaces_and_other_columns(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("\ufeffid , label,note\n a ,1,x\nb, 0 ,\n", encoding="utf-8")
    assert files.read_labels_csv(str(path)) == {"a": 1, "b": 0}
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none.csv'}: no such labels file"):
        files.read_labels_csv(str(tmp_path / "none.csv"))


@pytest.mark.slow
def test_evaluate_on_a_tfds_split_reproduces_the_runs_own_report(baseline_run, pcam_data, tmp_path):
    out = tmp_path / "eval"
    run_module(
        "trainer.inference.evaluate",
        f"--model_dir={baseline_run}",
        f"--data_dir={pcam_data['tfds']}",
        "--split=validation",
        f"--output_dir={out}",
    )
    # The same model on the same split as the trainer's own report, so the same predictions, in predictions.csv
    # (an evaluation's name for them, even of the validation split).
    assert not (out / "val_predictions.csv").exists()
    with open(out / "predictions.csv") as f:
        evaluated = {r["id"]: (r["label"], float(r["probability"])) for r in csv.DictReader(f)}
    with open(baseline_run / "val_predictions.csv") as f:
        trained = {r["id"]: (r["label"], float(r["probability"])) for r in csv.DictReader(f)}
    assert evaluated.keys() == trained.keys()
    assert all(evaluated[i][0] == trained[i][0] for i in trained)
    assert [evaluated[i][1] for i in trained] == pytest.approx([trained[i][1] for i in trained], abs=2e-6)
    m = json.loads((out / "metrics.json").read_text())
    run = json.loads((baseline_run / "metrics.json").read_text())
    assert set(run) - {"calibration"} <= set(m)  # the keys a run's metrics.json has, as before
    assert m["roc_auc"] == pytest.approx(run["roc_auc"], abs=1e-3)
    assert m["set"] == f"pcam/full:validation ({pcam_data['tfds']})" and m["held_out"] is True
    assert m["model_dirs"] == [str(baseline_run)] and (m["tta"], m["calibrated"]) == (False, False)
    assert m["at_threshold"]["youden"]["threshold"] == run["at_threshold"]["youden"]["threshold"]
    assert "given" in m["thresholds_source"]
    for name in ("error_gallery.png", "gradcam_gallery.png", "reliability.png", "roc_curve.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name


def _shifted_copy(run_dir, folder, shift: float):
    """A second run folder: the run's model with `shift` added to the output layer's bias (other predictions)."""
    from trainer.inference import probabilities

    folder.mkdir()
    for name in ("config.json", "calibration.json"):
        (folder / name).write_bytes((run_dir / name).read_bytes())
    model = probabilities.load_model(str(run_dir))
    kernel, bias = model.get_layer("probability").get_weights()
    model.get_layer("probability").set_weights([kernel, bias + shift])
    model.save(str(folder / "model.keras"))


@pytest.mark.slow
def test_an_ensemble_averages_the_runs_and_writes_metrics_json_once(baseline_run, pcam_data, tmp_path, monkeypatch):
    from trainer import data
    from trainer.evaluation import report
    from trainer.inference import probabilities

    other = tmp_path / "other"
    _shifted_copy(baseline_run, other, 0.5)
    runs = [str(baseline_run), str(other)]
    writes = []
    real_write = report.atomic_write_text
    monkeypatch.setattr(
        report, "atomic_write_text", lambda path, text: (writes.append(path.name), real_write(path, text))
    )
    config = evaluate.EvaluateConfig(
        tuple(runs), str(tmp_path / "eval"), data_dir=str(pcam_data["tfds"]), batch_size=64
    )
    m = evaluate.evaluate_runs(config)
    assert writes.count("metrics.json") == 1
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert m["model"] == "ensemble of 2" and m["model_dirs"] == runs
    assert list(m["at_threshold"]) == ["0.5"]  # an ensemble has no validation thresholds of its own
    assert (tmp_path / "eval" / "error_gallery.png").exists()
    assert not (tmp_path / "eval" / "gradcam_gallery.png").exists()  # Grad-CAM is of one model
    # The mean of the two runs' probabilities, patch by patch.
    builder = data.load_builder(str(pcam_data["tfds"]), "pcam/full")
    alone = []
    for d in runs:
        ds = data.eval_dataset(data.split_files(builder, "validation"), 64, with_ids=True)
        alone.append(probabilities.predict_batches([probabilities.load_model(d)], ds.as_numpy_iterator()))
    assert alone[0][0] == alone[1][0] and not np.allclose(alone[0][2], alone[1][2])
    _, _, ensemble = files.read_predictions(tmp_path / "eval" / "predictions.csv")
    np.testing.assert_allclose(ensemble, (alone[0][2] + alone[1][2]) / 2, atol=2e-6)
    with pytest.raises(ValueError, match="split 'test' of pcam/full is unlabelled"):
        evaluate.evaluate_runs(dataclasses.replace(config, output_dir=str(tmp_path / "test"), split="test"))


def test_evaluate_config_refuses_impossible_combinations():
    good = evaluate.EvaluateConfig(("runs/a",), "out", data_dir="tfds")
    assert good.check() is good
    cases = [
        (dataclasses.replace(good, model_dirs=()), "--model_dir: give at least one"),
        (dataclasses.replace(good, input_dir="patches", labels_csv="l.csv"), "give either --input_dir"),
        (dataclasses.replace(good, data_dir=None), "give either --input_dir"),
        (dataclasses.replace(good, data_dir=None, input_dir="patches"), "--input_dir needs --labels"),
        (dataclasses.replace(good, batch_size=0), "--batch_size=0 must be > 0"),
    ]
    for config, message in cases:
        with pytest.raises(ValueError, match=message):
            config.check()
