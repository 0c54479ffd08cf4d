"""The `pcam` builder on its dummy data (20 train files, one of them empty; 4 test files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pcam_tfds.pcam import pcam_dataset_builder


class PcamBuilderTest(tfds.testing.DatasetBuilderTestCase):
    """The single-process build (TFDS' test harness passes no Beam options)."""

    DATASET_CLASS = pcam_dataset_builder.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = ["full"]
    # 19 valid labelled patches (9 negative, 10 positive): round(0.2 x 9) + round(0.2 x 10) = 4 held out.
    SPLITS = {"train": 15, "validation": 4, "test": 4}
    SKIP_CHECKSUMS = True

    def test_rejected_file_is_listed(self):
        builder = self._make_builder(config="full")
        builder.download_and_prepare(download_config=self._download_config())
        checks = builder.data_path / "validate"
        summary = json.loads((checks / "summary.json").read_text())
        assert summary["rejected_by_reason"] == {"empty_file": 1}
        assert "empty_file" in (checks / "rejected.csv").read_text()

    def test_tfds_draws_the_patches_with_their_class_names(self):
        import matplotlib

        matplotlib.use("Agg")  # no display; show_examples draws with pyplot
        from matplotlib import pyplot as plt

        builder = self._make_builder(config="full")
        builder.download_and_prepare(download_config=self._download_config())
        reader = tfds.builder_from_directory(str(builder.data_path))  # as a user reads it: no builder code
        assert reader.info.features["label"].names == ["normal", "tumour"]
        assert "CC0" in reader.info.redistribution_info.license
        assert {int(ex["label"]) for ex in tfds.as_numpy(reader.as_dataset(split="test"))} == {-1}
        ds = reader.as_dataset(split="train")
        first = list(tfds.as_numpy(ds.take(4)))

        fig = tfds.show_examples(ds, reader.info, rows=2, cols=2)
        try:
            shown = [ax for ax in fig.axes if ax.images]
            assert len(shown) == 4
            for ax, ex in zip(shown, first):  # each cell is the example's pixels, captioned with its class name
                np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), ex["image"])
                name = ["normal", "tumour"][ex["label"]]
                assert ax.get_xlabel() == f"{name} ({ex['label']})"
        finally:
            plt.close(fig)

        df = tfds.as_dataframe(ds.take(4), reader.info)
        assert list(df["id"]) == [ex["id"] for ex in first]
        html = df._repr_html_()
        assert html.count('<img src="data:image/png;base64,') == 4  # a thumbnail per patch
        for ex in first:
            assert f">{ex['label']} ({['normal', 'tumour'][ex['label']]})</td>" in html
        test_df = tfds.as_dataframe(reader.as_dataset(split="test").take(1), reader.info)
        assert ">-</td>" in test_df._repr_html_()  # the missing label, not a class name

    def _download_config(self):
        return tfds.download.DownloadConfig(manual_dir=self.dummy_data)


class BeamBuilder(pcam_dataset_builder.Builder):
    """The same builder, always on Beam (DirectRunner in one process, as TFDS' harness sets it up)."""

    name = "pcam_beam_test"

    @staticmethod
    def use_beam(download_config) -> bool:
        return True

    @classmethod
    def _get_pkg_dir_path(cls):
        return pcam_dataset_builder.Builder._get_pkg_dir_path()


class PcamBeamBuilderTest(PcamBuilderTest):
    """The Beam build of the same dummy data: the same splits and counts."""

    DATASET_CLASS = BeamBuilder
    EXAMPLE_DIR = str(pcam_dataset_builder.Builder._get_pkg_dir_path() / "dummy_data")


def test_count_check_fails_loudly_on_a_short_split():
    summary = {"by_source": {"train": {"valid": 100}, "test": {"valid": 10}}}
    infos = {"train": _Info(80), "validation": _Info(20), "test": _Info(10)}
    pcam_dataset_builder.check_split_counts(infos, {"train": 80, "validation": 20, "test": 10}, summary)
    short = dict(infos, train=_Info(64))
    with pytest.raises(RuntimeError, match="train: 80 examples sent to the writer, 64 written"):
        pcam_dataset_builder.check_split_counts(short, {"train": 80, "validation": 20, "test": 10}, summary)
    with pytest.raises(RuntimeError, match="test holds 9 examples, validation passed 10"):
        pcam_dataset_builder.check_split_counts(dict(infos, test=_Info(9)), {}, summary)


class _Info:
    def __init__(self, n):
        self.num_examples = n


def test_read_slide_csv(tmp_path):
    (tmp_path / "s.csv").write_text("id,wsi\na,camelyon_1\nb,camelyon_2\n")
    assert pcam_dataset_builder.read_slide_csv(str(tmp_path / "s.csv")) == {"a": "camelyon_1", "b": "camelyon_2"}
    (tmp_path / "bad.csv").write_text("patch,slide\na,1\n")
    with pytest.raises(ValueError, match="bad.csv: columns are"):
        pcam_dataset_builder.read_slide_csv(str(tmp_path / "bad.csv"))
