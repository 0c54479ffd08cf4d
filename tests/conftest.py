"""Shared fixtures: the real data in ../shared (optional) and small Kaggle-layout folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_ENV = "PCAM_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data), which `.ci/run` points PCAM_SHARED_DATA at."""
    root = os.environ.get(SHARED_ENV)
    if not root:
        pytest.skip(f"{SHARED_ENV} is not set: the real PCam files are not available in this clone")
    path = Path(root)
    if not path.is_dir():
        pytest.skip(f"{SHARED_ENV}={root} is not a folder")
    return path
