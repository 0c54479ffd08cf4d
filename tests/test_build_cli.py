"""`pcam-build` (python -m pcam_tfds.build), run as a user runs it: the dataset `tfds build` writes, with its
progress and result only (issue 13), a reused build said so, and a user's mistake one line with status 2."""

from __future__ import annotations

import os

import pytest
import tensorflow_datasets as tfds
from cli_runs import run_module
from kaggle_folders import make_clean

pytestmark = pytest.mark.slow


def pcam_build(*args: str):
    os.environ.pop("PCAM_VALIDATION_DIR", None)  # the build validates itself
    return run_module("pcam_tfds.build", *args, check=False, as_user=True)


def test_a_build_prints_its_progress_and_result_only(tmp_path):
    kaggle = make_clean(tmp_path / "kaggle", num_train=40, num_test=10)
    data_dir = tmp_path / "tfds"
    proc = pcam_build(f"--manual_dir={kaggle}", f"--data_dir={data_dir}")
    assert proc.returncode == 0, proc.stderr
    full, sample = data_dir / "pcam" / "full" / "2.0.0", data_dir / "pcam" / "sample25" / "2.0.0"
    assert proc.stdout.splitlines() == [
        f"built pcam/full/2.0.0 in {full}: test 10, train 32, validation 8 examples",
        f"built pcam/sample25/2.0.0 in {sample}: test 10, train 8, validation 2 examples",
    ]
    stderr = proc.stderr.splitlines()
    assert stderr[0] == f"building pcam/full/2.0.0 in {full}", stderr
    assert stderr[1].startswith("validated 50 files in ") and stderr[1].endswith(
        f"50 valid, 0 rejected {{}}; listed in {stderr[1].split('listed in ')[1]}"
    )
    assert len(stderr) == 4 and stderr[2] == f"building pcam/sample25/2.0.0 in {sample}", stderr
    # The same dataset as `tfds build` writes (tests/test_tfds_build_cli.py builds that one).
    info = tfds.builder_from_directory(str(full)).info
    assert {name: s.num_examples for name, s in info.splits.items()} == {"train": 32, "validation": 8, "test": 10}


def test_a_built_dataset_is_reused_and_changed_inputs_are_refused(tmp_path):
    kaggle = make_clean(tmp_path / "kaggle", num_train=40, num_test=10)
    args = (f"--manual_dir={kaggle}", f"--data_dir={tmp_path / 'tfds'}", "--config=full")
    assert pcam_build(*args).returncode == 0
    again = pcam_build(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        f"pcam/full/2.0.0 is already built in {tmp_path / 'tfds' / 'pcam' / 'full' / '2.0.0'}; --overwrite rebuilds it"
    ]
    next((kaggle / "test").glob("*.tif")).unlink()
    changed = pcam_build(*args)
    assert changed.returncode == 2 and changed.stderr.startswith("error: ") and "--overwrite" in changed.stderr
    assert len(changed.stderr.splitlines()) == 1, changed.stderr
    rebuilt = pcam_build(*args, "--overwrite")
    assert rebuilt.returncode == 0 and "test 9, train 32" in rebuilt.stdout, rebuilt.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--config=fll",), "error: --config: pcam has no config fll; it has full, sample25"),
        (("--manual_dir=/nonexistent",), "error: --manual_dir=/nonexistent: no such folder"),
    ],
)
def test_mistakes_are_one_line_and_status_2(tmp_path, args, message):
    kaggle = make_clean(tmp_path / "kaggle", num_train=4, num_test=2)
    proc = pcam_build(f"--manual_dir={kaggle}", f"--data_dir={tmp_path / 'tfds'}", *args)
    assert (proc.returncode, proc.stderr.strip()) == (2, message)


def test_a_version_1_validation_is_refused_in_one_line(tmp_path):
    import pyarrow.parquet as pq

    kaggle = make_clean(tmp_path / "kaggle", num_train=4, num_test=2)
    checks = tmp_path / "checks"
    assert run_module("beam_jobs.validate", f"--manual_dir={kaggle}", f"--output_dir={checks}").returncode == 0
    manifest = checks / "manifest.parquet"
    pq.write_table(pq.read_table(manifest).replace_schema_metadata(None), manifest)  # as version 1 wrote it
    os.environ["PCAM_VALIDATION_DIR"] = str(checks)
    try:
        proc = run_module(
            "pcam_tfds.build", f"--manual_dir={kaggle}", f"--data_dir={tmp_path / 'tfds'}", check=False, as_user=True
        )
    finally:
        os.environ.pop("PCAM_VALIDATION_DIR")
    assert proc.returncode == 2, proc.stderr
    building, error = proc.stderr.splitlines()  # the start line, then the refusal
    assert building.startswith("building pcam/full/2.0.0 in "), proc.stderr
    assert error.startswith(f"error: {manifest} is manifest version 1 (blake2b_128 pixel hashes)"), proc.stderr
    assert not (tmp_path / "tfds" / "pcam" / "full" / "2.0.0").exists()
