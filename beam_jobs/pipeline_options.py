"""Local defaults for Beam options; nothing here chooses a cluster runner.

Without `--runner`, the jobs run on this machine with one worker process per
core (`--direct_running_mode=multi_processing --direct_num_workers=0`), since
reading and hashing 277k files is CPU-bound. The runner is Beam's FnApiRunner,
which is what the DirectRunner runs such pipelines on, named so that Beam does
not first try to download and start its Prism runner (`beam_jobs.local_runner`).
The workers log at the job's `--log_level`, except that at the default (WARNING)
they log errors only: their warnings are Beam's own, two per worker, about its
setup. Any option given on the command line wins, e.g.
`--direct_running_mode=in_memory` for debugging or `--runner=DirectRunner`.
"""

from __future__ import annotations


def _value(args: list[str], name: str) -> str | None:
    """The last value given for --name, in either of argparse's forms (`--name=X` or `--name X`);
    "" for a bare `--name` at the end; None if not given."""
    value = None
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
        elif a == f"--{name}":
            value = args[i + 1] if i + 1 < len(args) else ""
    return value


def _given(args: list[str], name: str) -> bool:
    return _value(args, name) is not None


LOCAL_RUNNER = "beam_jobs.local_runner.LocalRunner"  # the one spelling of its name (tests/test_pipeline_options.py)


def harness_log_level(log_level: str) -> str:
    """The workers' log level for the job's --log_level: errors only at the default, else the same."""
    return "ERROR" if log_level == "WARNING" else log_level


def with_local_defaults(beam_args: list[str], log_level: str = "WARNING") -> list[str]:
    args = list(beam_args)
    runner = _value(args, "runner")
    if runner is None:
        args.append(f"--runner={LOCAL_RUNNER}")
        runner = LOCAL_RUNNER
    if runner in (LOCAL_RUNNER, "DirectRunner", "direct"):
        if not _given(args, "direct_running_mode"):
            args.append("--direct_running_mode=multi_processing")
            if not _given(args, "direct_num_workers"):
                args.append("--direct_num_workers=0")
        if not _given(args, "default_sdk_harness_log_level"):
            args.append(f"--default_sdk_harness_log_level={harness_log_level(log_level)}")
    return args
