"""beam_jobs.eda and beam_jobs.report: the report from demo data, checked in headless Chromium from outside the page."""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pyarrow as pa
import pytest
import tifffile
from kaggle_folders import make_with_problems
from PIL import Image

from beam_jobs import eda
from beam_jobs.report import browser, figures, page, scan
from pcam_tfds.core import channel_stats as stats
from pcam_tfds.core import stains

IN_MEMORY = ["--direct_running_mode=in_memory"]
FIGURES = (
    "sample_patches",
    "channels",
    "stains",
    "stain_histograms",
    "labels",
    "histograms",
    "flags",
    "flagged",
    "duplicates",
)


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
    return stats.build_stats(accs, [("truncated", 1)], t, 11, {"manual_dir": "<b>demo</b> & co"})


def _cut_off_texts(fig) -> list[str]:
    """The texts of FIG that reach past the figure's edge (a caption the PNG would cut off)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    # Titles, axis labels, annotations and legends: the captions (tick labels outside the view are never drawn).
    texts = list(fig.texts) + [t for leg in fig.legends for t in leg.get_texts()]
    if fig._suptitle is not None:
        texts.append(fig._suptitle)
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend():
            texts += ax.get_legend().get_texts()
    out = []
    for t in texts:
        if not t.get_visible() or not t.get_text().strip():
            continue
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1:
            out.append(t.get_text())
    return out


def _captions_over_patches(fig) -> list[str]:
    """Titles and axis labels of FIG's axes drawn over the image of another axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    shown = [ax for ax in fig.axes if ax.images]
    out = []
    for ax in fig.axes:
        for t in (ax.title, ax._left_title, ax.xaxis.label, ax.yaxis.label):
            if t.get_text().strip():
                e = t.get_window_extent(renderer)
                out += [
                    t.get_text() for other in shown if other is not ax and e.overlaps(other.get_window_extent(renderer))
                ]
    return out


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
        assert _cut_off_texts(fig) == [] and _captions_over_patches(fig) == [], name
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
    # Shown in the order drawn, not sorted by id; the manifest's row order does not matter.
    drawn = [[i for i, _ in eda.pick_examples(manifest, 7, seed=s)["negative"]] for s in range(5)]
    assert any(ids != sorted(ids) for ids in drawn)
    reversed_manifest = manifest.take(list(range(19, -1, -1)))
    assert eda.pick_examples(reversed_manifest, 3, seed=5) == picked


