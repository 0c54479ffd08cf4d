"""The local build's checks before TFDS writes anything."""

from __future__ import annotations

import pytest

from pcam_tfds import local_steps, synthetic


def test_empty_train_folder_is_named(tmp_path):
    kaggle = tmp_path / "kaggle"
    synthetic.write_layout(str(kaggle), 4, 2, seed=1)
    for f in (kaggle / "train").iterdir():
        f.unlink()
    (kaggle / "train_labels.csv").write_text("id,label\n")
    with pytest.raises(ValueError) as info:
        local_steps.split_generators(str(kaggle), str(tmp_path / "checks"), 0.2, 1.0, seed=0)
    message = str(info.value)
    assert str(kaggle / "train") in message and "no valid patch file" in message and "rejected.csv" in message


def test_a_built_dataset_over_changed_inputs_is_refused_not_reused(tmp_path):
    import tensorflow_datasets as tfds

    from pcam_tfds.pcam.pcam_dataset_builder import Builder, InputsChangedError

    kaggle = tmp_path / "kaggle"
    synthetic.write_layout(str(kaggle), 12, 3, seed=2)
    config = tfds.download.DownloadConfig(manual_dir=str(kaggle))
    Builder(data_dir=str(tmp_path / "tfds"), config="full").download_and_prepare(download_config=config)
    Builder(data_dir=str(tmp_path / "tfds"), config="full").download_and_prepare(download_config=config)  # reused
    gone = sorted((kaggle / "train").iterdir())[0]
    gone.unlink()
    labels = (kaggle / "train_labels.csv").read_text().splitlines()
    (kaggle / "train_labels.csv").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(InputsChangedError) as info:
        Builder(data_dir=str(tmp_path / "tfds"), config="full").download_and_prepare(download_config=config)
    message = str(info.value)
    assert gone.name in message and "train_labels.csv changed" in message and "--overwrite" in message
    overwrite = tfds.download.DownloadConfig(
        manual_dir=str(kaggle), download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    )
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    builder.download_and_prepare(download_config=overwrite)
    assert builder.info.splits["train"].num_examples + builder.info.splits["validation"].num_examples == 10


def test_a_killed_builds_incomplete_folder_is_removed_and_a_running_build_refuses_a_second(tmp_path):
    import tensorflow_datasets as tfds

    from pcam_tfds.core import folder_lock
    from pcam_tfds.pcam.pcam_dataset_builder import Builder

    kaggle = tmp_path / "kaggle"
    synthetic.write_layout(str(kaggle), 8, 2, seed=3)
    config = tfds.download.DownloadConfig(manual_dir=str(kaggle))
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    parent = tmp_path / "tfds" / "pcam" / "full"
    leftover = parent / "incomplete.0123abcd_1.0.0"  # what a SIGKILL mid-build leaves
    leftover.mkdir(parents=True)
    (leftover / "pcam-train.tfrecord-00000-of-00001").write_bytes(b"partial")
    with folder_lock.FolderLock(parent, "another tfds build"):
        with pytest.raises(folder_lock.FolderBusy, match="another tfds build"):
            builder.download_and_prepare(download_config=config)
    assert leftover.exists()  # not touched while another build held the folder
    builder.download_and_prepare(download_config=config)
    assert not leftover.exists() and builder.is_prepared() and not (parent / folder_lock.LOCK_FILE).exists()
