"""The read floor: every file of a Kaggle folder opened and read once, nothing else, in N threads.

    python bench/read_floor.py /tmp/kaggle_full [--threads=2]

What the data path is measured against (bench/RESULTS.md): a build or a validation can hardly be
faster than reading its files. Prints files, seconds, files/s.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor


def read_all(paths: list[str]) -> int:
    total = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            while chunk := os.read(fd, 1 << 20):
                total += len(chunk)
        finally:
            os.close(fd)
    return total


def floor(data_dir: str, threads: int = 2) -> tuple[int, float]:
    """(files, seconds) to list and read every file under DATA_DIR/train and DATA_DIR/test."""
    start = time.perf_counter()
    paths = [e.path for s in ("train", "test") for e in os.scandir(os.path.join(data_dir, s))]
    chunks = [paths[i : i + 512] for i in range(0, len(paths), 512)]
    with ThreadPoolExecutor(threads) as pool:
        sum(pool.map(read_all, chunks))
    return len(paths), time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    n, s = floor(a.data_dir, a.threads)
    print(f"read floor: {n} files in {s:.2f} s, {n / s:,.0f} files/s ({a.threads} threads)")


if __name__ == "__main__":
    main()
