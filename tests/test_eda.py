"""beam_jobs.eda and beam_jobs.report: the report from demo data, checked in headless Chromium from outside the page."""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pyarrow as pa
import pytest
from kaggle_folders import make_with_problems
from PIL import Image

from beam_jobs import eda
from beam_jobs.report import browser, figures, page
from pcam_tfds.core import channel_stats as stats

IN_MEMORY = ["--direct_running_mode=in_memory"]
FIGURES = ("sample_patches", "channels", "labels", "histograms", "flags")


@pytest.fixture(scope="module")
def chromium():
    path = browser.find_chromium()
    if not path:
        pytest.skip(
            "Chromium is not installed (Debian: apt-get install chromium): the report cannot be opened in a browser"
        )
    return path


def _stats_doc() -> dict:
    rng = np.random.default_rng(0)
    t = stats.Thresholds()
    accs = [
        (g, stats.PatchStats().add(rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8), t))
        for g, n in (("negative", 5), ("positive", 3), ("test", 2))
    ]
    return stats.build_stats(accs, [("truncated", 1)], t, 11, {"data_dir": "<b>demo</b> & co"})


def test_figures_have_titles_labels_and_legends():
    doc = _stats_doc()
    rng = np.random.default_rng(1)
    examples = {
        g: [(f"{g}{i:02d}", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for i in range(3)]
        for g in ("negative", "positive")
    }
    made = {
        "sample_patches": figures.sample_grid(examples, columns=4),
        "channels": figures.channel_split("abc", 1, examples["positive"][0][1]),
        "labels": figures.label_distribution(doc),
        "histograms": figures.rgb_histograms(doc),
        "flags": figures.patch_flags(doc),
    }
    for name, fig in made.items():
        assert fig.get_suptitle() or any(ax.get_title() for ax in fig.axes), name
        assert fig.legends or any(ax.get_legend() for ax in fig.axes), name
        png = figures.png_bytes(fig, dpi=40)
        assert Image.open(io.BytesIO(png)).size[0] > 100, name
    for name in ("labels", "histograms", "flags", "channels"):
        ax = made[name].axes[0]
        assert ax.get_xlabel() and ax.get_ylabel(), name
    # Three lines per channel panel: negative, positive, test.
    assert [len(ax.lines) for ax in made["histograms"].axes] == [3, 3, 3]


def test_page_escapes_values_and_has_no_script_or_external_resource():
    doc = _stats_doc()
    summary = {
        "total": 11,
        "valid": 10,
        "rejected": 1,
        "rejected_by_reason": {"truncated": 1},
        "by_source": {
            "train": {"total": 9, "valid": 8, "rejected": 1},
            "test": {"total": 2, "valid": 2, "rejected": 0},
        },
        "label_rows": {"total": 9, "matched": 9, "rejected": 0, "rejected_by_reason": {}},
        "duplicate_groups": dict.fromkeys(
            ("within_train", "within_test", "across_train_test", "conflicting_labels", "files_in_groups"), 0
        ),
    }
    rejected = ([{"kind": "file", "id": "<img src=x onerror=alert(1)>", "reason": "truncated"}], 1)
    png = figures.png_bytes(figures.label_distribution(doc), dpi=30)
    html = page.render(
        title="EDA of <b>demo</b>",
        stats=doc,
        summary=summary,
        rejected=rejected,
        duplicates=([], 0),
        figures={"labels": (png, "labels & counts")},
        sources=[("stats", "a<b")],
        generated="now",
    )
    assert "<b>demo</b>" not in html and "&lt;b&gt;demo&lt;/b&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html.lower()
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert base64.b64decode(srcs[0].split(",", 1)[1]) == png
    assert "http://" not in html and "https://" not in html


def test_pick_examples_is_seeded_and_takes_valid_train_files_of_each_label():
    ids = [f"{i:02d}" for i in range(20)]
    manifest = pa.table(
        {
            "id": ids,
            "source": ["test" if i >= 16 else "train" for i in range(20)],
            "label": [-1 if i >= 16 else i % 2 for i in range(20)],
            "path": [f"/d/{i}.tif" for i in ids],
            "valid": [i not in (0, 1) for i in range(20)],
        }
    )
    picked = eda.pick_examples(manifest, 3, seed=5)
    assert picked == eda.pick_examples(manifest, 3, seed=5)
    assert picked != eda.pick_examples(manifest, 3, seed=6)
    assert all(int(i) % 2 == 0 and 2 <= int(i) < 16 for i, _ in picked["negative"]) and len(picked["negative"]) == 3
    assert all(int(i) % 2 == 1 and 2 <= int(i) < 16 for i, _ in picked["positive"]) and len(picked["positive"]) == 3
    assert [len(v) for v in eda.pick_examples(manifest, 50, seed=0).values()] == [7, 7]


def test_cli_needs_data_or_both_outputs(capsys):
    with pytest.raises(SystemExit):
        eda.parse_args(["--output_dir=x", "--validation_dir=v"])
    assert "give --data_dir, or both --validation_dir and --stats" in capsys.readouterr().err


def test_browser_check_reports_broken_images_and_console_errors(tmp_path, chromium):
    good = base64.b64encode(figures.png_bytes(figures.label_distribution(_stats_doc()), dpi=20)).decode()
    (tmp_path / "bad.html").write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        f'<img src="data:image/png;base64,{good}"><img src="missing.png"><img src="data:image/png;base64,AAAA">'
        "<script>console.error('boom from the page'); throw new Error('bang');</script></body></html>"
    )
    result = browser.check_page(str(tmp_path / "bad.html"), chromium)
    assert result.title == "bad" and not result.ok
    assert len(result.images) == 3 and len(result.broken_images) == 2
    assert result.images[0]["naturalWidth"] > 0
    text = "\n".join(result.errors)
    assert "boom from the page" in text and "bang" in text and "missing.png" in text


@pytest.mark.slow
def test_report_from_demo_data_opens_in_chromium_after_moving(tmp_path, chromium):
    data = tmp_path / "data"
    data.mkdir()
    expected = make_with_problems(data)
    out = tmp_path / "eda"
    path = eda.run([f"--data_dir={data}", f"--output_dir={out}", "--num_examples=4", *IN_MEMORY])
    assert path == str(out / "report.html")
    for name in FIGURES:
        assert Image.open(out / f"{name}.png").size[0] > 300, name
    html = (out / "report.html").read_text()
    assert f"<b>{expected['total']} files: {expected['valid']} valid, {expected['rejected']} rejected.</b>" in html
    for reason in expected["rejected_by_reason"]:
        assert f"<td>{reason}</td>" in html, reason
    assert "duplicates.csv" in html and "copyoftrain" in html  # the duplicate rows are listed

    # The folder is movable: nothing in the page points outside it.
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    result = browser.check_page(str(moved / "report.html"), chromium)
    assert result.errors == []
    assert len(result.images) == len(FIGURES)
    assert result.broken_images == [] and all(i["naturalWidth"] > 300 for i in result.images)
    assert result.title.startswith("PCam exploratory data analysis")

    # Reusing the job outputs draws the same report without running a pipeline.
    again = eda.run(
        [
            f"--validation_dir={moved / 'validate'}",
            f"--stats={moved / 'stats' / 'stats.json'}",
            f"--output_dir={tmp_path / 'again'}",
            "--num_examples=4",
        ]
    )
    assert browser.check_page(again, chromium).ok
