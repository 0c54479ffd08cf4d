"""The serving export: a SavedModel that TensorFlow alone loads, uint8 in, the run's probabilities out."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cli_runs import run_module


@pytest.mark.slow
def test_saved_model_agrees_with_model_keras(baseline_run, tmp_path):
    out = tmp_path / "export" / "1"
    proc = run_module(
        "trainer.inference.export", f"--model_dir={baseline_run}", f"--output_dir={out}"
    )  # raw: the default
    assert "serving_default" in proc.stdout
    # Loaded in a fresh interpreter with TensorFlow alone (no project code on the path).
    script = f"""
import json, numpy as np, tensorflow as tf
fn = tf.saved_model.load({str(out)!r}).signatures["serving_default"]
spec = fn.structured_input_signature[1]["images"]
images = np.random.default_rng(0).integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
print(json.dumps({{"dtype": spec.dtype.name, "shape": spec.shape.as_list(),
                   "p": fn(images=tf.constant(images))["probability"].numpy().tolist()}}))
"""
    loaded = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True, cwd="/")
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["dtype"] == "uint8" and result["shape"] == [None, 96, 96, 3]
    import tensorflow as tf

    from trainer.inference import probabilities

    images = np.random.default_rng(0).integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
    # model.keras run as a graph, as the SavedModel runs (a bfloat16 model rounds differently when eager).
    expected = probabilities.make_predict_fn([probabilities.load_model(str(baseline_run))], tta=False)(
        tf.cast(images, tf.float32)
    ).numpy()
    np.testing.assert_allclose(result["p"], expected, atol=1e-5)
    info = json.loads((out / "export.json").read_text())
    assert info["input"] == {"name": "images", "dtype": "uint8", "shape": [None, 96, 96, 3]}
    assert info["temperature"] is None


@pytest.mark.slow
def test_calibrated_export_applies_the_temperature(baseline_run, tmp_path):
    import tensorflow as tf

    from trainer.inference import calibration, probabilities

    out = tmp_path / "calibrated"
    run_module("trainer.inference.export", f"--model_dir={baseline_run}", f"--output_dir={out}", "--calibrate")
    temperature = calibration.read_temperature(str(baseline_run))
    images = np.random.default_rng(1).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    served = tf.saved_model.load(str(out)).signatures["serving_default"](images=tf.constant(images))["probability"]
    raw = probabilities.make_predict_fn([probabilities.load_model(str(baseline_run))], tta=False)(
        tf.cast(images, tf.float32)
    )
    np.testing.assert_allclose(served.numpy(), calibration.apply_temperature(raw.numpy(), temperature), atol=1e-5)
    again = run_module("trainer.inference.export", f"--model_dir={baseline_run}", f"--output_dir={out}", check=False)
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.slow
def test_an_export_appears_whole_or_not_at_all(baseline_run, tmp_path, monkeypatch):
    """Written beside its folder and renamed into place: a failure leaves no version folder and no partial one,
    so TensorFlow Serving never loads half an export and the same command runs again."""
    import tensorflow as tf

    from trainer.inference import export

    def fail_after_writing(module, path, signatures):
        tf.io.gfile.makedirs(path)
        open(f"{path}/saved_model.pb", "wb").close()
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", fail_after_writing)
    with pytest.raises(OSError, match="disk full"):
        export.export(str(baseline_run), str(tmp_path / "pcam" / "1"))
    assert list((tmp_path / "pcam").iterdir()) == []
    monkeypatch.undo()
    info = export.export(str(baseline_run), str(tmp_path / "pcam" / "1"))
    assert sorted(p.name for p in (tmp_path / "pcam").iterdir()) == ["1"]
    assert (tmp_path / "pcam" / "1" / "saved_model.pb").exists() and info["model"]
    assert json.loads((tmp_path / "pcam" / "1" / "config.json").read_text())["spacing_um_px"] == 0.972
