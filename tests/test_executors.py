"""One algorithm, two executors: the local build and the Beam path give identical validation outputs and splits.

Both run on the folder with every injected problem (kaggle_folders.make_with_problems). Beam writes
rows in whatever order its workers produce them, so rows are compared sorted; everything else,
byte for byte.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from kaggle_folders import make_with_problems, parse_record

from pcam_tfds.core import outputs, patches

SPLIT_ARGS = {"validation_fraction": 0.3, "sample_fraction": 0.6, "seed": 11}
BEAM_FREE = ("pcam_tfds.local_steps", "pcam_tfds.core.validated", "trainer.training.loop", "trainer.inference.predict")


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, sorted rows) of a CSV."""
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, sorted(rows)


def _manifest(path: Path) -> list[dict]:
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: (r["source"], r["id"], r["path"]))


def _member(split: str, key: str, example: dict) -> tuple:
    return key, split, example["id"], example["label"], patches.pixel_hash(example["image"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("executors")
    return root / "d", make_with_problems(root / "d")


@pytest.fixture(scope="module")
def local_run(folder, tmp_path_factory):
    from pcam_tfds import local_steps

    manual_dir, _ = folder
    checks = tmp_path_factory.mktemp("local") / "validate"
    counts = {}
    generators = local_steps.split_generators(str(manual_dir), str(checks), counts=counts, **SPLIT_ARGS)
    members = sorted(_member(split, key, parse_record(ex)) for split, gen in generators.items() for key, ex in gen)
    return checks, members, counts


@pytest.mark.slow
def test_local_and_beam_give_identical_outputs_and_splits(folder, local_run, tmp_path):
    from beam_jobs import build_steps

    manual_dir, expected = folder
    local_checks, local_members, counts = local_run
    assert counts["unused"] > 0 and {m[1] for m in local_members} == {"train", "validation", "test"}
    beam_checks = tmp_path / "validate"
    options = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    with beam.Pipeline(options=options) as p:
        pcolls = build_steps.split_pcollections(p, str(manual_dir), str(beam_checks), **SPLIT_ARGS)
        members = [
            pcoll | f"Member_{split}" >> beam.MapTuple(lambda key, ex, split=split: _member(split, key, ex))
            for split, pcoll in pcolls.items()
        ]
        assert_that(members | beam.Flatten(), equal_to(local_members))

    local_summary = (local_checks / outputs.SUMMARY).read_text()
    assert (beam_checks / outputs.SUMMARY).read_text() == local_summary
    assert json.loads(local_summary) == expected
    for name in (outputs.REPORT, outputs.INPUTS):
        assert (beam_checks / name).read_bytes() == (local_checks / name).read_bytes(), name
    for name in (outputs.REJECTED, outputs.DUPLICATES):
        local_header, local_rows = _rows(local_checks / name)
        assert _rows(beam_checks / name) == (local_header, local_rows), name
    assert len(_rows(local_checks / outputs.REJECTED)[1]) == expected["rejected"] + expected["label_rows"]["rejected"]
    assert len(_rows(local_checks / outputs.DUPLICATES)[1]) == expected["duplicate_groups"]["files_in_groups"]
    local_manifest = _manifest(local_checks / outputs.MANIFEST)
    assert _manifest(beam_checks / outputs.MANIFEST) == local_manifest
    assert len(local_manifest) == expected["total"]
    assert pq.read_schema(beam_checks / outputs.MANIFEST).equals(pq.read_schema(local_checks / outputs.MANIFEST))


def test_the_local_build_and_the_trainer_import_no_beam():
    """Run in a fresh interpreter: this test process has imported Beam already."""
    code = f"import sys, {', '.join(BEAM_FREE)}; assert 'apache_beam' not in sys.modules, 'apache_beam imported'"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_validate_runs_the_local_executor_by_default_with_the_outputs_of_beam(folder, tmp_path):
    """beam_jobs.validate without Beam options runs pcam_tfds.local_steps; with them, Beam. Same outputs."""
    from beam_jobs import validate

    manual_dir, expected = folder
    local = validate.run([f"--manual_dir={manual_dir}", f"--output_dir={tmp_path / 'local'}"])
    on_beam = validate.run(
        [f"--manual_dir={manual_dir}", f"--output_dir={tmp_path / 'beam'}", "--direct_running_mode=in_memory"]
    )
    assert local == on_beam == expected
    for name in (outputs.SUMMARY, outputs.REPORT, outputs.INPUTS):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "beam" / name).read_bytes(), name
    for name in (outputs.REJECTED, outputs.DUPLICATES):
        assert _rows(tmp_path / "local" / name) == _rows(tmp_path / "beam" / name), name
    assert _manifest(tmp_path / "local" / outputs.MANIFEST) == _manifest(tmp_path / "beam" / outputs.MANIFEST)
    rejected = {(r[2], r[4]) for r in _rows(tmp_path / "local" / outputs.REJECTED)[1] if r[0] == "file"}
    assert {reason for _, reason in rejected} >= set(expected["rejected_by_reason"]) - {"bad_label", "duplicate_id"}
