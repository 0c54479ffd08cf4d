"""beam_jobs.validate: its transforms in TestPipeline, and whole runs with exact expected counts."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pandas as pd
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from beam_services import portable_runner_options
from kaggle_folders import make_clean, make_with_problems

from beam_jobs import transforms, validate
from pcam_tfds.core import layout, outputs, records, summary


def _rec(id_, source="train", valid=True, reason=None, pixel_hash="h"):
    rec = records.file_record(f"/d/{source}/{id_}.tif", source)
    rec.update(valid=valid, reason=reason, pixel_hash=pixel_hash)
    return rec


def test_join_labels_transform():
    files = [_rec("a", pixel_hash="1"), _rec("b", pixel_hash="2"), _rec("t", "test", pixel_hash="3")]
    rows = [layout.parse_label_line(x) for x in ("a,1", "b,7", "c,0")]
    with TestPipeline() as p:
        joined = (p | "F" >> beam.Create(files), p | "R" >> beam.Create(rows)) | transforms.JoinLabels()
        assert_that(
            joined.files | beam.Map(lambda f: (f["id"], f["valid"], f["reason"], f["label"])),
            equal_to([("a", True, None, 1), ("b", False, "bad_label", -1), ("t", True, None, -1)]),
            label="files",
        )
        assert_that(
            joined.rejected_rows | beam.Map(lambda r: (r["id"], r["reason"])),
            equal_to([("b", "bad_label"), ("c", "missing_file")]),
            label="rows",
        )


def test_find_duplicates_transform():
    files = [
        dict(_rec("a", pixel_hash="x"), label=1),
        dict(_rec("b", pixel_hash="x"), label=0),
        _rec("t1", "test", pixel_hash="y"),
        _rec("t2", "test", pixel_hash="y"),
        _rec("c", pixel_hash="z"),
        _rec("t3", "test", pixel_hash="z"),
        _rec("bad", valid=False, reason="truncated", pixel_hash=None),
        _rec("bad2", valid=False, reason="truncated", pixel_hash=None),
    ]
    with TestPipeline() as p:
        groups = p | beam.Create(files) | transforms.FindDuplicates()
        assert_that(
            groups | beam.Map(lambda g: (g["pixel_hash"], g["kind"], g["conflicting_labels"], len(g["members"]))),
            equal_to(
                [("x", "within_train", True, 2), ("y", "within_test", False, 2), ("z", "across_train_test", False, 2)]
            ),
        )


def test_read_patch_files_transform(tmp_path):
    folder = make_clean(tmp_path / "d", num_train=6, num_test=2)
    (folder / "train" / "broken.tif").write_bytes(b"II*\x00")
    paths = {s: layout.list_files(str(folder), s) for s in layout.SOURCES}
    with TestPipeline() as p:
        recs = p | transforms.ReadPatchFiles(paths, batch_size=3)
        assert_that(
            recs | beam.Map(lambda r: (r["source"], r["valid"], r["reason"])),
            equal_to([("train", True, None)] * 6 + [("test", True, None)] * 2 + [("train", False, "truncated")]),
        )


def _run(folder, out, *extra):
    return validate.run([f"--manual_dir={folder}", f"--output_dir={out}", *extra])


@pytest.mark.slow
def test_full_run_with_injected_problems(tmp_path):
    expected = make_with_problems(tmp_path / "d")
    summary = _run(tmp_path / "d", tmp_path / "out", "--direct_running_mode=in_memory", "--batch_size=5")
    assert summary == expected
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == expected

    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert len(manifest) == expected["total"]
    assert manifest["id"].is_unique
    assert manifest["valid"].sum() == expected["valid"]
    valid = manifest[manifest["valid"]]
    assert valid["pixel_hash"].notna().all() and valid[["mean_r", "std_b"]].notna().all().all()
    assert set(manifest.loc[manifest["source"] == "test", "label"]) == {-1}

    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv", keep_default_na=False)
    files = rejected[rejected["kind"] == "file"]
    assert len(files) == expected["rejected"]
    assert files["reason"].value_counts().to_dict() == expected["rejected_by_reason"]
    rows = rejected[rejected["kind"] == "label_row"]
    assert rows["reason"].value_counts().to_dict() == expected["label_rows"]["rejected_by_reason"]
    assert "../x" in set(rows["id"])

    dups = pd.read_csv(tmp_path / "out" / "duplicates.csv")
    assert set(dups["id"]) >= {"nolabel", "copyoftrain"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "59 files: 49 valid, 10 rejected" in report


@pytest.mark.slow
def test_strict_exits_nonzero_on_rejections(tmp_path):
    make_with_problems(tmp_path / "d")
    with pytest.raises(SystemExit) as e:
        _run(tmp_path / "d", tmp_path / "out", "--strict", "--direct_running_mode=in_memory")
    assert e.value.code == 1


@pytest.mark.slow
def test_clean_folder_multi_processing_default_and_strict(tmp_path):
    make_clean(tmp_path / "d", num_train=30, num_test=6)
    # The DirectRunner's default mode here: all cores (without any Beam option the local executor runs instead).
    summary = _run(tmp_path / "d", tmp_path / "out", "--strict", "--runner=DirectRunner")
    assert (summary["total"], summary["valid"], summary["rejected"]) == (36, 36, 0)
    assert summary["label_rows"] == {"total": 30, "matched": 30, "rejected": 0, "rejected_by_reason": {}}
    rejected = (tmp_path / "out" / "rejected.csv").read_text().splitlines()
    assert rejected == [",".join(outputs.REJECTED_HEADER)]


def test_missing_folder_and_bad_header_fail_early(tmp_path):
    with pytest.raises(FileNotFoundError, match="train"):
        _run(tmp_path, tmp_path / "out")
    folder = make_clean(tmp_path / "d", num_train=2, num_test=1)
    (folder / "train_labels.csv").write_text("image,target\nx,1\n")
    with pytest.raises(ValueError, match=r"train_labels.csv: header is 'image,target'"):
        _run(folder, tmp_path / "out")


def test_accounting_error_when_files_go_missing():
    counts = [(("file", "train", True, "", 1), 3)]
    with pytest.raises(summary.AccountingError, match="4 files were listed but 3"):
        summary.build_summary(counts, num_rows=3, duplicate_facts=[], num_listed=4)
    with pytest.raises(summary.AccountingError, match="has 5 rows"):
        summary.build_summary(counts, num_rows=5, duplicate_facts=[], num_listed=3)


@pytest.mark.slow
def test_portable_runner_with_external_workers(tmp_path):
    expected = make_with_problems(tmp_path / "d")
    with portable_runner_options(tmp_path) as options:
        summary = _run(tmp_path / "d", tmp_path / "out", *options)
    assert summary == expected


@pytest.mark.slow
def test_a_killed_runs_beam_temp_folders_are_removed_and_a_busy_output_is_refused(tmp_path):
    from pcam_tfds.core import folder_lock

    folder = make_clean(tmp_path / "d", num_train=4, num_test=2)
    out = tmp_path / "out"
    (out / "beam-temp-manifest-0123").mkdir(parents=True)  # what a SIGKILL mid-write leaves
    with folder_lock.FolderLock(out, "another validate"):
        with pytest.raises(folder_lock.FolderBusy, match="another validate"):
            _run(folder, out, "--direct_running_mode=in_memory")
    summary = _run(folder, out, "--direct_running_mode=in_memory")
    assert summary["total"] == 6
    assert sorted(p.name for p in out.iterdir()) == [
        "duplicates.csv",
        "inputs.json",
        "manifest.parquet",
        "rejected.csv",
        "report.md",
        "summary.json",
    ]


def test_a_missing_folder_is_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_jobs.validate",
            f"--manual_dir={tmp_path / 'nope'}",
            f"--output_dir={tmp_path / 'out'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "nope" in proc.stderr
