"""How the jobs' entry points run: logging set up once, a user's mistake one line and exit status 2, a bug a
traceback.

    def main():
        cli.main(run)

    if __name__ == "__main__":
        main()

User mistakes are the errors the jobs raise for their inputs: a missing folder or file
(FileNotFoundError), a bad value or header (ValueError), a busy output folder (FolderBusy). Anything
else is a bug and keeps its traceback; PCAM_TRACEBACK=1 shows it for user mistakes too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

# Loggers that would drown the jobs' own lines: the Beam worker harness logs every bundle.
QUIET_LOGGERS = ("apache_beam", "matplotlib")


def user_errors() -> tuple[type[BaseException], ...]:
    from pcam_tfds.folder_lock import FolderBusy

    return FileNotFoundError, NotADirectoryError, ValueError, FolderBusy


def setup_logging() -> None:
    # force: importing Beam may already have given the root logger a handler (and level WARNING).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def main(run: Callable[[], object]) -> None:
    setup_logging()
    try:
        run()
    except user_errors() as e:
        if os.environ.get("PCAM_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
