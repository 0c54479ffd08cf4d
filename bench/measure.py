"""Wall time, CPU time and peak memory of a command and all its child processes (Linux).

Peak memory is the largest sum of RSS over the process and its descendants
(Beam's worker processes included), sampled from /proc; a spike shorter than
the sampling interval can be missed. The sum counts a page that forked processes
share once per process, so the peak sum of PSS (each shared page divided among
the processes that map it: what the tree really holds) is reported beside it.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import threading
import time


def _children() -> dict[int, list[int]]:
    """{parent pid: [child pids]} over every process now running."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _kib_line(path: str, key: str) -> int:
    """The value in bytes of the first line of PATH that starts with KEY (a /proc file in kB), 0 when absent."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0  # ended, or a zombie without memory


def _rss_bytes(pid: int) -> int:
    return _kib_line(f"/proc/{pid}/status", "VmRSS:")


def _pss_bytes(pid: int) -> int:
    return _kib_line(f"/proc/{pid}/smaps_rollup", "Pss:")


def _tree(root: int) -> list[int]:
    tree, todo, pids = _children(), [root], []
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(tree.get(pid, ()))
    return pids


def tree_rss(root: int) -> tuple[int, int]:
    """(sum of RSS in bytes, number of processes) of ROOT and all its descendants."""
    pids = _tree(root)
    return sum(_rss_bytes(pid) for pid in pids), len(pids)


def tree_pss(root: int) -> int:
    """The sum of PSS in bytes of ROOT and all its descendants."""
    return sum(_pss_bytes(pid) for pid in _tree(root))


def run_measured(cmd: list[str], interval: float = 0.1, env: dict | None = None) -> dict:
    """Runs CMD to completion; raises with the end of its output if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    # Drain the output as it comes, so a chatty job never blocks on a full pipe.
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    peak, peak_procs, peak_pss = 0, 0, 0
    while proc.poll() is None:
        rss, n = tree_rss(proc.pid)
        if rss > peak:
            peak, peak_procs = rss, n
        peak_pss = max(peak_pss, tree_pss(proc.pid))
        try:  # returns as soon as the command ends: the wall time is not rounded up to the sampling interval
            proc.wait(timeout=interval)
        except subprocess.TimeoutExpired:
            pass
    wall = time.monotonic() - start
    reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = "".join(lines)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{output[-3000:]}")
    return {
        "wall_s": round(wall, 2),
        # Worker processes are waited for by the job, so their CPU time counts here too.
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "peak_rss_mib": round(peak / 2**20),
        "processes_at_peak": peak_procs,
        "peak_pss_mib": round(peak_pss / 2**20),
        "output": output,
    }


def du_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def machine() -> str:
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPU cores ({model}), {mem_kib / 2**20:.0f} GiB RAM, {platform.system()} {platform.release()}"
    )
