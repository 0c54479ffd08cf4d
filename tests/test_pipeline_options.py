"""The jobs' local Beam defaults, and the runner argument in both of argparse's forms."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from beam_jobs.pipeline_options import with_local_defaults

LOCAL = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=0"]


@pytest.mark.parametrize(
    "given, expected",
    [
        ([], LOCAL),
        (["--runner=DirectRunner"], LOCAL),
        (["--runner", "DirectRunner"], ["--runner", "DirectRunner", *LOCAL[1:]]),
        (["--runner", "PortableRunner", "--job_endpoint=localhost:8099"], None),
        (["--runner=FlinkRunner", "--flink_version=1.19"], None),
        (["--direct_running_mode=in_memory"], ["--direct_running_mode=in_memory", "--runner=DirectRunner"]),
        (["--direct_running_mode", "in_memory"], ["--direct_running_mode", "in_memory", "--runner=DirectRunner"]),
    ],
)
def test_local_defaults_apply_to_the_direct_runner_only(given, expected):
    args = with_local_defaults(given)
    assert args == (given if expected is None else expected)


@pytest.mark.parametrize("form", [["--runner=PortableRunner"], ["--runner", "PortableRunner"]])
def test_both_runner_forms_reach_beam_unchanged(form):
    """`--runner X` once crashed with a bare StopIteration; both forms must mean the same to Beam."""
    options = PipelineOptions(with_local_defaults([*form, "--job_endpoint=localhost:8099"]))
    assert options.view_as(StandardOptions).runner == "PortableRunner"
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"  # Beam's default: nothing added


def test_the_space_form_of_the_direct_runner_gets_the_local_defaults():
    options = PipelineOptions(with_local_defaults(["--runner", "DirectRunner"]))
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert options.view_as(DirectOptions).direct_num_workers == 0
