"""beam_jobs.stats: the combiner on hand-built patches with exact expected values, and whole runs with exact counts."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from beam_services import portable_runner_options
from kaggle_folders import make_clean, make_with_problems

from beam_jobs import channel_stats as beam_stats
from beam_jobs import stats, validate
from pcam_tfds.core import channel_stats as core_stats
from pcam_tfds.core import patches

IN_MEMORY = ["--direct_running_mode=in_memory"]


def _patch(r, g, b) -> np.ndarray:
    """A 2x2 RGB patch from three 2x2 channel lists."""
    return np.stack([np.array(c, np.uint8) for c in (r, g, b)], axis=-1)


# Three hand-built 2x2 patches and what the statistics of each must be.
TISSUE = _patch([[0, 255], [255, 0]], [[100, 100], [100, 100]], [[1, 2], [3, 4]])
WHITE = _patch([[255, 255], [255, 250]], [[255, 255], [255, 250]], [[255, 255], [255, 221]])
BLACK = _patch([[0, 0], [0, 0]], [[0, 0], [0, 0]], [[0, 0], [0, 3]])


def test_patch_stats_on_one_patch_exactly():
    s = core_stats.PatchStats().add(TISSUE, core_stats.Thresholds()).summary()
    assert s["patches"] == 1 and s["pixels"] == 4
    assert s["sum"] == [510, 400, 10]
    assert s["sum_sq"] == [2 * 255**2, 4 * 100**2, 1 + 4 + 9 + 16]
    assert s["mean"] == [127.5, 100.0, 2.5]
    assert s["std"] == [127.5, 0.0, math.sqrt(1.25)]
    hist = np.array(s["histogram"])
    assert hist.shape == (3, 256) and hist.sum(axis=1).tolist() == [4, 4, 4]
    assert (hist[0, 0], hist[0, 255], hist[1, 100]) == (2, 2, 4)
    assert hist[2, 1:5].tolist() == [1, 1, 1, 1]
    # Tissue: no near-white pixel, not dark (mean of all 12 values is 76.7), std of all values 87.6.
    assert s["near_white_pixel_share"] == 0.0
    assert [s[f"{k}_patches"] for k in core_stats.FLAGS] == [0, 0, 0, 0]


def test_flags_follow_the_thresholds():
    t = core_stats.Thresholds(white_level=220, background_share=0.5, dark_mean=40, blank_std=10)
    white = core_stats.PatchStats().add(WHITE, t).summary()
    # (255,255,255) x3 and (250,250,221): all four pixels have every channel > 220; std of all values 9.3.
    assert white["near_white_pixel_share"] == 1.0
    assert [white[f"{k}_patches"] for k in core_stats.FLAGS] == [1, 0, 1, 1]  # background, blank, not dark
    black = core_stats.PatchStats().add(BLACK, t).summary()
    assert [black[f"{k}_patches"] for k in core_stats.FLAGS] == [0, 1, 1, 1]  # dark and blank
    # A channel of 221 is not above 221, so the last pixel is no longer near-white: 3/4 still > 50%.
    assert core_stats.PatchStats().add(WHITE, core_stats.Thresholds(white_level=221)).near_white_pixels == 3
    assert (
        core_stats.PatchStats()
        .add(WHITE, core_stats.Thresholds(white_level=221, background_share=0.75))
        .flags["background"]
        == 0
    )


def test_a_stack_equals_its_patches_one_by_one_and_merging():
    t = core_stats.Thresholds()
    stacked = core_stats.PatchStats().add(np.stack([TISSUE, WHITE, BLACK]), t).summary()
    one_by_one = core_stats.PatchStats()
    for p in (TISSUE, WHITE, BLACK):
        one_by_one.add(p, t)
    merged = core_stats.PatchStats().add(TISSUE, t).merge(core_stats.PatchStats().add(np.stack([WHITE, BLACK]), t))
    assert one_by_one.summary() == stacked == merged.summary()
    assert stacked["patches"] == 3 and stacked["pixels"] == 12
    assert stacked["sum"] == [510 + 255 * 3 + 250, 400 + 255 * 3 + 250, 10 + 255 * 3 + 221 + 3]
    assert [stacked[f"{k}_patches"] for k in core_stats.FLAGS] == [1, 1, 2, 2]
    assert stacked["near_white_pixel_share"] == 4 / 12


def test_sums_stay_exact_beyond_float_precision():
    acc = core_stats.PatchStats()
    acc.histogram[:, 255] = 2**40 + 1  # ~1.1e12 pixels: x^2 sums pass 2**53
    acc.histogram[:, 0] = 1
    s = acc.summary()
    assert s["sum"] == [255 * (2**40 + 1)] * 3
    assert s["sum_sq"] == [255**2 * (2**40 + 1)] * 3  # exact: a Python int, not a float
    n = 2**40 + 2
    assert s["mean"][0] == 255 * (2**40 + 1) / n
    assert math.isclose(s["std"][0], 255 * math.sqrt((2**40 + 1) / n**2), rel_tol=1e-12)


def test_empty_stats_and_bad_input():
    s = core_stats.PatchStats().summary()
    assert s["patches"] == 0 and s["mean"] is None and s["std"] is None and s["background_share"] is None
    with pytest.raises(ValueError, match=r"uint8 patches of shape \(N, H, W, 3\), got float32 \(2, 2, 3\)"):
        core_stats.PatchStats().add(TISSUE.astype(np.float32), core_stats.Thresholds())
    with pytest.raises(ValueError, match="white_level"):
        core_stats.Thresholds(white_level=255)
    with pytest.raises(ValueError, match="background_share"):
        core_stats.Thresholds(background_share=1.5)


def test_group_of():
    assert [core_stats.group_of("train", 0), core_stats.group_of("train", 1), core_stats.group_of("test", -1)] == [
        "negative",
        "positive",
        "test",
    ]
    with pytest.raises(ValueError, match="label 2"):
        core_stats.group_of("train", 2)


def test_combiner_per_key_in_a_pipeline():
    def key_facts(kv):
        group, acc = kv
        s = acc.summary()
        return group, s["patches"], s["sum"], s["sum_sq"], [s[f"{k}_patches"] for k in core_stats.FLAGS]

    with TestPipeline() as p:
        out = (
            p
            | beam.Create([("negative", TISSUE), ("negative", np.stack([WHITE, BLACK])), ("positive", TISSUE)])
            | beam.CombinePerKey(beam_stats.PatchStatsFn())
            | beam.Map(key_facts)
        )
        negative_sum_sq = [
            2 * 255**2 + 3 * 255**2 + 250**2,
            4 * 100**2 + 3 * 255**2 + 250**2,
            (1 + 4 + 9 + 16) + 3 * 255**2 + 221**2 + 3**2,
        ]
        assert_that(
            out,
            equal_to(
                [
                    ("negative", 3, [510 + 1015, 400 + 1015, 10 + 986 + 3], negative_sum_sq, [1, 1, 2, 2]),
                    ("positive", 1, [510, 400, 10], [2 * 255**2, 4 * 100**2, 30], [0, 0, 0, 0]),
                ]
            ),
        )


def test_compute_channel_stats_rejects_undecodable_files(tmp_path):
    make_clean(tmp_path, 6, 2, seed=3)
    train = sorted((tmp_path / "train").glob("*.tif"))
    (tmp_path / "train" / "broken.tif").write_bytes(b"not a tiff")
    recs = [{"id": p.stem, "source": "train", "label": i % 2, "path": str(p)} for i, p in enumerate(train)]
    recs.append({"id": "broken", "source": "train", "label": 1, "path": str(tmp_path / "train" / "broken.tif")})
    pixels = [patches.read_patch(str(p)) for p in train]
    with TestPipeline() as p:
        out = p | beam.Create(recs) | beam_stats.ComputeChannelStats(batch_size=4)
        assert_that(
            out["stats"] | beam.MapTuple(lambda g, acc: (g, acc.patches, acc.summary()["sum"])),
            equal_to(
                [
                    (g, 3, np.stack(pixels[i::2]).reshape(-1, 3).sum(axis=0, dtype=np.int64).tolist())
                    for i, g in enumerate(["negative", "positive"])
                ]
            ),
            label="stats",
        )
        assert_that(
            out["rejected"] | beam.Map(lambda r: (r["id"], r["reason"])),
            equal_to([("broken", "not_an_image")]),
            label="rejected",
        )


def _valid_pixels(folder, summary_manifest) -> dict:
    """{group: stacked pixels} of the valid files listed in a validate manifest, read with numpy."""
    import pandas as pd

    m = pd.read_parquet(summary_manifest)
    out = {}
    for row in m[m.valid].itertuples():
        out.setdefault(core_stats.group_of(row.source, row.label), []).append(patches.read_patch(row.path))
    return {g: np.stack(v) for g, v in out.items()}


@pytest.mark.slow
def test_full_run_with_injected_problems_matches_validate_and_numpy(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    expected = make_with_problems(data)
    s = stats.run([f"--manual_dir={data}", f"--output_dir={tmp_path / 'stats'}", *IN_MEMORY])
    assert s == json.loads((tmp_path / "stats" / "stats.json").read_text())
    assert s["files"] == {k: expected[k] for k in ("total", "valid", "rejected", "rejected_by_reason")}
    assert s["label_counts"] == expected["train_labels"]
    assert s["test_files"] == expected["by_source"]["test"]["valid"]

    # The same valid set through validate's manifest, and the same numbers as numpy over those pixels.
    validate.run([f"--manual_dir={data}", f"--output_dir={tmp_path / 'validate'}", *IN_MEMORY])
    manifest = tmp_path / "validate" / "manifest.parquet"
    from_manifest = stats.run([f"--manifest={manifest}", f"--output_dir={tmp_path / 'stats2'}", *IN_MEMORY])
    assert from_manifest["groups"] == s["groups"] and from_manifest["files"] == s["files"]
    pixels = _valid_pixels(data, manifest)
    pixels["train"] = np.concatenate([pixels["negative"], pixels["positive"]])
    pixels["all"] = np.concatenate([pixels["train"], pixels["test"]])
    for group, px in pixels.items():
        g = s["groups"][group]
        flat = px.reshape(-1, 3).astype(np.int64)
        assert g["patches"] == len(px)
        assert g["sum"] == flat.sum(axis=0).tolist() and g["sum_sq"] == (flat**2).sum(axis=0).tolist()
        np.testing.assert_allclose(g["mean"], flat.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(g["std"], flat.std(axis=0), rtol=1e-9)
        assert np.array_equal(g["histogram"], [np.bincount(flat[:, c], minlength=256) for c in range(3)])

    mean, std = core_stats.load_channel_stats(str(tmp_path / "stats"))
    assert mean == tuple(s["groups"]["train"]["mean"]) and std == tuple(s["groups"]["train"]["std"])
    mean01, _ = core_stats.load_channel_stats(str(tmp_path / "stats" / "stats.json"), group="test", scale=1 / 255)
    assert mean01 == pytest.approx([m / 255 for m in s["groups"]["test"]["mean"]], rel=1e-15)


def test_load_channel_stats_errors(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text("{not json")
    with pytest.raises(core_stats.StatsError, match="stats.json: not JSON"):
        core_stats.load_channel_stats(str(path))
    empty = core_stats.build_stats([], [], core_stats.Thresholds(), None, {})
    path.write_text(json.dumps(empty))
    with pytest.raises(core_stats.StatsError, match="group 'train' has no valid patches"):
        core_stats.load_channel_stats(str(path))
    with pytest.raises(core_stats.StatsError, match=r"no group 'val'.*'all', 'negative'"):
        core_stats.load_channel_stats(str(path), group="val")


def test_accounting_error_when_files_go_missing():
    acc = core_stats.PatchStats().add(TISSUE, core_stats.Thresholds())
    with pytest.raises(core_stats.StatsError, match="3 files were listed but 2 came out"):
        core_stats.build_stats([("negative", acc)], [("truncated", 1)], core_stats.Thresholds(), 3, {})


@pytest.mark.slow
def test_module_entry_point_multi_processing(tmp_path):
    """`python -m beam_jobs.stats` with the default worker processes (accumulators cross processes by pickle)."""
    make_clean(tmp_path / "data", 30, 8, seed=1)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.stats",
            f"--manual_dir={tmp_path / 'data'}",
            f"--output_dir={out}",
            "--direct_num_workers=2",
            "--batch_size=8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "stats.json").read_text())
    assert s["files"]["valid"] == 38 and s["groups"]["all"]["patches"] == 38 and s["test_files"] == 8


@pytest.mark.slow
def test_portable_runner_with_external_workers(tmp_path):
    make_clean(tmp_path / "data", 12, 4, seed=2)
    with portable_runner_options(tmp_path) as options:
        s = stats.run([f"--manual_dir={tmp_path / 'data'}", f"--output_dir={tmp_path / 'out'}", *options])
    assert s["files"] == {"total": 16, "valid": 16, "rejected": 0, "rejected_by_reason": {}}
    assert s["groups"]["train"]["patches"] == 12
