"""Local defaults for Beam options; nothing here chooses a cluster runner.

Without `--runner`, the jobs use the DirectRunner with one worker process per
core (`--direct_running_mode=multi_processing --direct_num_workers=0`), since
reading and hashing 277k files is CPU-bound. Any option given on the command
line wins, e.g. `--direct_running_mode=in_memory` for debugging.
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


def with_local_defaults(beam_args: list[str]) -> list[str]:
    args = list(beam_args)
    runner = _value(args, "runner")
    if runner is None:
        args.append("--runner=DirectRunner")
        runner = "DirectRunner"
    if runner in ("DirectRunner", "direct"):
        if not _given(args, "direct_running_mode"):
            args.append("--direct_running_mode=multi_processing")
            if not _given(args, "direct_num_workers"):
                args.append("--direct_num_workers=0")
    return args
