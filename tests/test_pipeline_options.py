"""The jobs' local Beam defaults, the runner argument in both of argparse's forms, and the local runner."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from beam_jobs.pipeline_options import LOCAL_RUNNER, with_local_defaults

QUIET = "--default_sdk_harness_log_level=ERROR"
MODES = ["--direct_running_mode=multi_processing", "--direct_num_workers=0", QUIET]
LOCAL = [f"--runner={LOCAL_RUNNER}", *MODES]


@pytest.mark.parametrize(
    "given, expected",
    [
        ([], LOCAL),
        (["--runner=DirectRunner"], ["--runner=DirectRunner", *MODES]),
        (["--runner", "DirectRunner"], ["--runner", "DirectRunner", *MODES]),
        (["--runner", "PortableRunner", "--job_endpoint=localhost:8099"], None),
        (["--runner=FlinkRunner", "--flink_version=1.19"], None),
        (["--direct_running_mode=in_memory"], ["--direct_running_mode=in_memory", f"--runner={LOCAL_RUNNER}", QUIET]),
        (
            ["--direct_running_mode", "in_memory", "--default_sdk_harness_log_level=DEBUG"],
            ["--direct_running_mode", "in_memory", "--default_sdk_harness_log_level=DEBUG", f"--runner={LOCAL_RUNNER}"],
        ),
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


@pytest.mark.parametrize("log_level, harness", [("WARNING", "ERROR"), ("INFO", "INFO"), ("DEBUG", "DEBUG")])
def test_the_workers_log_at_the_jobs_level_but_errors_only_by_default(log_level, harness):
    assert with_local_defaults([], log_level)[-1] == f"--default_sdk_harness_log_level={harness}"


def test_the_local_runner_is_the_fn_api_runner_with_quiet_workers(monkeypatch):
    """Beam's FnApiRunner (the DirectRunner would try Prism first), whose multi_processing workers start as
    `python -m beam_jobs.worker`; that the options reach them is checked end to end (test_quiet_cli.py)."""
    import apache_beam as beam
    from apache_beam.portability import python_urns
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.transforms import environments

    from beam_jobs import local_runner

    options = PipelineOptions(with_local_defaults([]))
    pipeline = beam.Pipeline(options=options)
    assert type(pipeline.runner) is local_runner.LocalRunner
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
    seen = []

    def record(self, proto, options):  # what the FnApiRunner would be given to run
        envs = proto.components.environments.values()
        seen.extend(env.payload.decode() for env in envs if env.urn == python_urns.SUBPROCESS_SDK)

    monkeypatch.setattr(fn_runner.FnApiRunner, "run_via_runner_api", record)
    beam_default = environments.SubprocessSDKEnvironment.from_command_string(local_runner.BEAM_WORKER)
    pipeline.runner.run_via_runner_api(pipeline.to_runner_api(default_environment=beam_default), options)
    assert seen == [local_runner.QUIET_WORKER]
