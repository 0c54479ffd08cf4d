"""Kaggle-layout folders for tests: the seeded synthetic demo data, with or without injected problems."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from pcam_tfds import synthetic


def _tiff(pixels, **kwargs) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, pixels, **kwargs)
    return buf.getvalue()


def _bad_files() -> dict[str, tuple[bytes, str]]:
    """{id: (file bytes, reason expected)} for each kind of bad file."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 96, 4), dtype=np.uint8)).save(png, format="PNG")
    return {
        "bad0empty": (b"", "empty_file"),
        "bad1notimage": (b"this is not an image\n", "not_an_image"),
        "bad2truncated": (_tiff(rgb)[:15000], "truncated"),
        "bad3wrongsize": (_tiff(rgb[:64, :64]), "wrong_size"),
        "bad4grayscale": (_tiff(rgb[..., 0]), "wrong_channels"),
        "bad5rgba": (png.getvalue(), "wrong_channels"),
        "bad6sixteenbit": (_tiff(rgb.astype(np.uint16) * 257, photometric="rgb"), "wrong_dtype"),
    }


def read_labels(folder: Path) -> list[list[str]]:
    with open(folder / "train_labels.csv", newline="") as f:
        return list(csv.reader(f))[1:]


def write_labels(folder: Path, rows) -> None:
    with open(folder / "train_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        w.writerows(rows)


def make_clean(folder: Path, num_train: int = 40, num_test: int = 10, seed: int = 0) -> Path:
    synthetic.write_layout(folder, num_train, num_test, seed)
    return folder


def make_with_problems(folder: Path) -> dict:
    """A synthetic folder with one of each problem injected; returns the summary validation must produce."""
    make_clean(folder, 40, 10, seed=0)
    rows = read_labels(folder)
    bad = _bad_files()
    for id_, (data, _) in bad.items():
        (folder / "train" / f"{id_}.tif").write_bytes(data)
        rows.append([id_, "1"])
    # A train file with no label row.
    shutil.copy(folder / "train" / f"{rows[0][0]}.tif", folder / "train" / "nolabel.tif")
    # ...whose pixels are thereby a duplicate within train, like a test file copied from train:
    shutil.copy(folder / "train" / f"{rows[1][0]}.tif", folder / "test" / "copyoftrain.tif")
    dup_id, two_id = rows[2][0], rows[3][0]
    rows.append([dup_id, rows[2][1]])  # the same id twice
    rows[3][1] = "2"  # a label of 2
    rows.append(["orphan", "0"])  # a label without a file
    rows.append(["../x", "1"])  # an unsafe id
    rows.append(["onlyonefield"])  # a malformed row
    write_labels(folder, rows)

    valid_train = [r for r in rows[:40] if r[0] not in (dup_id, two_id)]
    labels = {}
    for _, lab in valid_train:
        labels[lab] = labels.get(lab, 0) + 1
    rejected_by_reason = {reason: 0 for _, reason in bad.values()}
    for _, reason in bad.values():
        rejected_by_reason[reason] += 1
    rejected_by_reason.update(missing_label=1, duplicate_id=1, bad_label=1)
    return {
        "total": 40 + len(bad) + 1 + 10 + 1,
        "valid": 38 + 11,
        "rejected": len(bad) + 3,
        "rejected_by_reason": dict(sorted(rejected_by_reason.items())),
        "by_source": {
            "test": {"total": 11, "valid": 11, "rejected": 0},
            "train": {"total": 48, "valid": 38, "rejected": 10},
        },
        "train_labels": dict(sorted(labels.items())),
        "label_rows": {
            "total": 40 + len(bad) + 4,
            "matched": 38 + len(bad),
            "rejected": 6,
            "rejected_by_reason": {
                "bad_label": 1,
                "duplicate_id": 2,
                "malformed_row": 1,
                "missing_file": 1,
                "unsafe_id": 1,
            },
        },
        "duplicate_groups": {
            "within_train": 1,
            "within_test": 0,
            "across_train_test": 1,
            "conflicting_labels": 0,
            "files_in_groups": 4,
        },
    }


def parse_record(serialized: bytes) -> dict:
    """{'id', 'label', 'image'} of a serialized record as the local build's split generators yield it."""
    import tensorflow as tf

    feature = tf.train.Example.FromString(serialized).features.feature
    image = np.frombuffer(feature["image"].bytes_list.value[0], np.uint8).reshape(96, 96, 3)
    return {
        "id": feature["id"].bytes_list.value[0].decode(),
        "label": feature["label"].int64_list.value[0],
        "image": image,
    }
