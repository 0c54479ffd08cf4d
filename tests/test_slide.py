"""`pcam-slide`: a heatmap of a synthetic pyramidal slide equals `pcam-predict` on the same patches as files.

The slides are made here: patches on a grid at 10x (0.972 um/px) with white between them, upsampled to a
40x (0.243 um/px) level 0, written as a tiled pyramidal TIFF (trainer.slides.pyramid.write_pyramid). The model is a
randomly initialised baseline (no training needed: the test compares two ways of running one model).
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from cli_runs import run_module

ROWS, COLS = 3, 4  # patches on the slide; not square, so a flipped axis fails
PITCH, MARGIN = 128, 64  # model pixels; both multiples of the stride, so a window sits on each patch
UP = 4  # 10x -> 40x
MPP0 = 0.243


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder holding a random-init baseline model.keras (its head scaled)."""
    import keras

    from pcam_tfds import synthetic
    from trainer import models

    keras.utils.set_random_seed(0)
    model = models.build("baseline")
    # A random head barely separates patches (probabilities within 0.002): rescale and centre its logits on
    # synthetic patches (std 2, mean 0), so patches, and a window off by one stride, get different numbers.
    head = model.layers[-1]
    kernel, _ = head.get_weights()
    images = np.stack([synthetic.draw_patch(99, "train", i)[0] for i in range(16)]).astype(np.float32)
    features = keras.Model(model.inputs, model.layers[-2].output).predict(images, verbose=0)
    logits = features @ kernel
    scale = 2.0 / max(float(logits.std()), 1e-12)
    head.set_weights([kernel * scale, -np.full(1, float(logits.mean()) * scale, np.float32)])
    folder = tmp_path_factory.mktemp("slide_run") / "run"
    folder.mkdir()
    model.save(str(folder / "model.keras"))
    return folder


def _canvas(patches: list[np.ndarray]) -> np.ndarray:
    h = 2 * MARGIN + ROWS * PITCH - (PITCH - 96)
    w = 2 * MARGIN + COLS * PITCH - (PITCH - 96)
    canvas = np.full((h, w, 3), 255, np.uint8)
    for n, p in enumerate(patches):
        r, c = divmod(n, COLS)
        canvas[MARGIN + r * PITCH : MARGIN + r * PITCH + 96, MARGIN + c * PITCH : MARGIN + c * PITCH + 96] = p
    return canvas


