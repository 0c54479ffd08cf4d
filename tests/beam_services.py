"""Beam's local job service and an external worker pool on loopback: the portable-runner path
that Flink and Spark job servers use, without a cluster."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args, log_path, env=None) -> subprocess.Popen:
    # The services log every bundle: to a file, since an unread pipe would fill and block them.
    with open(log_path, "wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_for(port: int, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    # Returns as soon as the service listens (seconds on an idle machine); the deadline is only for one that
    # never does. Importing Beam at `nice 19` beside two training runs once took over 60 s.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def portable_runner_options(tmp_path):
    """Yields the Beam options that run a pipeline on a local job service with EXTERNAL workers."""
    job_port, worker_port = free_port(), free_port()
    procs = []
    try:
        job = _start(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.portability.local_job_service_main",
                f"--port={job_port}",
                f"--staging_dir={tmp_path / 'staging'}",
            ],
            tmp_path / "job_service.log",
        )
        procs.append(job)
        # The pool starts each SDK worker as a bare `python`: it must be this environment's.
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
        workers = _start(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={worker_port}"],
            tmp_path / "worker_pool.log",
            env,
        )
        procs.append(workers)
        _wait_for(job_port, job, f"local_job_service_main (log: {tmp_path / 'job_service.log'})")
        _wait_for(worker_port, workers, f"worker_pool_main (log: {tmp_path / 'worker_pool.log'})")
        yield [
            "--runner=PortableRunner",
            f"--job_endpoint=localhost:{job_port}",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{worker_port}",
        ]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