def test_a_one_row_block_of_samples_keeps_its_label_caption_inside_the_figure():
    rng = np.random.default_rng(0)
    for per_label in (1, 4, 8, 9):
        examples = {
            g: [(f"{g}{i}", rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for i in range(per_label)]
            for g in ("negative", "positive")
        }
        fig = figures.sample_grid(examples)
        assert _cut_off_texts(fig) == [], per_label
        renderer = fig.canvas.get_renderer()
        shown = [ax for ax in fig.axes if ax.images]
        for ax in shown:
            if ax.get_ylabel():  # each label caption fits beside its own block of rows
                assert ax.yaxis.label.get_window_extent(renderer).height <= ax.get_window_extent(renderer).height
            title = ax.title.get_window_extent(renderer)
            for other in shown:  # no id is written over another patch
                assert other is ax or not title.overlaps(other.get_window_extent(renderer)), (per_label, ax.get_title())


def _patch_folder(tmp_path):
    """Ten TIFFs with known flags and the manifest of them: (manifest, {id: pixels})."""
    rng = np.random.default_rng(2)
    tissue = [rng.integers(60, 200, (96, 96, 3), dtype=np.uint8) for _ in range(6)]
    pixels = {
        **{f"t{k}": p for k, p in enumerate(tissue)},
        "white": np.full((96, 96, 3), 240, np.uint8),  # background and blank
        "grey": np.full((96, 96, 3), 128, np.uint8),  # blank only
        "black": np.full((96, 96, 3), 5, np.uint8),  # dark and blank
        "halfwhite": np.concatenate([np.full((60, 96, 3), 250, np.uint8), tissue[0][:36]]),  # background only
    }
    for id_, p in pixels.items():
        tifffile.imwrite(tmp_path / f"{id_}.tif", p)
    ids = list(pixels)
    manifest = pa.table(
        {
            "id": ids,
            "source": ["test" if i == "t5" else "train" for i in ids],
            "label": [-1 if i == "t5" else k % 2 for k, i in enumerate(ids)],
            "path": [str(tmp_path / f"{i}.tif") for i in ids],
            "valid": [True] * len(ids),
        }
    )
    return manifest, pixels


def test_scan_flags_patches_by_the_stats_rule_and_histograms_their_stains(tmp_path):
    manifest, pixels = _patch_folder(tmp_path)
    rows = scan.draw(scan.valid_rows(manifest), 100, seed=3)
    assert sorted(r.id for r in rows) == sorted(pixels)
    found = scan.scan(rows, stats.Thresholds(), keep=2)
    assert found.total == 10 and found.scanned == {"negative": 5, "positive": 4, "test": 1}
    flagged_ids = {f: {r.id for r, _ in found.flagged[f]} for f in scan.GALLERY_FLAGS}
    assert flagged_ids["background"] == {"white", "halfwhite"}
    assert flagged_ids["dark"] == {"black"}
    assert len(flagged_ids["blank"]) == 2 and flagged_ids["blank"] <= {"white", "grey", "black"}  # keep=2 of 3
    assert sum(found.flag_counts["blank"].values()) == 3  # counted beyond those kept
    for flag in scan.GALLERY_FLAGS:
        for row, shown in found.flagged[flag]:
            np.testing.assert_array_equal(shown, pixels[row.id])
    # Every pixel of every scanned patch is in each stain's histogram, by group.
    for g, n in found.scanned.items():
        assert found.hed_histograms[g].shape == (3, scan.HED_BINS)
        assert found.hed_histograms[g].sum(axis=1).tolist() == [n * 96 * 96] * 3
    # Seeded: the same seed draws the same patches in the same order; another seed another order.
    again = scan.scan(scan.draw(scan.valid_rows(manifest), 100, seed=3), stats.Thresholds(), keep=2)
    assert {f: [r.id for r, _ in v] for f, v in again.flagged.items()} == {
        f: [r.id for r, _ in v] for f, v in found.flagged.items()
    }
    orders = {tuple(r.id for r in scan.draw(scan.valid_rows(manifest), 100, seed=s)) for s in range(4)}
    assert len(orders) > 1


def test_the_hed_histogram_puts_a_pure_stain_in_its_own_bin():
    amounts = np.array([1.0, 0.0, 0.0])  # haematoxylin only
    pixel = np.clip(np.rint(stains.hed_to_rgb(amounts)), 0, 255).astype(np.uint8)
    h = scan.hed_histogram(np.broadcast_to(pixel, (1, 4, 4, 3)))
    lo, hi = scan.HED_RANGE
    peaks = h.argmax(axis=1)
    centres = lo + (peaks + 0.5) * (hi - lo) / scan.HED_BINS
    np.testing.assert_allclose(centres, amounts, atol=0.03)  # rounding to uint8 moves it a little
    assert h.sum(axis=1).tolist() == [16, 16, 16]


def test_duplicate_groups_come_with_paths_and_skip_members_that_are_not_valid(tmp_path):
    manifest, _ = _patch_folder(tmp_path)
    text = (
        "pixel_hash,kind,conflicting_labels,source,id,label\n"
        "aa,within_train,True,train,t0,0\naa,within_train,True,train,t1,1\n"
        "bb,across_train_test,False,train,t2,0\nbb,across_train_test,False,test,t5,\n"
        "cc,within_train,False,train,t3,1\ncc,within_train,False,train,gone,1\n"
    )
    groups, total = scan.duplicate_groups(text, manifest, limit=5)
    assert total == 3 and [g.pixel_hash for g in groups] == ["aa", "bb"]  # cc has one valid member left
    assert groups[0].conflicting_labels and not groups[1].conflicting_labels
    assert [(m.source, m.id, m.label) for m in groups[1].members] == [("train", "t2", 0), ("test", "t5", -1)]
    assert groups[1].members[1].path == str(tmp_path / "t5.tif")
    assert scan.duplicate_groups(text, manifest, limit=1)[0] == groups[:1]


def test_new_report_figures_show_the_patches_they_are_given(tmp_path):
    manifest, pixels = _patch_folder(tmp_path)
    found = scan.scan(scan.draw(scan.valid_rows(manifest), 100, seed=0), stats.Thresholds(), keep=8)
    gallery = figures.flagged_gallery(found.flagged, found.flag_counts, found.total)
    row_titles = [ax.get_title(loc="left") for ax in gallery.axes if ax.get_title(loc="left")]
    assert row_titles == ["background: 2 of 10 patches", "dark: 1 of 10 patches", "blank: 3 of 10 patches"]
    assert sum(1 for ax in gallery.axes if ax.images) == 6

    examples = [("t0", "negative", pixels["t0"]), ("t1", "positive", pixels["t1"])]
    sep = figures.stain_separation(examples)
    assert [ax.get_title() for ax in sep.axes[:4]] == ["RGB patch", "haematoxylin", "eosin", "DAB"]
    hed = stains.rgb_to_hed(pixels["t1"])
    np.testing.assert_array_equal(np.asarray(sep.axes[5].images[0].get_array()), stains.stain_rgb(hed, 0))

    hist = figures.stain_histograms(found.hed_histograms, found.scanned, scan.HED_RANGE)
    assert [len(ax.lines) for ax in hist.axes] == [3, 3, 3] and hist.axes[0].get_legend()

    groups, _ = scan.duplicate_groups(
        "pixel_hash,kind,conflicting_labels,source,id,label\naa,within_train,True,train,t0,0\naa,within_train,True,train,t1,1\n",
        manifest,
        limit=8,
    )
    pairs = figures.duplicate_pairs(eda.load_duplicates(groups))
    shown = [ax for ax in pairs.axes if ax.images]
    assert len(shown) == 2 and "labels differ" in shown[0].get_title(loc="left")
    np.testing.assert_array_equal(np.asarray(shown[1].images[0].get_array()), pixels["t1"])
    for fig in (gallery, sep, hist, pairs):
        assert fig.get_suptitle()
        assert _cut_off_texts(fig) == [] and _captions_over_patches(fig) == []
        assert Image.open(io.BytesIO(figures.png_bytes(fig, dpi=40))).size[0] > 100


def test_cli_needs_data_or_both_outputs(capsys):
    with pytest.raises(SystemExit):
        eda.parse_args(["--output_dir=x", "--validation_dir=v"])
    assert "give --manual_dir, or both --validation_dir and --stats" in capsys.readouterr().err


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
    path = eda.run([f"--manual_dir={data}", f"--output_dir={out}", "--num_examples=4", *IN_MEMORY])
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
