"""Shared fixtures: the real data in ../shared (optional), a tiny built `pcam` dataset and one finished run
per session for the trainer tests, and a simulated crash for the resume tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import REPO, run_module

SHARED_ENV = "PCAM_SHARED_DATA"
NUM_TRAIN, NUM_TEST, SEED = 96, 24, 3


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data), which `.ci/run` points PCAM_SHARED_DATA at."""
    root = os.environ.get(SHARED_ENV)
    if not root:
        pytest.skip(f"{SHARED_ENV} is not set: the real PCam files are not available in this clone")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"{SHARED_ENV}={root} is not a folder")
    return path


@pytest.fixture(scope="session")
def pcam_data(tmp_path_factory) -> dict[str, Path]:
    """{"kaggle": Kaggle-layout folder, "tfds": TFDS data dir with pcam/full built from it}, built the way users
    build it (`tfds build`, the local executor); tests/test_executors.py keeps the Beam path's dataset the same."""
    from pcam_tfds import synthetic

    root = tmp_path_factory.mktemp("trainer_pcam")
    kaggle, tfds_dir = root / "kaggle", root / "tfds"
    synthetic.write_layout(str(kaggle), NUM_TRAIN, NUM_TEST, SEED)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "tfds"),
            "build",
            "pcam_tfds/pcam",
            f"--manual_dir={kaggle}",
            f"--data_dir={tfds_dir}",
            "--config=full",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return {"kaggle": kaggle, "tfds": tfds_dir}


@pytest.fixture(scope="session")
def baseline_run(pcam_data, tmp_path_factory) -> Path:
    """A finished two-epoch baseline run (the command end to end, in a subprocess, as a user runs it); what
    it printed is in stdout.txt and stderr.txt beside the run folder."""
    run_dir = tmp_path_factory.mktemp("trainer_runs") / "baseline"
    proc = run_module(
        "trainer",
        "--model=baseline",
        f"--data_dir={pcam_data['tfds']}",
        f"--model_dir={run_dir}",
        "--epochs=2",
        "--batch_size=16",
        "--verbose=2",
        as_user=True,
    )
    (run_dir.parent / "stdout.txt").write_text(proc.stdout)
    (run_dir.parent / "stderr.txt").write_text(proc.stderr)
    return run_dir


@pytest.fixture
def crash_after():
    """`crash_after(n)`: a Keras callback for `trainer.training.loop.run(config, callbacks=[...])` that stops the run
    like a killed process once its epoch n has ended and been saved: RuntimeError("simulated interruption ...").

    It raises when the next epoch begins or fit() ends, after the trainer's callbacks have written epoch n's state
    (trainer.training.phases.StateCheckpoint writes it then). tests/test_kill_resume.py kills real processes."""
    import keras

    class CrashAfterEpochs(keras.callbacks.Callback):
        def __init__(self, n: int):
            super().__init__()
            self.n = n
            self.ended = 0  # epochs ended, over every phase's fit()

        def on_epoch_end(self, epoch, logs=None):
            self.ended = epoch + 1

        def on_epoch_begin(self, epoch, logs=None):
            self._crash_if_due()

        def on_train_end(self, logs=None):
            self._crash_if_due()

        def _crash_if_due(self):
            if self.ended == self.n:
                raise RuntimeError(f"simulated interruption after epoch {self.n}")

    return CrashAfterEpochs
