"""How the absl commands run (`pcam-build` and the trainer's): absl flags (--flagfile, --helpfull), a user's
mistake one line and exit status 2, a bug a traceback. The counterpart of beam_jobs/cli.py, which runs the
Beam jobs with Beam's own argument conventions. It imports neither TensorFlow nor Beam.

    def main():                        # the console script (setup.cfg) and `python -m trainer.x`
        define_flags(flags.FLAGS)
        cli.run(_main, tensorflow=True)

Quiet by default: absl's INFO log lines (and TensorFlow's, which go through the same root logger) are off
unless `--verbosity=0` (INFO) or `--verbosity=1` (DEBUG) is given; warnings and errors always show. What a
command is doing goes to stderr through `pcam_tfds.core.progress.print_line`, its result to stdout, at every
verbosity.

A user's mistake is a flag absl cannot parse (unknown, missing or out of range) or an error the command
raises for its inputs and hands to `fail` (a missing folder, a bad value, a busy run folder): one line
`error: ...` on stderr and exit status 2, as argparse and the Beam jobs do. Anything else is a bug and
keeps its traceback; PCAM_TRACEBACK=1 shows it for user mistakes too.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import NoReturn

from absl import app, flags

TRACEBACK_ENV = "PCAM_TRACEBACK"
USAGE_EXIT = 2  # argparse's status for a usage error; the Beam jobs use it too
QUIET_VERBOSITY = -1  # absl's WARNING
# What TensorFlow's C++ runtime writes while it loads, before its logging is set up, whatever
# TF_CPP_MIN_LOG_LEVEL says (TF 2.21): INFO lines ("oneDNN custom operations are on", "Could not find cuda
# drivers") and absl's notice about them; and, where TF_CPP_MIN_LOG_LEVEL < 3, the "failed call to cuInit"
# error of a machine without a GPU driver (TensorFlow then runs on the CPU, as it says at --verbosity=1).
# Anything else written then (another warning or error) still shows.
_NATIVE_LOAD_NOISE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::InitializeLog"
    r"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit)"
)
HELP_FLAGS = {"-?", "-h", "-help", "--help", "--helpshort", "--helpfull", "--helpxml"}


def fail(error: BaseException) -> NoReturn:
    """Ends the command for a user's mistake: `error: MESSAGE` on stderr, exit status 2 (or re-raises it)."""
    if os.environ.get(TRACEBACK_ENV):
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(USAGE_EXIT)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with one line and status 2 for a bad flag (absl's own: two lines and status 1),
    status 0 after --help (absl's: 1, which reads as a failure to scripts and `make`), and WARNING as the log
    level unless --verbosity is given (app.run raises an unset --verbosity to INFO)."""
    try:
        remaining = flags.FLAGS(argv)
        if flags.FLAGS["verbosity"].using_default_value:
            flags.FLAGS.verbosity = QUIET_VERBOSITY
        return remaining
    except flags.Error as e:
        # Several failed checks come as several lines: one line still names each.
        fail(flags.Error("; ".join(line.strip() for line in str(e).splitlines() if line.strip())))
    except SystemExit as e:
        if e.code == 1 and HELP_FLAGS & {a.split("=")[0] for a in argv[1:]}:
            sys.exit(0)
        raise


def quiet_tensorflow_by_default(argv: list[str]) -> None:
    """TensorFlow's C++ log at FATAL only (TF_CPP_MIN_LOG_LEVEL=3: on a CPU machine no "E0000 ... failed call to
    cuInit", which reads as a failure) unless argv asks for more with --verbosity/-v >= 1 or the user set it.
    It must run before TensorFlow is first imported. Errors still arrive as Python exceptions."""
    if not any(a.startswith(("--verbosity=", "-v=")) and a.split("=", 1)[1] not in ("0", "-1") for a in argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _loud() -> bool:
    return flags.FLAGS["verbosity"].value >= 1


@contextlib.contextmanager
def _native_stderr_filtered(keep: Callable[[str], bool]) -> Iterator[None]:
    """Captures what native code writes to file descriptor 2 meanwhile, then writes back the lines `keep`s."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True) if keep(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def import_tensorflow():
    """`import tensorflow`, without the INFO lines its C++ runtime prints while loading unless --verbosity>=1."""
    if _loud() or "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf
    with _native_stderr_filtered(lambda line: not _NATIVE_LOAD_NOISE.match(line)):
        import tensorflow as tf
    return tf


def run(main: Callable[[list[str]], int | None], tensorflow: bool = False) -> NoReturn:
    """app.run(main) with `parse_flags`; main's return value is the exit status. `tensorflow`: main imports
    TensorFlow, so import it first through `import_tensorflow` (after the flags, so --help stays fast)."""

    def main_after_import(argv: list[str]) -> int | None:
        if tensorflow:
            import_tensorflow()
        return main(argv)

    app.run(main_after_import, flags_parser=parse_flags)
