"""The official PCam HDF5 files (the `pcam_hdf5` dataset): their splits, bad labels listed, bad files named."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions

from pcam_tfds.pcam_hdf5 import hdf5_source
from pcam_tfds.pcam_hdf5.pcam_hdf5_dataset_builder import Builder

SIZES = {"train": 30, "valid": 10, "test": 12}
BAD = {("train", 4): 2, ("test", 0): 255}  # (file split, row): a label that is not 0 or 1


def write_h5(folder, sizes=SIZES, bad=BAD, x_shape=(96, 96, 3)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in sizes.items():
        x = rng.integers(0, 256, (n, *x_shape), dtype=np.uint8)
        y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
        for (split, row), label in bad.items():
            if split == name:
                y[row] = label
        with h5py.File(hdf5_source.file_path(str(folder), name, "x"), "w") as f:
            f.create_dataset("x", data=x)
        with h5py.File(hdf5_source.file_path(str(folder), name, "y"), "w") as f:
            f.create_dataset("y", data=y)
    return folder


def build(manual_dir, data_dir, beam_args=None):
    builder = Builder(data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), beam_options=PipelineOptions(beam_args) if beam_args else None
        )
    )
    return builder


def read_back(builder) -> dict[str, dict[str, tuple[int, bytes]]]:
    return {
        split: {
            ex["id"].decode(): (int(ex["label"]), ex["image"].tobytes())
            for ex in tfds.as_numpy(builder.as_dataset(split=split))
        }
        for split in builder.info.splits
    }


@pytest.mark.slow
def test_hdf5_build_keeps_the_files_splits_and_lists_bad_labels(tmp_path):
    folder = write_h5(tmp_path / "h5")
    local = build(folder, tmp_path / "local")
    got = read_back(local)
    assert {s: len(v) for s, v in got.items()} == {"train": 29, "validation": 10, "test": 11}
    with h5py.File(hdf5_source.file_path(str(folder), "valid", "x")) as f:
        assert got["validation"]["valid_000007"] == (1, f["x"][7].tobytes())  # row 7: label 7 % 2
    assert "train_000004" not in got["train"] and "test_000000" not in got["test"]
    with open(local.data_path / "validate" / "rejected.csv") as f:
        rejected = list(csv.DictReader(f))
    assert [(r["id"], r["reason"], r["detail"]) for r in rejected] == [
        ("train_000004", "bad_label", "label 2, expected 0 or 1"),
        ("test_000000", "bad_label", "label 255, expected 0 or 1"),
    ]
    assert read_back(build(folder, tmp_path / "beam", ["--direct_running_mode=in_memory"])) == got


def test_missing_gzipped_and_misshapen_files_are_named(tmp_path):
    folder = write_h5(tmp_path / "h5", sizes={"train": 3, "valid": 2, "test": 2}, bad={})
    path = hdf5_source.file_path(str(folder), "test", "y")
    (folder / "camelyonpatch_level_2_split_test_y.h5").rename(path + ".gz")
    with pytest.raises(FileNotFoundError, match="test_y.h5: no such file .found the .gz: gunzip it first"):
        hdf5_source.check_split(str(folder), "test")
    small = write_h5(tmp_path / "small", sizes={"train": 3}, bad={}, x_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"train_x.h5: dataset 'x' is \(3, 32, 32, 3\) uint8, expected"):
        hdf5_source.check_split(str(small), "train")
