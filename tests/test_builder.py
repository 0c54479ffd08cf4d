"""The pcam builder on a synthetic folder: disjoint, stratified, reproducible splits; problems kept out."""

from __future__ import annotations

import collections

import pytest
import tensorflow_datasets as tfds
from apache_beam.options.pipeline_options import PipelineOptions
from kaggle_folders import make_clean, make_with_problems, read_labels

from pcam_tfds.pcam.pcam_dataset_builder import Builder

pytestmark = pytest.mark.slow


def build(manual_dir, data_dir, beam_args, config="full"):
    builder = Builder(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), beam_options=PipelineOptions(beam_args)
        )
    )
    return builder


def members(builder) -> dict[str, dict[str, int]]:
    """{split: {id: label}} read back from the built dataset."""
    out = {}
    for split in builder.info.splits:
        ds = builder.as_dataset(split=split)
        out[split] = {ex["id"].decode(): int(ex["label"]) for ex in tfds.as_numpy(ds)}
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_clean(tmp_path_factory.mktemp("kaggle") / "d", num_train=200, num_test=20, seed=3)


@pytest.fixture(scope="module")
def one_worker(folder, tmp_path_factory):
    return members(
        build(folder, tmp_path_factory.mktemp("tfds1"), ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    )


def test_splits_are_disjoint_complete_and_stratified(folder, one_worker):
    labels = {id_: int(lab) for id_, lab in read_labels(folder)}
    train, val, test = one_worker["train"], one_worker["validation"], one_worker["test"]
    assert not set(train) & set(val) and not (set(train) | set(val)) & set(test)
    assert {**train, **val} == labels
    assert set(test.values()) == {-1} and len(test) == 20
    per_label = collections.Counter(labels.values())
    held = collections.Counter(val.values())
    for label, n in per_label.items():
        assert held[label] == round(0.2 * n)


def test_membership_independent_of_worker_count(folder, one_worker, tmp_path):
    # multi_threading, not multi_processing: the latter dropped examples in TFDS' writer at 25k files
    # (bench/RESULTS.md), which the build's count check turns into a failure, not a smaller dataset.
    two = members(build(folder, tmp_path, ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]))
    assert two == one_worker


def test_problems_never_enter_the_dataset(tmp_path):
    expected = make_with_problems(tmp_path / "d")
    builder = build(tmp_path / "d", tmp_path / "tfds", ["--direct_running_mode=in_memory"])
    got = members(builder)
    ids = set(got["train"]) | set(got["validation"])
    assert len(ids) == expected["by_source"]["train"]["valid"]
    assert not {"bad0empty", "nolabel", "orphan", "../x"} & ids
    assert len(got["test"]) == expected["by_source"]["test"]["valid"]
    # Duplicate pixels (nolabel is a copy of a train file, but rejected; copyoftrain is in test) stay on one side.
    summary = (builder.data_path / "validate" / "summary.json").read_text()
    assert '"rejected": 10' in summary


def test_sampled_config_keeps_a_stratified_quarter(folder, tmp_path):
    got = members(build(folder, tmp_path, ["--direct_running_mode=in_memory"], config="sample25"))
    kept = len(got["train"]) + len(got["validation"])
    assert kept == pytest.approx(50, abs=2)
    assert len(got["test"]) == 20


def test_single_process_build_gives_the_same_dataset(folder, one_worker, tmp_path):
    builder = Builder(data_dir=str(tmp_path), config="full")
    download_config = tfds.download.DownloadConfig(manual_dir=str(folder))
    assert not Builder.use_beam(download_config)
    builder.download_and_prepare(download_config=download_config)
    assert members(builder) == one_worker
    assert (builder.data_path / "validate" / "rejected.csv").exists()
