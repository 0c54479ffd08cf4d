"""`python -m trainer` end to end on a tiny built dataset: outputs, resume, flag errors, compare, gpu_check."""

from __future__ import annotations

import csv
import json
import re

import pytest
from cli_runs import run_module

from trainer import run_folder
from trainer.config import restart, train_config, validation
from trainer.evaluation import files
from trainer.training import loop


def _epochs(run_dir) -> list[int]:
    with open(run_dir / run_folder.HISTORY_CSV) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_training_writes_every_output(baseline_run):
    for name in (
        "config.json",
        "model.keras",
        "best.weights.h5",
        "training_log.csv",
        "metrics.json",
        "classification_report.txt",
        "val_predictions.csv",
        "calibration.json",
    ):
        assert (baseline_run / name).stat().st_size > 0, name
    for name in (
        "confusion_matrix.png",
        "learning_curves.png",
        "roc_curve.png",
        "precision_recall.png",
        "reliability.png",
        "error_gallery.png",
        "gradcam_gallery.png",
    ):
        assert (baseline_run / name).read_bytes()[:4] == b"\x89PNG", name
    assert list((baseline_run / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    evaluation = b"".join(p.read_bytes() for p in (baseline_run / "logs" / "evaluation").rglob("events.out.tfevents.*"))
    for tag in (b"validation/pr_curve", b"validation/error_gallery", b"validation/example_patches"):
        assert tag in evaluation, tag
    cfg = train_config.TrainConfig.from_json((baseline_run / "config.json").read_text())
    assert (cfg.model, cfg.epochs, cfg.class_weights, cfg.schedule, cfg.ema) == ("baseline", 2, None, "constant", 0.0)
    assert cfg.mixed_precision in ("off", "bfloat16")  # auto on a CPU: bfloat16 where the CPU has it natively
    m = json.loads((baseline_run / "metrics.json").read_text())
    assert 0.0 <= m["roc_auc"] <= 1.0 and m["roc_auc_ci95"][0] <= m["roc_auc"] <= m["roc_auc_ci95"][1]
    assert sum(map(sum, m["confusion_matrix"])) == m["num_examples"] > 0
    assert set(m["per_class"]) == {"normal", "tumour"} and m["threshold"] == 0.5
    assert "tumour" in (baseline_run / "classification_report.txt").read_text()
    assert _epochs(baseline_run) == [0, 1]
    history = files.read_history(baseline_run / run_folder.HISTORY_CSV)
    assert {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(history)


@pytest.mark.slow
def test_the_command_prints_its_progress_and_result_only(baseline_run):
    # Quiet by default (issue 13): no absl INFO lines, no TensorFlow start-up lines, no Keras warning that the
    # input ran out of data; Keras' per-epoch lines, the phase and the result.
    stderr = (baseline_run.parent / "stderr.txt").read_text().splitlines()
    assert stderr == ["phase train: epochs 1..2, constant schedule peaking at learning rate 0.001"], stderr
    stdout = (baseline_run.parent / "stdout.txt").read_text().splitlines()
    assert stdout[0] == "Epoch 1/2" and stdout[2] == "Epoch 2/2", stdout
    assert all(re.match(r"\d+/\d+ - .* - val_auc: ", line) for line in (stdout[1], stdout[3])), stdout
    assert len(stdout) == 5 and stdout[4].startswith("validation ROC AUC "), stdout
    assert stdout[4].endswith(f"; model, metrics and report in {baseline_run}")


@pytest.mark.slow
def test_verbosity_shows_the_log_lines(pcam_data, tmp_path):
    proc = run_module(
        "trainer",
        "--model=baseline",
        f"--data_dir={pcam_data['tfds']}",
        f"--model_dir={tmp_path}",
        "--epochs=1",
        "--sample_fraction=0.25",
        "--verbosity=0",
        "--seed=0",  # TensorFlow's global seed 0 once failed to trace the record shuffle
        as_user=True,
    )
    assert f"config written to {tmp_path}/config.json" in proc.stderr
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0
    assert "ran out of data" not in proc.stderr  # the sample's batch count is counted, not guessed


@pytest.mark.slow
def test_restart_with_other_flags_is_refused(pcam_data, baseline_run):
    proc = run_module(
        "trainer",
        "--model=baseline",
        f"--data_dir={pcam_data['tfds']}",
        f"--model_dir={baseline_run}",
        "--epochs=5",
        check=False,
    )
    assert proc.returncode == 2 and "epochs: 2 -> 5" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--model=vgg16", "baseline|tuned|resnet50|densenet169"),
        ("--augment=heavy", "dihedral|seed|none"),
        ("--sample_fraction=1.5", "--sample_fraction=1.5 must be in (0, 1]"),
        ("--stain_norm=macenko", "none|reinhard"),
    ],
)
def test_bad_flag_fails_with_a_clear_message(flag, expected, tmp_path):
    args = {
        "--model": "--model=baseline",
        "--data_dir": "--data_dir=/nonexistent",
        "--model_dir": f"--model_dir={tmp_path}",
    }
    args[flag.split("=")[0]] = flag
    proc = run_module("trainer", *args.values(), flag, check=False, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert flag.split("=")[0].lstrip("-") in proc.stderr


def test_helpfull_documents_the_flags():
    proc = run_module("trainer", "--helpfull", check=False, timeout=120)
    for flag in (
        "--model",
        "--augment",
        "--weights",
        "--head_epochs",
        "--unfreeze_layers",
        "--mixed_precision",
        "--jit_compile",
        "--strategy",
        "--hparams",
        "--stain_norm",
        "--class_weights",
        "--steps_per_epoch",
        "--flagfile",
    ):
        assert flag in proc.stdout, flag


@pytest.mark.slow
def test_compare_writes_table_and_roc_plot(baseline_run, tmp_path):
    from trainer.evaluation import compare

    (tmp_path / "runs" / "tuner").mkdir(parents=True)  # not a run: skipped and named
    result = compare.compare(
        [str(baseline_run), str(baseline_run), str(tmp_path / "runs" / "tuner")], str(tmp_path / "out")
    )
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| model | ROC AUC (95% CI) | accuracy | precision | recall | F1 |" in table
    assert table.count("| baseline") == 3  # two rows, and the paired test's row
    assert result["paired_tests"][0]["difference"] == 0.0 and result["paired_tests"][0]["p_value"] == 1.0
    assert len(result["skipped"]) == 1 and "tuner" in result["skipped"][0]
    assert (tmp_path / "out" / "roc_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_gpu_check_measures_input_and_step_on_cpu(tmp_path):
    """Both rates and a verdict, in the table and in --output_json; synthetic records through the real pipeline."""
    out_json = tmp_path / "check.json"
    proc = run_module(
        "trainer.training.gpu_check",
        "--models=baseline",
        "--steps=2",
        "--batch_size=4",
        "--image_size=32",
        "--input_batches=3",
        "--synthetic_records=16",
        "--shuffle_buffer=16",
        "--mixed_precision=off",
        "--jit_compile=on",  # the trainer's auto is off on a CPU; the compiled step is what is timed here
        f"--output_json={out_json}",
    )
    out = proc.stdout
    assert "mixed precision off" in out and "augment dihedral on the host" in out
    assert "input: " in out and "images/s (16 synthetic uint8 records, host augmentation dihedral" in out
    row = next(line for line in out.splitlines() if line.startswith("baseline"))
    assert "float32" in row and "compiled" in row and ("input-bound" in row or "step-bound" in row)
    report = json.loads(out_json.read_text())
    assert report["mixed_precision"] == "off" and report["jit_compile"] is True
    assert report["input"]["images_per_s"] > 0 and report["input"]["augment"] == "dihedral"
    assert report["input"]["dtype"] == "float32"  # the host augmentation gives floats
    (model,) = report["models"]
    assert model["model"] == "baseline" and model["images_per_s"] > 0
    ratio = report["input"]["images_per_s"] / model["images_per_s"]
    assert model["input_to_step"] == pytest.approx(ratio)
    assert model["verdict"] == ("input-bound" if ratio < 1 else "step-bound")
    assert f"{model['verdict']} (input/step {ratio:.2f}x)" in row


def test_gpu_check_flag_errors_are_one_line():
    proc = run_module("trainer.training.gpu_check", "--models=nope", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --models") and "baseline" in proc.stderr


@pytest.mark.slow
def test_two_phase_transfer_run_resumes_in_its_second_phase(pcam_data, tmp_path, crash_after):
    """Interrupted after the first fine-tuning epoch, the restart skips the head phase and finishes phase 2."""
    cfg = validation.validate(
        train_config.TrainConfig(
            model="resnet50",
            data_dir=str(pcam_data["tfds"]),
            model_dir=str(tmp_path),
            weights="none",
            head_epochs=1,
            epochs=2,
            batch_size=8,
            steps_per_epoch=1,
            sample_fraction=0.25,
            unfreeze_layers=10,
            augment="none",
            verbose="0",
        )
    )
    restart.write_config(cfg)
    with pytest.raises(RuntimeError, match="simulated interruption after epoch 2"):
        loop.run(cfg, callbacks=[crash_after(2)])
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert (state["phase_index"], state["epoch"], state["phase_starts"]) == (1, 2, [0, 1])
    loop.run(cfg)
    assert _epochs(tmp_path) == [0, 1, 2]
    assert (tmp_path / "model.keras").exists() and (tmp_path / "metrics.json").exists()


_FLAG_PER_FIELD = """
import dataclasses, json, sys
from absl import flags
import trainer.__main__ as main
from trainer.config.train_config import TrainConfig
main.define_flags(flags.FLAGS)
flags.FLAGS(sys.argv)
missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in flags.FLAGS]
config = main.config_from_flags(flags.FLAGS, gpu=False)
print(json.dumps({"missing": missing, "config": json.loads(config.to_json())}))
"""


def test_every_train_config_field_is_set_by_the_flag_of_its_name():
    """config_from_flags passes each flag on by name (adding an option is a field and its flag): every field has a
    flag, and flags given on the command line reach the config, plain or parsed."""
    import subprocess
    import sys

    from cli_runs import REPO

    argv = [
        "--model=tuned",
        "--data_dir=d",
        "--model_dir=m",
        "--shuffle_buffer=128",
        "--head_epochs=4",
        "--stain_norm=reinhard",
        "--filters=8,16",
        "--class_weights=1,2",
        "--epochs=3",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _FLAG_PER_FIELD, *argv], capture_output=True, text=True, cwd=REPO, check=True
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["missing"] == []
    c = out["config"]
    assert (c["shuffle_buffer"], c["head_epochs"], c["stain_norm"], c["epochs"]) == (128, 4, "reinhard", 3)
    assert c["filters"] == [8, 16] and c["class_weights"] == [1.0, 2.0] and c["model_dir"] == "m"
