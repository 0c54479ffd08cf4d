"""Importing this module imports Apache Beam with the root logger held quiet, then leaves logging as it was.

Beam's import logs "apitools not found ..." with `logging.warning` on the root logger when the gcp extra is
not installed, which prints it and also gives the root logger a stderr handler before the jobs set up their
own logging (`beam_jobs.cli`). Every module of this package that imports Beam imports this module first:

    from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly (before the imports below)

    # isort: split
    import apache_beam as beam

Importing is the whole point of this module, so it acts at import time; the package itself does not.
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
