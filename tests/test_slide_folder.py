"""pcam-slide on what a pathology lab has: a folder of slides (one broken), heatmap.tif in a slide viewer, and runs
trained with --padding=valid, which pcam-slide scans densely because dense then equals per-window inference."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from cli_runs import run_module
from test_slide import _small_slide, _striped_slide, run_dir  # noqa: F401 - run_dir is a fixture


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_folder_of_slides_goes_on_past_a_broken_one_and_resumes(run_dir, tmp_path):  # noqa: F811
    from trainer.slides import command

    slides = tmp_path / "slides"
    slides.mkdir()
    _small_slide(slides, "a.tif")
    _small_slide(slides, "c.tif", colour=(120, 40, 160))
    (slides / "b.svs").write_text("not a slide\n")
    (slides / "README.txt").write_text("notes\n")  # not a slide file: not read
    out = tmp_path / "out"
    args = [f"--model_dir={run_dir}", f"--slide_dir={slides}", f"--output_dir={out}"]
    rows = command.run(args, emit=lambda s: None)
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    table = _rows(out / command.SLIDES_CSV)
    assert [r["slide"] for r in table] == [str(slides / n) for n in ("a.tif", "b.svs", "c.tif")]
    assert "b.svs: not a slide" in table[1]["reason"] and table[1]["windows"] == ""
    for row in (table[0], table[2]):
        assert (out / row["slide"].split("/")[-1] / "summary.json").exists() and int(row["windows"]) > 0
        assert float(row["slide_score"]) > 0 and row["reason"] == ""
    assert not (out / "b.svs").exists()  # a refused slide writes nothing
    # Run again: the finished slides are skipped, the broken one is tried and listed again.
    again = command.run(args, emit=lambda s: None)
    assert [r["status"] for r in again] == ["done earlier", "failed", "done earlier"]
    assert [r["slide_score"] for r in again[::2]] == [r["slide_score"] for r in rows[::2]]
    # Other settings: done again, not skipped.
    other = command.run([*args, "--stride=64"], emit=lambda s: None)
    assert [r["status"] for r in other] == ["done", "failed", "done"]


def test_a_folder_run_exits_1_naming_the_failures(run_dir, tmp_path):  # noqa: F811
    slides = tmp_path / "slides"
    slides.mkdir()
    _small_slide(slides, "a.tif")
    (slides / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 60)
    proc = run_module(
        "trainer.slides",
        f"--model_dir={run_dir}",
        f"--slide_dir={slides}",
        f"--output_dir={tmp_path / 'o'}",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "1 of 2 slides done, 1 failed" in proc.stdout and "Traceback" not in proc.stderr
    assert [r["status"] for r in _rows(tmp_path / "o" / "slides.csv")] == ["done", "failed"]


def test_folder_mistakes_are_one_line(run_dir, tmp_path):  # noqa: F811
    from trainer.slides import command

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    cases = [
        ([f"--slide_dir={empty}"], "holds no slide files"),
        ([f"--slide_dir={tmp_path / 'nowhere'}"], "is not a folder"),
        ([], "give --slide=FILE"),
    ]
    for argv, message in cases:
        with pytest.raises(ValueError, match=message):
            command.run([f"--model_dir={run_dir}", f"--output_dir={tmp_path / 'o'}", *argv], emit=lambda s: None)
    a = _small_slide(tmp_path, "same.tif")
    other = tmp_path / "x"
    other.mkdir()
    b = _small_slide(other, "same.tif")
    with pytest.raises(ValueError, match="two slides named 'same.tif'"):
        command.run([f"--model_dir={run_dir}", f"--slide={a}", f"--slide={b}", f"--output_dir={tmp_path / 'o'}"])


def test_heatmap_tif_lays_over_the_slide_in_a_viewer(run_dir, tmp_path):  # noqa: F811
    """OpenSlide opens heatmap.tif; at each window's centre it shows that window's colour, at the size that
    makes it cover the slide (its microns per pixel)."""
    import openslide
    from matplotlib import colormaps

    from trainer.slides import command

    path = _striped_slide(tmp_path)
    summary = command.run([f"--model_dir={run_dir}", f"--slide={path}", f"--output_dir={tmp_path / 'o'}"])
    heatmap = np.load(tmp_path / "o" / "heatmap.npy")
    with openslide.OpenSlide(str(path)) as slide, openslide.OpenSlide(str(tmp_path / "o" / "heatmap.tif")) as tif:
        w0, h0 = slide.level_dimensions[0]
        mpp = float(tif.properties["openslide.mpp-x"])
        per = mpp / 0.243  # slide level-0 pixels per heatmap pixel
        assert abs(tif.level_dimensions[0][0] * per - w0) <= per and abs(tif.level_dimensions[0][1] * per - h0) <= per
        assert tif.level_count >= 1 and summary["heatmap_tiff"]["mpp"] == pytest.approx(mpp)
        image = np.asarray(tif.read_region((0, 0), 0, tif.level_dimensions[0]))[..., :3]
    x0, y0 = summary["heatmap"]["origin_level0"]
    s = summary["heatmap"]["stride_level0"]
    colours = (colormaps["inferno"](np.nan_to_num(heatmap))[..., :3] * 255 + 0.5).astype(int)
    checked = 0
    for i, j in zip(*np.nonzero(np.isfinite(heatmap))):
        x, y = int((x0 + j * s) / per), int((y0 + i * s) / per)
        np.testing.assert_array_equal(image[y, x], colours[i, j])
        checked += 1
    for i, j in zip(*np.nonzero(~np.isfinite(heatmap))):
        x, y = int((x0 + j * s) / per), int((y0 + i * s) / per)
        assert (image[y, x] == 255).all()
    assert checked > 50


@pytest.fixture(scope="module")
def valid_runs(tmp_path_factory):
    """Run folders of padding-free models trained a few steps: a baseline and a p4m (centre crop 94)."""
    from test_dense import _spread_head, _trained

    # Patches like _striped_slide's blocks (a colour and noise), half of them white glass at one edge.
    rng = np.random.default_rng(0)
    probe = np.clip(rng.integers(60, 220, (32, 1, 1, 3)) + rng.integers(-30, 30, (32, 96, 96, 3)), 0, 255)
    probe[::2, :, :48] = 255
    probe = probe.astype(np.float32)
    runs = {}
    for name, options in (("baseline", {}), ("p4m", {"crop": 94})):
        model = _trained(name, **options)
        _spread_head(model, probe)
        folder = tmp_path_factory.mktemp(f"valid_{name}") / "run"
        folder.mkdir()
        model.save(str(folder / "model.keras"))
        runs[name] = folder
    return runs


@pytest.mark.parametrize("name", ["baseline", "p4m"])
@pytest.mark.parametrize("tta", [False, True])
def test_padding_free_runs_are_scanned_densely_and_exactly(valid_runs, tmp_path, monkeypatch, name, tta):
    from trainer.slides import command, geometry, heatmap

    path = _striped_slide(tmp_path)
    args = [f"--model_dir={valid_runs[name]}", f"--slide={path}", *(["--tta"] if tta else [])]
    monkeypatch.setattr(geometry, "TILE_PIXELS", 384)  # several tiles, each of several dense regions
    monkeypatch.setattr(heatmap, "DENSE_BLOCK", 3)
    auto = command.run([*args, f"--output_dir={tmp_path / 'auto'}"], emit=lambda s: None)
    assert auto["inference"] == "dense" and auto["dense_check"]["exact"]
    assert auto["dense_check"]["max_abs_diff"] <= 1e-4 <= auto["dense_check"]["tolerance"] * 10
    command.run([*args, f"--output_dir={tmp_path / 'windows'}", "--inference=windows"], emit=lambda s: None)
    a, b = (np.load(tmp_path / d / "heatmap.npy") for d in ("auto", "windows"))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    assert np.isfinite(a).sum() > 200 and np.nanstd(a) > 0.05
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)], atol=1e-4)


def test_pale_tissue_is_predicted_and_a_black_scan_border_is_not(run_dir, tmp_path):  # noqa: F811
    """A slide of pale tissue (loose stroma, oedema: barely darker than the glass) beside a black scan border."""
    from test_slide import write_slide

    from trainer.slides import command

    rng = np.random.default_rng(0)
    canvas = np.clip(rng.normal((240, 240, 238), 1.5, (576, 768, 3)), 0, 255)  # glass, at 10x
    canvas[:, :64] = rng.normal(12, 3, (576, 64, 3))  # the scanner's black border along one side
    pale = (226, 212, 222) + rng.normal(0, 4, (256, 320, 3))  # pale pink, 14-26 levels under the glass
    canvas[160:416, 320:640] = pale
    path = tmp_path / "pale.tif"
    write_slide(path, np.clip(canvas, 0, 255).astype(np.uint8), (1, 4))
    summary = command.run([f"--model_dir={run_dir}", f"--slide={path}", f"--output_dir={tmp_path / 'o'}"])
    heatmap = np.load(tmp_path / "o" / "heatmap.npy")
    x0, y0 = summary["heatmap"]["origin_level0"]
    s = summary["heatmap"]["stride_level0"]
    # Window centres in model pixels (level 0 is 4x the 10x canvas).
    cx = (x0 + np.arange(heatmap.shape[1]) * s) / 4
    cy = (y0 + np.arange(heatmap.shape[0]) * s) / 4
    inside = (cy[:, None] > 160) & (cy[:, None] < 416) & (cx[None, :] > 320) & (cx[None, :] < 640)
    assert np.isfinite(heatmap[inside]).all()  # every window centred on the pale tissue
    assert np.isnan(heatmap[:, cx < 64]).all()  # none centred on the border
    far = (cy[:, None] < 100) | (cy[:, None] > 480) | (cx[None, :] < 250) | (cx[None, :] > 710)
    assert np.isnan(heatmap[far]).all()  # nor on glass a window away from the tissue
    assert summary["tissue"]["fraction"] == pytest.approx(256 * 320 / (576 * 768), abs=0.03)
