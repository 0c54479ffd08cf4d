"""Apache Beam jobs over the Kaggle-layout PCam files: validation and dataset statistics.

Importing the package imports Apache Beam with the root logger held quiet, then leaves logging as it
was. Beam's import logs "apitools not found ..." with `logging.warning` on the root logger when the
gcp extra is not installed, which prints it and also gives the root logger a stderr handler before
the jobs set up their own logging (`beam_jobs.cli`). The job modules import Beam anyway, and the
package is entered before any of them (`python -m beam_jobs.validate`, the console scripts).
"""

import logging as _logging
import sys as _sys


def _import_beam_quietly() -> None:
    if "apache_beam" in _sys.modules:
        return
    root = _logging.getLogger()
    held = _logging.NullHandler()  # with a handler present, logging.warning does not install a stderr one
    level = root.level
    root.addHandler(held)
    root.setLevel(_logging.ERROR)
    try:
        import apache_beam  # noqa: F401
    finally:
        root.removeHandler(held)
        root.setLevel(level)


_import_beam_quietly()
