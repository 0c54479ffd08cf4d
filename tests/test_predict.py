"""`python -m trainer.inference.predict`: a probability for every test id, ensembles, TTA and loud rejects."""

from __future__ import annotations

import csv

import pytest
from cli_runs import run_module

pytestmark = pytest.mark.slow  # needs the trained baseline run


def _read(path) -> dict[str, float]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["id", "label"]
    return {r["id"]: float(r["label"]) for r in rows}


def _test_ids(pcam_data) -> set[str]:
    return {p.stem for p in (pcam_data["kaggle"] / "test").glob("*.tif")}


def test_predict_from_tfds_ensemble_with_tta(pcam_data, baseline_run, tmp_path):
    from trainer.inference import predict

    out = tmp_path / "submission.csv"
    assert (
        predict.run(
            [
                "--model_dir",
                str(baseline_run),
                str(baseline_run),
                "--tta",
                f"--data_dir={pcam_data['tfds']}",
                f"--output={out}",
            ]
        )
        == 0
    )
    probs = _read(out)
    assert set(probs) == _test_ids(pcam_data)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    single = tmp_path / "single.csv"
    assert predict.run([f"--model_dir={baseline_run}", f"--data_dir={pcam_data['tfds']}", f"--output={single}"]) == 0
    plain = _read(single)
    assert set(plain) == set(probs) and plain != probs  # TTA changes the numbers


def test_predict_from_a_folder_of_tiffs_matches_tfds(pcam_data, baseline_run, tmp_path):
    from trainer.inference import predict

    from_dir, from_tfds = tmp_path / "dir.csv", tmp_path / "tfds.csv"
    assert (
        predict.run(
            [f"--model_dir={baseline_run}", f"--input_dir={pcam_data['kaggle'] / 'test'}", f"--output={from_dir}"]
        )
        == 0
    )
    assert predict.run([f"--model_dir={baseline_run}", f"--data_dir={pcam_data['tfds']}", f"--output={from_tfds}"]) == 0
    a, b = _read(from_dir), _read(from_tfds)
    assert set(a) == set(b) == _test_ids(pcam_data)
    assert max(abs(a[k] - b[k]) for k in a) < 1e-5


def test_unreadable_file_is_reported_not_skipped(pcam_data, baseline_run, tmp_path):
    folder = tmp_path / "test"
    folder.mkdir()
    for p in sorted((pcam_data["kaggle"] / "test").glob("*.tif"))[:5]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    out = tmp_path / "submission.csv"
    proc = run_module(
        "trainer.inference.predict",
        f"--model_dir={baseline_run}",
        f"--input_dir={folder}",
        f"--output={out}",
        check=False,
    )
    assert proc.returncode == 1 and "broken.tif" in proc.stderr and not out.exists()
    proc = run_module(
        "trainer.inference.predict",
        f"--model_dir={baseline_run}",
        f"--input_dir={folder}",
        f"--output={out}",
        "--allow_rejected",
    )
    assert len(_read(out)) == 5
    rejected = (tmp_path / "submission.csv.rejected.csv").read_text()
    assert "broken.tif" in rejected and "1 unreadable" in proc.stderr


def test_predict_needs_a_finished_run(tmp_path, pcam_data):
    proc = run_module(
        "trainer.inference.predict",
        f"--model_dir={tmp_path}",
        f"--data_dir={pcam_data['tfds']}",
        f"--output={tmp_path / 's.csv'}",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2 and "model.keras does not exist" in proc.stderr and "Traceback" not in proc.stderr
