"""Local defaults for Beam options; nothing here chooses a cluster runner.

Without `--runner`, the jobs use the DirectRunner with one worker process per
core (`--direct_running_mode=multi_processing --direct_num_workers=0`), since
reading and hashing 277k files is CPU-bound. Any option given on the command
line wins, e.g. `--direct_running_mode=in_memory` for debugging.
"""

from __future__ import annotations


def _given(args: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args)


def with_local_defaults(beam_args: list[str]) -> list[str]:
    args = list(beam_args)
    if not _given(args, "runner"):
        args.append("--runner=DirectRunner")
    runner = next(a.split("=", 1)[1] for a in args if a.startswith("--runner="))
    if runner in ("DirectRunner", "direct"):
        if not _given(args, "direct_running_mode"):
            args.append("--direct_running_mode=multi_processing")
            if not _given(args, "direct_num_workers"):
                args.append("--direct_num_workers=0")
    return args
