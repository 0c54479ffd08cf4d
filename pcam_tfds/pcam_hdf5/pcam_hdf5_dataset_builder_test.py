"""The `pcam_hdf5` builder on its dummy data (train 6 patches, one with label 2; valid 3; test 3)."""

from __future__ import annotations

import csv
import json

import pytest
import tensorflow_datasets as tfds

from pcam_tfds.pcam_hdf5 import pcam_hdf5_dataset_builder


class PcamHdf5BuilderTest(tfds.testing.DatasetBuilderTestCase):
    """The single-process build (TFDS' test harness passes no Beam options)."""

    DATASET_CLASS = pcam_hdf5_dataset_builder.Builder
    SPLITS = {"train": 5, "validation": 3, "test": 3}
    SKIP_CHECKSUMS = True

    def test_bad_label_is_listed(self):
        builder = self._make_builder()
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=self.dummy_data))
        checks = builder.data_path / "validate"
        summary = json.loads((checks / "summary.json").read_text())
        assert summary["rejected_by_reason"] == {"bad_label": 1}
        assert summary["by_split"]["train"] == {"total": 6, "valid": 5, "rejected": 1}
        with (checks / "rejected.csv").open() as f:
            rejected = [(r["id"], r["reason"], r["detail"]) for r in csv.DictReader(f)]
        assert rejected == [("train_000002", "bad_label", "label 2, expected 0 or 1")]


class BeamBuilder(pcam_hdf5_dataset_builder.Builder):
    """The same builder, always on Beam (the DirectRunner in one process, as TFDS' harness sets it up)."""

    name = "pcam_hdf5_beam_test"

    @staticmethod
    def use_beam(download_config) -> bool:
        return True

    @classmethod
    def _get_pkg_dir_path(cls):
        return pcam_hdf5_dataset_builder.Builder._get_pkg_dir_path()


class PcamHdf5BeamBuilderTest(PcamHdf5BuilderTest):
    """The Beam build of the same dummy data: the same splits and counts."""

    DATASET_CLASS = BeamBuilder
    EXAMPLE_DIR = str(pcam_hdf5_dataset_builder.Builder._get_pkg_dir_path() / "dummy_data")


def test_count_check_fails_loudly_on_a_short_split():
    summary = {"by_split": {s: {"total": 10, "valid": 9, "rejected": 1} for s in ("train", "validation", "test")}}
    infos = {s: _Info(9) for s in ("train", "validation", "test")}
    pcam_hdf5_dataset_builder.check_split_counts(infos, {"train": 9, "validation": 9, "test": 9}, summary)
    with pytest.raises(RuntimeError, match="validation: 9 examples sent to the writer, 8 written"):
        pcam_hdf5_dataset_builder.check_split_counts(
            dict(infos, validation=_Info(8)), {"train": 9, "validation": 9, "test": 9}, summary
        )
    with pytest.raises(RuntimeError, match="test holds 10 examples, validation passed 9"):
        pcam_hdf5_dataset_builder.check_split_counts(dict(infos, test=_Info(10)), {}, summary)


class _Info:
    def __init__(self, n):
        self.num_examples = n
