"""How the jobs' entry points run: quiet logging unless asked, progress while a pipeline runs, a user's mistake one
line and exit status 2, a bug a traceback.

    def main():
        cli.main(run)

    if __name__ == "__main__":
        main()

A job prints its progress (stderr, at least every 10 s) and its result (stdout), and nothing else;
`--log_level=INFO` (or DEBUG) shows the jobs' and Beam's log lines too, in this process and in
Beam's local workers (`--default_sdk_harness_log_level`, set by `pipeline_options.with_local_defaults`).
Warnings and errors are always shown.

The raw Kaggle-layout folder is `--manual_dir`, as in pcam-build and TFDS; `--data_dir` means a TFDS data folder
everywhere, so the jobs that read the raw folder refuse it in one line (`refuse_data_dir`) instead of handing it
to Beam as an option they do not know.

User mistakes are the errors the jobs raise for their inputs: a missing folder or file
(FileNotFoundError), a bad value or header (ValueError), a busy output folder (FolderBusy). Anything
else is a bug and keeps its traceback; PCAM_TRACEBACK=1 shows it for user mistakes too.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from beam_jobs.pipeline_options import LOCAL_RUNNER
from pcam_tfds.core import counters
from pcam_tfds.core.progress import Progress, Tally

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "WARNING"
POLL_S = 1.0  # how often the driver looks at the count while a pipeline runs

# Runners whose workers run on this machine, so they can add to a Tally the driver reads.
LOCAL_RUNNERS = (
    LOCAL_RUNNER,
    "DirectRunner",
    "direct",
    "SwitchingDirectRunner",
    "FnApiRunner",
    "BundleBasedDirectRunner",
)


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log_level",
        choices=LOG_LEVELS,
        default=DEFAULT_LOG_LEVEL,
        help="what the job and Beam log besides progress and result (default %(default)s: warnings and errors)",
    )


class _Refused(argparse.Action):
    """A flag whose meaning is elsewhere: giving it (with or without a value) exits with status 2 and MESSAGE."""

    def __init__(self, option_strings, dest, message, **kwargs):
        # No default: the namespace gets no attribute, so nothing can read the refused flag by mistake.
        super().__init__(option_strings, dest, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(2, self.message + "\n")


def refuse_data_dir(parser: argparse.ArgumentParser, command: str) -> None:
    """Makes PARSER (a job that reads the raw Kaggle-layout folder as --manual_dir) refuse --data_dir in one line.

    The jobs parse with `parse_known_args`, so without this an old `--data_dir=KAGGLE_DIR` would go to Beam
    as an option it does not know instead of being refused.
    """
    message = f"{command}: --data_dir names a TFDS data folder; give the Kaggle-layout folder as --manual_dir"
    parser.add_argument("--data_dir", action=_Refused, message=message)


def user_errors() -> tuple[type[BaseException], ...]:
    from pcam_tfds.core.folder_lock import FolderBusy

    return FileNotFoundError, NotADirectoryError, ValueError, FolderBusy


def setup_logging(level: str = DEFAULT_LOG_LEVEL) -> None:
    # force: a library may already have given the root logger a handler.
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(run: Callable[[], object]) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    add_log_level(parser)
    # The job's own parser reads the flag again (and shows it in --help); here it only sets up logging.
    known, _ = parser.parse_known_args(sys.argv[1:])
    setup_logging(known.log_level)
    try:
        run()
    except user_errors() as e:
        if os.environ.get("PCAM_TRACEBACK"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def is_local(runner: str | None) -> bool:
    return runner is None or runner in LOCAL_RUNNERS


def new_tally(runner: str | None) -> Tally | None:
    """A fresh Tally in the temporary folder for a runner whose workers share this machine; None otherwise."""
    if not is_local(runner):
        return None
    fd, path = tempfile.mkstemp(prefix="pcam-progress-")
    os.close(fd)
    return Tally(path)


def run_pipeline(pipeline, progress: Progress, tally: Tally | None, poll_s: float = POLL_S):
    """Runs PIPELINE to its end and returns its result, with progress lines while it runs.

    With a Tally (local runners), the pipeline runs in a thread (the FnApiRunner's `run()` returns only
    at the end) and the count is what the workers added to it. Without one, `run()` returns at once
    and the count is the runner's FILES_READ counter, or its state where it reports no metrics yet.
    """
    if tally is None:
        return _run_remote(pipeline, progress, poll_s)
    box: dict = {}

    def target():
        try:
            box["result"] = pipeline.run()
            box["result"].wait_until_finish()
        except BaseException as e:  # noqa: BLE001 -- handed to the main thread, which raises it
            box["error"] = e

    thread = threading.Thread(target=target, name="pipeline", daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(poll_s)
            progress.update(_capped(tally.count(), progress.total))
        if "error" in box:
            raise box["error"]
        progress.finish(_capped(tally.count(), progress.total))
        return box["result"]
    finally:
        if not thread.is_alive():  # else workers may still add to it; a few bytes left in the temporary folder
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tally.path)


def _capped(done: int, total: int | None) -> int:
    # A retried bundle adds its files again.
    return done if total is None else min(done, total)


def _run_remote(pipeline, progress: Progress, poll_s: float):
    from apache_beam.runners.runner import PipelineState

    result = pipeline.run()
    while not PipelineState.is_terminal(result.state):
        time.sleep(poll_s)
        done = files_read(result)
        progress.update(done, note=f"runner state {result.state}" if done is None else None)
    result.wait_until_finish()
    progress.finish(files_read(result))
    return result


def files_read(result) -> int | None:
    """The runner's FILES_READ counter so far, or None where it reports no metrics (yet)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        query = MetricsFilter().with_namespace(counters.NAMESPACE).with_name(counters.FILES_READ)
        found = result.metrics().query(query)["counters"]
    except Exception:  # noqa: BLE001 -- runners differ in what they support mid-job; progress is optional
        return None
    if not found:
        return None
    return sum((c.committed if c.committed is not None else c.attempted) or 0 for c in found)
