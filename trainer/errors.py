"""User mistakes and bugs: the one rule by which every trainer command ends.

    from trainer import errors

    def _main(argv):
        if len(argv) > 1:
            raise errors.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        ...

    def main():
        errors.run(_main, tensorflow=True)

A user's mistake (a bad flag value, a missing or foreign file or folder, a run folder that belongs to another
run or is busy) is raised as `UsageError` by the config's validation and by the commands' own checks, and
`command` turns it into one line `error: MESSAGE` on stderr and exit status 2 (`pcam_tfds.cli.fail`). Anything
else, a ValueError from Keras or TensorFlow included, is a bug or an environment problem and keeps its
traceback (exit status 1). PCAM_TRACEBACK=1 shows the traceback of a user's mistake too.

`UsageError` is a ValueError, so library callers that catch ValueError around `trainer.config.validation.validate` and the
other checks keep working; `MissingInput` is also a FileNotFoundError.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from pcam_tfds.core.folder_lock import FolderBusy

# The env variable that shows a user mistake's traceback (pcam_tfds.cli.TRACEBACK_ENV; repeated here for readers).
TRACEBACK_ENV = "PCAM_TRACEBACK"


class UsageError(ValueError):
    """What the user gave is wrong: a flag's value, a combination of flags, a file or folder. Exit status 2."""


class MissingInput(UsageError, FileNotFoundError):
    """A file or folder the user named (or that a run folder should hold) does not exist. Exit status 2."""


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is a user's mistake (one line, exit 2) rather than a bug (traceback, exit 1).

    A run folder locked by another live process (FolderBusy) is one: the message names the pid and host.
    """
    return isinstance(error, (UsageError, FolderBusy))


def command(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int | None]:
    """`main` of an absl command, with user mistakes ended by `pcam_tfds.cli.fail` and every other error raised."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> int | None:
        try:
            return main(argv)
        except Exception as e:
            if not is_user_error(e):
                raise
            from pcam_tfds import cli

            cli.fail(e)

    return wrapped


def no_arguments(argv: list[str]) -> None:
    """Refuses positional arguments (a command that takes only flags)."""
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")


def run(main: Callable[[list[str]], int | None], tensorflow: bool = False) -> None:
    """How every trainer command starts: TensorFlow's C++ log quiet unless --verbosity asks for more (set here,
    before TensorFlow is first imported, not when the package is imported), then `pcam_tfds.cli.run` of
    `command(main)` (`tensorflow`: main imports TensorFlow)."""
    from pcam_tfds import cli

    cli.quiet_tensorflow_by_default(sys.argv)
    cli.run(command(main), tensorflow=tensorflow)
