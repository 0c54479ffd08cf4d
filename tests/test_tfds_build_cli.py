"""The `tfds build` commands of README.md, run as a user runs them: the `tfds` CLI in a subprocess.

`tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR` with no `--config` builds every config of `pcam`,
all from the one Kaggle folder, and must exit 0; the HDF5 files are the separate `pcam_hdf5` dataset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from kaggle_folders import make_clean

from pcam_tfds.pcam.pcam_dataset_builder import Builder as PcamBuilder
from pcam_tfds.pcam_hdf5.pcam_hdf5_dataset_builder import Builder as PcamHdf5Builder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TFDS = Path(sys.executable).parent / "tfds"


def tfds_build(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PCAM_VALIDATION_DIR"}  # the build validates itself
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this checkout
    return subprocess.run(
        [str(TFDS), "build", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def split_sizes(dataset_dir: Path) -> dict[str, int]:
    info = tfds.builder_from_directory(str(dataset_dir)).info
    return {name: split.num_examples for name, split in info.splits.items()}


def test_tfds_build_without_config_builds_every_pcam_config(tmp_path):
    # 40 labelled patches (29 negative, 11 positive) and 10 test patches.
    kaggle = make_clean(tmp_path / "kaggle", num_train=40, num_test=10, seed=0)
    result = tfds_build("pcam_tfds/pcam", f"--manual_dir={kaggle}", f"--data_dir={tmp_path / 'tfds'}")
    assert result.returncode == 0, result.stderr[-5000:]
    built = {p.name for p in (tmp_path / "tfds" / "pcam").iterdir() if not p.name.startswith(".")}  # not .config
    assert built == {c.name for c in PcamBuilder.BUILDER_CONFIGS} == {"full", "sample25"}
    version = str(PcamBuilder.VERSION)
    # full: round(0.2 x 29) + round(0.2 x 11) = 6 + 2 held out.
    assert split_sizes(tmp_path / "tfds" / "pcam" / "full" / version) == {"train": 32, "validation": 8, "test": 10}
    # sample25: round(0.25 x 29) + round(0.25 x 11) = 7 + 3 kept; round(0.2 x 7) + round(0.2 x 3) = 1 + 1 held out.
    assert split_sizes(tmp_path / "tfds" / "pcam" / "sample25" / version) == {"train": 8, "validation": 2, "test": 10}


def test_tfds_build_of_the_hdf5_dataset(tmp_path):
    h5_dir = REPO / "pcam_tfds" / "pcam_hdf5" / "dummy_data"  # train 6 patches, one with label 2; valid 3; test 3
    result = tfds_build("pcam_tfds/pcam_hdf5", f"--manual_dir={h5_dir}", f"--data_dir={tmp_path / 'tfds'}")
    assert result.returncode == 0, result.stderr[-5000:]
    (config,) = PcamHdf5Builder.BUILDER_CONFIGS
    dataset_dir = tmp_path / "tfds" / "pcam_hdf5" / config.name / str(PcamHdf5Builder.VERSION)
    assert split_sizes(dataset_dir) == {"train": 5, "validation": 3, "test": 3}
