"""How the jobs' entry points end: a user's mistake is one line and exit status 2, a bug a traceback.

    if __name__ == "__main__":
        cli.main(run)

User mistakes are the errors the jobs raise for their inputs: a missing folder or file
(FileNotFoundError), a bad value or header (ValueError), a busy output folder (FolderBusy). Anything
else is a bug and keeps its traceback; PCAM_TRACEBACK=1 shows it for user mistakes too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def user_errors() -> tuple[type[BaseException], ...]:
    from pcam_tfds.folder_lock import FolderBusy

    return FileNotFoundError, NotADirectoryError, ValueError, FolderBusy


def main(run: Callable[[], object]) -> None:
    try:
        run()
    except user_errors() as e:
        if os.environ.get("PCAM_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
