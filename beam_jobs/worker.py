"""A worker process of `beam_jobs.local_runner.LocalRunner`: Beam's SDK harness, quiet on the terminal.

    python -m beam_jobs.worker      (started by the runner, with the harness' environment variables)

Importing Beam logs "apitools not found ..." through the root logger (`logging.warning`) when the
gcp extra is not installed; on a root logger without handlers that call installs a stderr handler,
and every line the harness logs afterwards (a dozen INFO lines per worker: channels, options,
the GCP OAuth scopes) reaches the terminal through it. Given a handler first, the warning goes
nowhere and no stderr handler is installed. The harness then adds its own handler, which sends
its records to the runner at the level of `--default_sdk_harness_log_level`; the jobs log them
there (`beam_jobs.cli`). A worker that fails still fails the job, with the error in the driver.
"""

from __future__ import annotations

import logging
import sys


def main() -> None:
    logging.getLogger().addHandler(logging.NullHandler())
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
