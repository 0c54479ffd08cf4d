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
    overwrite = tfds.download.DownloadConfig(manual_dir=str(kaggle),
                                             download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    builder.download_and_prepare(download_config=overwrite)
    assert builder.info.splits["train"].num_examples + builder.info.splits["validation"].num_examples == 10
