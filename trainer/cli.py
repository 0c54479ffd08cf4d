"""How the trainer's commands run: absl flags (--flagfile, --helpfull), a user's mistake one line and exit status 2,
a bug a traceback. The trainer's counterpart of beam_jobs/cli.py.

    def main():                        # the console script (setup.cfg) and `python -m trainer.x`
        define_flags(flags.FLAGS)
        cli.run(_main)

A user's mistake is a flag absl cannot parse (unknown, missing or out of range) or an error the command
raises for its inputs and hands to `fail` (a missing folder, a bad value, a busy run folder): one line
`error: ...` on stderr and exit status 2, as argparse and the Beam jobs do. Anything else is a bug and
keeps its traceback; PCAM_TRACEBACK=1 shows it for user mistakes too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags

TRACEBACK_ENV = "PCAM_TRACEBACK"
USAGE_EXIT = 2  # argparse's status for a usage error; the Beam jobs use it too
HELP_FLAGS = {"-?", "-h", "-help", "--help", "--helpshort", "--helpfull", "--helpxml"}


def fail(error: BaseException) -> NoReturn:
    """Ends the command for a user's mistake: `error: MESSAGE` on stderr, exit status 2 (or re-raises it)."""
    if os.environ.get(TRACEBACK_ENV):
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(USAGE_EXIT)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with one line and status 2 for a bad flag (absl's own: two lines and status 1) and
    status 0 after --help (absl's: 1, which reads as a failure to scripts and `make`)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        # Several failed checks come as several lines: one line still names each.
        fail(flags.Error("; ".join(line.strip() for line in str(e).splitlines() if line.strip())))
    except SystemExit as e:
        if e.code == 1 and HELP_FLAGS & {a.split("=")[0] for a in argv[1:]}:
            sys.exit(0)
        raise


def run(main: Callable[[list[str]], int | None]) -> NoReturn:
    """app.run(main) with `parse_flags`; main's return value is the exit status."""
    app.run(main, flags_parser=parse_flags)
