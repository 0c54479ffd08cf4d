"""Running the toolkit's commands from tests: `python -m ...` in a subprocess, in the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_module(
    *args: str, check: bool = True, timeout: int = 600, as_user: bool = False
) -> subprocess.CompletedProcess:
    """`python -m ARGS` in the repo root, output captured; fails the test with stderr when check and rc != 0.
    TensorFlow's C++ log is at ERROR unless as_user: then the environment is left as a user's shell has it."""
    env = dict(os.environ) if as_user else {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        pytest.fail(f"python -m {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc
