"""pcam-slide end to end on the three real whole-slide files of ../shared/data/slides (an Aperio JPEG SVS, an Aperio
JPEG 2000 SVS without MPP, a plain RGB TIFF without MPP): each is read, masked and predicted, and every output
file is written. The model is a random-init baseline (the test is of the slide path, not of the model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_slide import run_dir  # noqa: F401 - a fixture

# (file, extra flags, the smallest share of the slide that is tissue; each checked by eye on tissue.png)
SLIDES = [
    ("CMU-1-Small-Region.svs", [], 0.15),
    ("TCGA-CR-7395-01A-01-TS1.svs", ["--mpp=0.25"], 0.4),
    ("kidney-48-5.tif", ["--mpp=0.5"], 0.005),
]


@pytest.mark.shared_data
@pytest.mark.parametrize("name, flags, tissue", SLIDES, ids=[s[0] for s in SLIDES])
def test_a_real_slide_gets_every_output(run_dir, shared_data, tmp_path, name, flags, tissue):  # noqa: F811
    import openslide

    from trainer.slides import command, outputs

    path = shared_data / "slides" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    out = tmp_path / "out"
    summary = command.run([f"--model_dir={run_dir}", f"--slide={path}", f"--output_dir={out}", *flags])
    for file in outputs.FILES:
        assert (out / file).stat().st_size > 0, file
    assert summary == json.loads((out / "summary.json").read_text())
    heatmap = np.load(out / "heatmap.npy")
    assert summary["windows"] == np.isfinite(heatmap).sum() > 0
    assert summary["mpp_source"] == ("--mpp" if flags else "the slide")
    assert summary["tissue"]["fraction"] >= tissue and summary["tissue"]["windows"] == summary["windows"]
    with openslide.OpenSlide(str(out / "heatmap.tif")) as tif:
        assert tif.level_dimensions[0] == tuple(summary["heatmap_tiff"]["size"])


@pytest.mark.shared_data
def test_a_real_slide_without_mpp_is_refused_in_one_line(run_dir, shared_data, tmp_path):  # noqa: F811
    from trainer.slides import command

    path = shared_data / "slides" / "TCGA-CR-7395-01A-01-TS1.svs"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with pytest.raises(ValueError, match="TCGA-CR-7395-01A-01-TS1.svs: the slide records no microns per pixel"):
        command.run([f"--model_dir={run_dir}", f"--slide={path}", f"--output_dir={tmp_path / 'o'}"])
    assert not (tmp_path / "o").exists()


@pytest.mark.shared_data
def test_mpp_fills_in_only_for_slides_that_record_none(run_dir, shared_data, tmp_path):  # noqa: F811
    from trainer.slides import command

    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    summary = command.run([f"--model_dir={run_dir}", f"--slide={path}", f"--output_dir={tmp_path / 'o'}", "--mpp=0.25"])
    assert summary["mpp"] == pytest.approx(0.499) and summary["mpp_source"] == "the slide"