def write_slide(path, canvas: np.ndarray, downsamples=(1, 4, 16), mpp=MPP0) -> None:
    """canvas is at 10x; level 0 is it upsampled UP times (nearest), levels are box averages of level 0."""
    from trainer.slides import pyramid

    level0 = np.repeat(np.repeat(canvas, UP, 0), UP, 1)

    def tile_fn(ds, y, x, h, w):
        block = level0[y * ds : (y + h) * ds, x * ds : (x + w) * ds].astype(np.float32)
        return (block.reshape(h, ds, w, ds, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)

    pyramid.write_pyramid(path, level0.shape[:2], mpp, downsamples, tile_fn)


def _predict_files(run_dir, folder, tmp_path) -> dict[str, float]:
    from trainer.inference import predict

    out = tmp_path / "files.csv"
    assert predict.run([f"--model_dir={run_dir}", f"--input_dir={folder}", f"--output={out}"]) == 0
    with open(out) as f:
        return {r["id"]: float(r["label"]) for r in csv.DictReader(f)}


def _check_heatmap_matches_files(run_dir, files, tmp_path, reader, downsamples):
    from pcam_tfds.core import patches
    from trainer.slides import command as slide
    from trainer.slides import heatmap as heatmap_lib
    from trainer.slides import outputs, tissue

    files = files[: ROWS * COLS]
    pixels = [patches.read_patch(str(f)) for f in files]
    expected = _predict_files(run_dir, files[0].parent, tmp_path)
    values = np.array([expected[f.stem] for f in files])
    # The test can only catch a wrong window if the patches' predictions differ from each other.
    assert values.std() > 20 * 1e-4, values
    path = tmp_path / "slide.tif"
    write_slide(path, _canvas(pixels), downsamples)
    out = tmp_path / "out"
    summary = slide.run(
        [
            f"--model_dir={run_dir}",
            f"--slide={path}",
            f"--output_dir={out}",
            f"--reader={reader}",
            "--inference=windows",
        ],
        emit=lambda s: None,
    )
    heatmap = np.load(out / "heatmap.npy")
    assert heatmap.dtype == np.float32 and list(heatmap.shape) == summary["heatmap"]["shape"]
    x0, y0 = summary["heatmap"]["origin_level0"]
    s = summary["heatmap"]["stride_level0"]
    compared = 0
    for n, want in enumerate(values):
        r, c = divmod(n, COLS)
        # The patch's centre in level-0 pixels, from how the slide was made, not from trainer.slides.
        cx, cy = (MARGIN + c * PITCH + 48) * UP, (MARGIN + r * PITCH + 48) * UP
        j, i = (cx - x0) / s, (cy - y0) / s
        assert j == int(j) and i == int(i), (i, j)
        got = heatmap[int(i), int(j)]
        if np.isnan(got):  # not tissue: only a pale or grey patch (Kaggle has background patches) may be skipped
            assert tissue.saturation(pixels[n]).mean() < 0.1, (n, files[n].name)
            continue
        assert abs(got - want) < 1e-4, (n, got, want)
        compared += 1
    assert compared >= ROWS * COLS - 3, compared
    assert summary["mpp"] == pytest.approx(MPP0) and summary["windows"] == int(np.isfinite(heatmap).sum())
    assert np.isnan(heatmap[0, 0])  # the white margin is never predicted
    for name in outputs.FILES:
        assert (out / name).exists(), name
    assert not (out / heatmap_lib.PARTIAL_DIR).exists() and not (out / ".lock").exists()
    regions = json.loads((out / "regions.geojson").read_text())
    assert regions["type"] == "FeatureCollection"
    return summary, heatmap


@pytest.mark.parametrize("reader,downsamples", [("openslide", (1, 4, 16)), ("tifffile", (1, 2))])
def test_heatmap_of_synthetic_patches_equals_pcam_predict(run_dir, tmp_path, reader, downsamples):
    """(1, 4, 16): level 1 is the model's 10x, read as it is; (1, 2): 20x, resampled by 2."""
    from pcam_tfds import synthetic

    synthetic.write_layout(str(tmp_path / "kaggle"), 0, ROWS * COLS, seed=5)
    files = sorted((tmp_path / "kaggle" / "test").glob("*.tif"))
    _check_heatmap_matches_files(run_dir, files, tmp_path, reader, downsamples)


@pytest.mark.shared_data
def test_heatmap_of_real_patches_equals_pcam_predict(run_dir, tmp_path, shared_data):
    source = shared_data / "pcam_sample" / "test"
    if not source.is_dir():
        pytest.skip(f"{source} is not a folder")
    folder = tmp_path / "patches"
    folder.mkdir()
    for f in sorted(source.iterdir())[: ROWS * COLS]:
        (folder / f.name).write_bytes(f.read_bytes())
    _check_heatmap_matches_files(run_dir, sorted(folder.iterdir()), tmp_path, "openslide", (1, 4, 16))


def _small_slide(tmp_path, name="s.tif", colour=(180, 60, 140), mpp=MPP0):
    canvas = np.full((2 * MARGIN + 96, 2 * MARGIN + 96, 3), 255, np.uint8)
    canvas[MARGIN : MARGIN + 96, MARGIN : MARGIN + 96] = colour
    path = tmp_path / name
    write_slide(path, canvas, (1, 4), mpp=mpp)
    return path


def test_bad_inputs_are_one_line_and_write_nothing(run_dir, tmp_path):
    from trainer.slides import command as slide

    out = tmp_path / "out"
    good = _small_slide(tmp_path)
    not_a_slide = tmp_path / "notes.svs"
    not_a_slide.write_text("not a slide\n")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    no_mpp = _small_slide(tmp_path, "nompp.tif", mpp=None)
    not_a_run = tmp_path / "empty_run"
    not_a_run.mkdir()
    cases = [
        ([f"--model_dir={run_dir}", f"--slide={not_a_slide}"], "notes.svs: not a slide"),
        ([f"--model_dir={run_dir}", f"--slide={truncated}"], "truncated.tif"),
        ([f"--model_dir={run_dir}", f"--slide={tmp_path / 'missing.tif'}"], "is not a file"),
        ([f"--model_dir={run_dir}", f"--slide={no_mpp}"], "records no microns per pixel; give --mpp"),
        ([f"--model_dir={not_a_run}", f"--slide={good}"], "model.keras does not exist"),
        ([f"--model_dir={run_dir}", f"--slide={good}", "--threshold=2"], "--threshold=2"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            slide.run([*argv, f"--output_dir={out}"], emit=lambda s: None)
        assert not out.exists(), argv
    # With --mpp the slide without a resolution is read.
    summary = slide.run([f"--model_dir={run_dir}", f"--slide={no_mpp}", f"--output_dir={out}", "--mpp=0.243"])
    assert summary["windows"] > 0 and summary["mpp"] == 0.243


def test_command_line_error_is_one_line_exit_2(run_dir, tmp_path):
    bad = tmp_path / "x.svs"
    bad.write_bytes(b"\x00" * 100)
    proc = run_module(
        "trainer.slides", f"--model_dir={run_dir}", f"--slide={bad}", f"--output_dir={tmp_path / 'o'}", check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "x.svs" in lines[0] and not (tmp_path / "o").exists()


def test_no_tissue_gives_an_empty_heatmap(run_dir, tmp_path):
    from trainer.slides import command as slide

    white = _small_slide(tmp_path, "white.tif", colour=(255, 255, 255))
    lines = []
    summary = slide.run([f"--model_dir={run_dir}", f"--slide={white}", f"--output_dir={tmp_path / 'o'}"], lines.append)
    heatmap = np.load(tmp_path / "o" / "heatmap.npy")
    assert heatmap.size > 0 and np.isnan(heatmap).all()
    assert summary["windows"] == 0 and summary["slide_score"] is None and summary["tumour_area_mm2"] == 0
    assert any("no tissue found" in line for line in lines)


def _striped_slide(tmp_path, rows=8, cols=10):
    """A bigger slide (10x canvas of rows x cols 96-px blocks of varying colour): many tiles with a small TILE_PIXELS."""
    rng = np.random.default_rng(0)
    canvas = np.full((rows * 96, cols * 96, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            base = rng.integers(60, 220, 3)
            noise = rng.integers(-30, 30, (96, 96, 3))
            canvas[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] = np.clip(base + noise, 0, 255)
    canvas[:, :60] = 255
    path = tmp_path / "striped.tif"
    write_slide(path, canvas, (1, 4))
    return path


def test_resume_after_interruption_gives_the_same_heatmap(run_dir, tmp_path, monkeypatch):
    from trainer.slides import command as slide
    from trainer.slides import geometry, heatmap

    monkeypatch.setattr(geometry, "TILE_PIXELS", 256)
    path = _striped_slide(tmp_path)
    args = [f"--model_dir={run_dir}", f"--slide={path}"]
    whole = slide.run([*args, f"--output_dir={tmp_path / 'whole'}"], emit=lambda s: None)

    class Killed(Exception):
        pass

    def kill_after_two(n):
        if n == 2:
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        slide.run([*args, f"--output_dir={out}"], emit=lambda s: None, after_tile=kill_after_two)
    assert not (out / "summary.json").exists() and (out / heatmap.PARTIAL_DIR / "state.json").exists()
    lines = []
    resumed = slide.run([*args, f"--output_dir={out}"], emit=lines.append)
    assert any("continuing after tile 3" in line for line in lines), lines
    done_line = [line for line in lines if " windows in " in line][-1]
    assert int(done_line.split(": ")[1].split(" ")[0].replace(",", "")) < whole["windows"]
    a, b = np.load(tmp_path / "whole" / "heatmap.npy"), np.load(out / "heatmap.npy")
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=1e-6)
    assert resumed["windows"] == whole["windows"]
    assert resumed["inference"] == whole["inference"] and resumed["dense_check"] == whole["dense_check"]


def test_reads_stay_tile_sized_on_a_slide_larger_than_a_tile(run_dir, tmp_path, monkeypatch):
    """Streaming: no read larger than one tile (plus the window overlap), whatever the slide's size."""
    from trainer.slides import command as slide
    from trainer.slides import geometry, reader

    monkeypatch.setattr(geometry, "TILE_PIXELS", 256)
    path = _striped_slide(tmp_path)
    largest = []
    original = reader.Slide.read

    def recording_read(self, level, x, y, w, h):
        largest.append(w * h)
        return original(self, level, x, y, w, h)

    monkeypatch.setattr(reader.Slide, "read", recording_read)
    summary = slide.run([f"--model_dir={run_dir}", f"--slide={path}", f"--output_dir={tmp_path / 'o'}"])
    level1 = 8 * 96 * 10 * 96  # the model-resolution level's area
    assert max(largest) <= (256 + 32) ** 2 < level1 / 8
    assert summary["windows"] > 100


@pytest.fixture(scope="module")
def strided_run(tmp_path_factory):
    """A run folder whose model runs densely exactly (2x2 stride-2 convolutions: no padding; tests/test_dense.py)."""
    import keras
    from test_dense import _spread_head, _strided

    keras.utils.set_random_seed(3)
    model = _strided()
    rng = np.random.default_rng(0)
    _spread_head(model, rng.integers(40, 230, (32, 96, 96, 3)).astype(np.float32))
    folder = tmp_path_factory.mktemp("strided_run") / "run"
    folder.mkdir()
    model.save(str(folder / "model.keras"))
    return folder


@pytest.mark.parametrize("tta", [False, True])
def test_dense_heatmap_equals_the_per_window_heatmap(strided_run, tmp_path, monkeypatch, tta):
    """Coordinates across tiles and dense regions: several tiles, each split into regions of 3x3 windows and
    cropped to their tissue; a model without padding gives the per-window heatmap to rounding."""
    from trainer.slides import command as slide
    from trainer.slides import geometry
    from trainer.slides import heatmap as heatmap_lib

    monkeypatch.setattr(geometry, "TILE_PIXELS", 384)
    monkeypatch.setattr(heatmap_lib, "DENSE_BLOCK", 3)
    path = _striped_slide(tmp_path)
    args = [f"--model_dir={strided_run}", f"--slide={path}", *(["--tta"] if tta else [])]
    runs = {}
    for mode in ("windows", "dense"):
        summary = slide.run([*args, f"--output_dir={tmp_path / mode}", f"--inference={mode}"], emit=lambda s: None)
        assert summary["inference"] == mode and summary["inference_reason"] == f"--inference={mode}"
        runs[mode] = np.load(tmp_path / mode / "heatmap.npy")
    a, b = runs["windows"], runs["dense"]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    assert np.isfinite(a).sum() > 200 and np.nanstd(a) > 0.05
    np.testing.assert_allclose(b[np.isfinite(b)], a[np.isfinite(a)], atol=1e-5)


def test_auto_inference_uses_dense_only_within_the_tolerance(run_dir, tmp_path):
    """The random baseline pads each window with zeros: dense differs by a little, measured on the first tile."""
    from trainer.slides import command as slide
    from trainer.slides import heatmap

    path = _striped_slide(tmp_path)
    args = [f"--model_dir={run_dir}", f"--slide={path}"]
    lines = []
    strict = slide.run([*args, f"--output_dir={tmp_path / 'strict'}", "--dense_tolerance=0"], emit=lines.append)
    check = strict["dense_check"]
    assert strict["inference"] == "windows" and 0 < check["max_abs_diff"] and check["tolerance"] == 0
    assert 0 < check["mean_abs_diff"] <= check["max_abs_diff"] and check["windows"] == heatmap.DENSE_CHECK
    assert any("over --dense_tolerance=0.0: windows inference" in line for line in lines), lines
    windows = slide.run([*args, f"--output_dir={tmp_path / 'windows'}", "--inference=windows"])
    np.testing.assert_array_equal(
        np.load(tmp_path / "strict" / "heatmap.npy"), np.load(tmp_path / "windows" / "heatmap.npy")
    )
    assert windows["dense_check"] is None
    loose = slide.run([*args, f"--output_dir={tmp_path / 'loose'}", "--dense_tolerance=1"], emit=lambda s: None)
    assert loose["inference"] == "dense" and loose["dense_check"]["max_abs_diff"] == check["max_abs_diff"]
    # Dense inference of a padded model differs from per-window inference over the slide too, as the check said
    # (not by the same amount: a window at the edge of a dense region sees zeros there, as it does alone).
    a, b = np.load(tmp_path / "strict" / "heatmap.npy"), np.load(tmp_path / "loose" / "heatmap.npy")
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmax(np.abs(a - b)) > 1e-3


def test_models_or_strides_dense_cannot_serve(run_dir, tmp_path):
    from trainer.slides import command as slide

    path = _small_slide(tmp_path)
    args = [f"--model_dir={run_dir}", f"--slide={path}", "--stride=20"]
    with pytest.raises(ValueError, match="--inference=dense: stride 20 is not a multiple of baseline's reduction 8"):
        slide.run([*args, f"--output_dir={tmp_path / 'o'}", "--inference=dense"], emit=lambda s: None)
    assert not (tmp_path / "o").exists()
    summary = slide.run([*args, f"--output_dir={tmp_path / 'o'}"], emit=lambda s: None)
    assert summary["inference"] == "windows" and "stride 20 is not a multiple" in summary["inference_reason"]


def test_region_polygons_trace_the_windows_above_threshold():
    import shapely
    from shapely.geometry import shape

    from trainer.slides import geometry
    from trainer.slides.outputs import regions

    grid = geometry.Grid(scale=4.0, patch=96, stride=32, rows=5, cols=6)
    above = np.zeros((5, 6), bool)
    above[1:4, 1:4] = True
    above[2, 2] = False  # a hole
    above[4, 5] = True  # a second region, one window
    above[0, 0] = True  # touches the 3x3 region at a corner only: a region of its own
    polygons = regions.region_polygons(above, grid)
    assert len(polygons) == 3
    features = regions.geojson(polygons, 0.5)["features"]
    corner, square, single = (shape(f["geometry"]) for f in features)
    s, x0 = 128.0, 192.0
    # Window (i, j)'s label square spans its centre +- s/2; the 3x3 region is windows 1..3 less the hole.
    assert square.bounds == (x0 + 0.5 * s, x0 + 0.5 * s, x0 + 3.5 * s, x0 + 3.5 * s)
    assert square.area == 8 * s * s and len(square.interiors) == 1
    assert shapely.box(x0 + 1.5 * s, x0 + 1.5 * s, x0 + 2.5 * s, x0 + 2.5 * s).equals(
        shapely.Polygon(square.interiors[0])
    )
    assert len(square.exterior.coords) == 5  # the corners only, closed
    assert square.exterior.is_ccw and not square.interiors[0].is_ccw
    assert corner.area == single.area == s * s and single.bounds[0] == x0 + 4.5 * s
    assert all(shape(f["geometry"]).is_valid for f in features)


def test_tissue_mask_splits_glass_from_tissue():
    """The mask plan.py uses (tests/test_tissue.py tests it on pale tissue, artefacts and real slides)."""
    from trainer.slides import tissue

    thumb = np.full((40, 40, 3), 245, np.uint8)
    thumb[10:30, 5:20] = (170, 80, 150)
    mask, info = tissue.detect(thumb)
    assert mask[10:30, 5:20].all() and not mask[:, 25:].any()
    assert info["glass_rgb"] == [245.0, 245.0, 245.0]
    assert not tissue.detect(np.full((40, 40, 3), 250, np.uint8))[0].any()


def test_export_writes_a_slide_tool_config(run_dir, tmp_path):
    from trainer.inference import export

    export.export(str(run_dir), str(tmp_path / "export"))
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["patch_size_pixels"] == 96 and config["spacing_um_px"] == pytest.approx(0.972)
    assert config["class_names"] == ["normal", "tumour"] and config["input_dtype"] == "uint8"
    assert os.path.isdir(tmp_path / "export" / "variables")
