"""The jobs print their progress and their result, and nothing else, unless --log_level asks for more (issue 13).

Run as a user runs them (`python -m beam_jobs.validate` in a subprocess, Beam's local workers included),
since the noise came from import-time warnings and from the worker processes.
"""

from __future__ import annotations

import pytest
from cli_runs import run_module
from kaggle_folders import make_clean, make_with_problems

pytestmark = pytest.mark.slow

NOISE = ("apitools", "cuInit", "oauth", "Worker:", "sdk_worker", "semi_persistent", "prism")


def lines_of(proc) -> list[str]:
    return (proc.stdout + proc.stderr).splitlines()


def test_a_clean_validate_prints_progress_and_result_only(tmp_path):
    kaggle = make_clean(tmp_path / "kaggle", num_train=20, num_test=5, seed=0)
    proc = run_module("beam_jobs.validate", f"--manual_dir={kaggle}", f"--output_dir={tmp_path / 'out'}")
    lines = lines_of(proc)
    assert len(lines) <= 10, "\n".join(lines)
    assert proc.stdout.splitlines() == [
        f"25 files: 25 valid, 0 rejected {{}}; label rows rejected: 0; report: {tmp_path / 'out' / 'report.md'}"
    ]
    assert any(line.startswith("validate: 25 files in ") for line in proc.stderr.splitlines()), proc.stderr
    assert not [line for line in lines if any(n.lower() in line.lower() for n in NOISE)], "\n".join(lines)


def test_log_level_info_shows_the_log_lines_too(tmp_path):
    kaggle = make_clean(tmp_path / "kaggle", num_train=20, num_test=5, seed=0)
    args = (
        "beam_jobs.validate",
        f"--manual_dir={kaggle}",
        f"--output_dir={tmp_path / 'out'}",
        "--log_level=INFO",
        "--runner=DirectRunner",  # Beam's worker processes (without a Beam option the local executor runs)
    )
    lines = lines_of(run_module(*args))
    assert len(lines) > 20
    assert "INFO root: validating 25 files under" in "\n".join(lines)
    assert any("Worker:" in line for line in lines)  # the workers' own lines reach the driver at INFO


def test_rejected_files_and_rows_are_counted_in_the_result_line(tmp_path):
    want = make_with_problems(tmp_path / "kaggle")
    proc = run_module("beam_jobs.validate", f"--manual_dir={tmp_path / 'kaggle'}", f"--output_dir={tmp_path / 'out'}")
    assert proc.stdout.splitlines() == [
        f"{want['total']} files: {want['valid']} valid, {want['rejected']} rejected {want['rejected_by_reason']}; "
        f"label rows rejected: {want['label_rows']['rejected']}; report: {tmp_path / 'out' / 'report.md'}"
    ]
    assert len(lines_of(proc)) <= 10
