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
