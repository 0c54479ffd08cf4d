"""Tests for pcam_tfds.synthetic: Kaggle layout, file format, determinism, label semantics."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import tifffile

from pcam_tfds import synthetic

CENTRE = slice(synthetic.CENTRE_START, synthetic.CENTRE_STOP)


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    out = tmp_path_factory.mktemp("layout")
    summary = synthetic.write_layout(out, num_train=40, num_test=10, seed=7)
    return out, summary


@pytest.fixture(scope="module")
def drawn():
    """300 patches drawn as write_layout draws them, with what went into each."""
    patches, infos = [], []
    for i in range(300):
        rng = synthetic.patch_rng(11, "train", i)
        label = int(rng.random() < synthetic.POSITIVE_RATE)
        pixels, info = synthetic.make_patch_with_info(rng, label)
        patches.append(pixels)
        infos.append(info)
    return np.stack(patches), infos


def test_layout_and_csvs(layout):
    out, summary = layout
    assert sorted(p.name for p in out.iterdir()) == ["sample_submission.csv", "test", "train", "train_labels.csv"]
    train_ids = {p.stem for p in (out / "train").glob("*.tif")}
    test_ids = {p.stem for p in (out / "test").glob("*.tif")}
    assert len(train_ids) == 40 and len(test_ids) == 10
    assert not train_ids & test_ids
    assert all(re.fullmatch(r"[0-9a-f]{40}", i) for i in train_ids | test_ids)

    header, rows = _read_csv(out / "train_labels.csv")
    assert header == ["id", "label"]
    assert len(rows) == 40 and {r[0] for r in rows} == train_ids
    assert {r[1] for r in rows} <= {"0", "1"}
    positives = sum(r[1] == "1" for r in rows)
    assert summary == {"train": 40, "test": 10, "positives": positives}

    header, rows = _read_csv(out / "sample_submission.csv")
    assert header == ["id", "label"]
    assert len(rows) == 10 and {r[0] for r in rows} == test_ids
    assert all(r[1] == "0" for r in rows)


def test_every_file_is_an_uncompressed_rgb_patch(layout):
    out, _ = layout
    files = sorted((out / "train").glob("*.tif")) + sorted((out / "test").glob("*.tif"))
    assert len(files) == 50
    for path in files:
        pixels = tifffile.imread(path)
        assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            assert page.photometric == tifffile.PHOTOMETRIC.RGB
            assert page.compression == tifffile.COMPRESSION.NONE


def test_files_match_draw_patch(layout):
    out, _ = layout
    _, rows = _read_csv(out / "train_labels.csv")
    for index in (0, 39):
        pixels, label = synthetic.draw_patch(7, "train", index)
        ident = synthetic.patch_id(7, "train", index)
        assert rows[index] == [ident, str(label)]
        np.testing.assert_array_equal(tifffile.imread(out / "train" / f"{ident}.tif"), pixels)


def test_same_seed_same_bytes_any_worker_count(tmp_path, layout):
    first, _ = layout
    again = tmp_path / "again"
    synthetic.write_layout(again, num_train=40, num_test=10, seed=7, workers=2)
    assert _tree_bytes(first) == _tree_bytes(again)


def test_different_seed_differs(tmp_path, layout):
    first, _ = layout
    other = tmp_path / "other"
    synthetic.write_layout(other, num_train=40, num_test=10, seed=8)
    a_files, b_files = _tree_bytes(first), _tree_bytes(other)
    assert not {n for n in a_files if n.endswith(".tif")} & {n for n in b_files if n.endswith(".tif")}
    assert a_files["train_labels.csv"] != b_files["train_labels.csv"]
    a, _ = synthetic.draw_patch(7, "train", 0)
    b, _ = synthetic.draw_patch(8, "train", 0)
    assert not np.array_equal(a, b)


def test_main_writes_layout(tmp_path, capsys):
    assert synthetic.main([str(tmp_path / "cli"), "--num_train=3", "--num_test=2", "--seed=5"]) == 0
    assert len(list((tmp_path / "cli" / "train").glob("*.tif"))) == 3
    assert len(list((tmp_path / "cli" / "test").glob("*.tif"))) == 2
    assert "3 train" in capsys.readouterr().out


def test_make_patch_shape_and_label_check():
    pixels = synthetic.make_patch(np.random.default_rng(0), 1)
    assert pixels.shape == (96, 96, 3) and pixels.dtype == np.uint8
    with pytest.raises(ValueError):
        synthetic.make_patch(np.random.default_rng(0), 2)


def test_positive_share_is_about_forty_percent(drawn):
    _, infos = drawn
    share = np.mean([info.label for info in infos])
    assert 0.32 < share < 0.48


def test_tumour_only_in_centre_for_positives(drawn):
    _, infos = drawn
    for info in infos:
        in_centre = info.tumour_map[CENTRE, CENTRE].max() > 0
        assert in_centre == bool(info.label)


def test_outer_ring_decoys_among_negatives(drawn):
    patches, infos = drawn
    negatives = [info for info in infos if not info.label]
    decoys = [info for info in negatives if info.decoy]
    assert 0.15 < len(decoys) / len(negatives) < 0.45
    for info in decoys:
        assert info.tumour_map.max() > 0  # a real cluster, just not in the centre
    assert not any(info.decoy for info in infos if info.label)

    # The decoy clusters show in the pixels: the outer ring is darker than in
    # plain negatives, on average.
    darkness = 255.0 - patches.mean(axis=-1)
    ring = np.ones((96, 96), dtype=bool)
    ring[CENTRE, CENTRE] = False
    ring_dark = darkness[:, ring].mean(axis=1)
    is_decoy = np.array([info.decoy for info in infos])
    is_plain = np.array([not info.label and not info.decoy for info in infos])
    assert ring_dark[is_decoy].mean() > ring_dark[is_plain].mean() + 3.0


def test_centre_darkness_separates_classes_on_average(drawn):
    patches, infos = drawn
    labels = np.array([info.label for info in infos])
    centre_dark = (255.0 - patches[:, CENTRE, CENTRE].mean(axis=-1)).mean(axis=(1, 2))
    assert centre_dark[labels == 1].mean() > centre_dark[labels == 0].mean() + 20.0


def test_some_patches_have_white_background(drawn):
    patches, infos = drawn
    white_share = (patches.min(axis=-1) > 215).mean(axis=(1, 2))
    partly_white = np.mean(white_share > 0.05)
    assert 0.05 < partly_white < 0.3
    assert {info.white for info in infos} <= {"none", "partial", "nearly_all"}
    # Positives never lose their centre to white background.
    for pixels, info in zip(patches, infos):
        if info.label:
            assert (pixels[CENTRE, CENTRE].min(axis=-1) > 215).mean() < 0.5


def test_decoy_rate_sets_the_share_of_negatives_with_a_tumour_cluster_outside_the_centre(tmp_path):
    def negatives(rate):
        out = []
        for i in range(120):
            rng = synthetic.patch_rng(3, "train", i)
            if int(rng.random() < synthetic.POSITIVE_RATE) == 0:
                out.append(synthetic.make_patch_with_info(rng, 0, decoy_rate=rate))
        return out

    assert not any(info.decoy for _, info in negatives(0.0))
    assert all(info.decoy for _, info in negatives(1.0))
    # The default rate is the module's: the same bytes as without the argument.
    for i in range(5):
        assert np.array_equal(synthetic.draw_patch(3, "train", i)[0], synthetic.draw_patch(3, "train", i, 0.3)[0])
    # Labels and positives do not depend on the rate; only negatives that drew a decoy differ.
    for i in range(20):
        (a, la), (b, lb) = synthetic.draw_patch(3, "train", i, 0.0), synthetic.draw_patch(3, "train", i)
        assert la == lb
        if la:
            assert np.array_equal(a, b)
    assert synthetic.main([str(tmp_path / "easy"), "--num_train=4", "--num_test=1", "--decoy_rate=0"]) == 0
    with pytest.raises(ValueError, match="decoy_rate"):
        synthetic.make_patch(np.random.default_rng(0), 0, decoy_rate=1.5)
    with pytest.raises(SystemExit):
        synthetic.main([str(tmp_path / "bad"), "--decoy_rate=-1"])
