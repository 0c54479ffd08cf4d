"""Shared fixtures of the trainer tests: one tiny built `pcam` dataset and one finished run per session.

Import the fixtures into a test module (`from trainer_fixtures import pcam_data  # noqa: F401`).
Several modules importing them each register their own copy, so the expensive results are cached on
disk under pytest's session base temp folder and built once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUM_TRAIN, NUM_TEST, SEED = 96, 24, 3


def run_module(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m ARGS` in the repo root, output captured; fails the test with stderr when check and rc != 0."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        pytest.fail(f"python -m {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def pcam_data(tmp_path_factory) -> dict[str, Path]:
    """{"kaggle": Kaggle-layout folder, "tfds": TFDS data dir with pcam/full built from it}."""
    root = tmp_path_factory.getbasetemp() / "trainer_pcam"
    kaggle, tfds_dir = root / "kaggle", root / "tfds"
    if not (tfds_dir / "pcam" / "full" / "1.0.0" / "dataset_info.json").exists():
        from pcam_tfds import synthetic

        synthetic.write_layout(str(kaggle), NUM_TRAIN, NUM_TEST, SEED)
        subprocess.run(
            [
                str(Path(sys.executable).parent / "tfds"),
                "build",
                "pcam_tfds/pcam",
                f"--manual_dir={kaggle}",
                f"--data_dir={tfds_dir}",
                "--config=full",
                "--beam_pipeline_options=direct_running_mode=in_memory",
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=600,
        )
    return {"kaggle": kaggle, "tfds": tfds_dir}


@pytest.fixture(scope="session")
def baseline_run(pcam_data, tmp_path_factory) -> Path:
    """A finished two-epoch baseline run (the command end to end, in a subprocess)."""
    run_dir = tmp_path_factory.getbasetemp() / "trainer_runs" / "baseline"
    if not (run_dir / "metrics.json").exists():
        run_module(
            "trainer",
            "--model=baseline",
            f"--data_dir={pcam_data['tfds']}",
            f"--model_dir={run_dir}",
            "--epochs=2",
            "--batch_size=16",
            "--verbose=2",
        )
    return run_dir
