"""The write floor: as many bytes as a dataset of a Kaggle folder holds, written once, nothing else, in N threads.

    python bench/write_floor.py /tmp/kaggle_full --out_dir=/tmp/write_floor [--threads=2] [--fdatasync | --direct]

What a build writes beside what it reads: the dataset's shards (about the size of the files, since the
records are raw pixels). Writes files of 64 MiB of random bytes into OUT_DIR with os.write, as the
shard writers do, then removes them. Prints bytes, seconds, MB/s. Without --fdatasync nothing waits for
the disk (neither does a build: the bytes are in the page cache when it ends); with it each file is
fdatasync'ed once written, so the time includes getting every byte to the disk (issue 39's write floor).
With --direct the files are written past the page cache (O_DIRECT, Linux), 16 MiB per write from a page-aligned
buffer, as the local build's shard writers write since issue 39's third session (pcam_tfds.core.tfrecord): the
disk's own speed, without the kernel's copy into the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

_FILE = 64 << 20
_CHUNK = 1 << 20


_DIRECT_BLOCK = 16 << 20


def write_files(paths: list[str], block: bytes, sync: bool = False, direct: bool = False) -> int:
    total = 0
    if direct:  # an aligned buffer of the same random bytes, 16 MiB
        import mmap

        aligned = mmap.mmap(-1, _DIRECT_BLOCK, flags=mmap.MAP_PRIVATE)
        for at in range(0, _DIRECT_BLOCK, len(block)):
            aligned[at : at + len(block)] = block
        block = memoryview(aligned)
    for path in paths:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o644)
        try:
            for _ in range(_FILE // len(block)):
                total += os.write(fd, block)
            if sync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
    return total


def floor(
    manual_dir: str, out_dir: str, threads: int = 2, sync: bool = False, direct: bool = False
) -> tuple[int, float]:
    """(bytes, seconds) to write as many bytes as MANUAL_DIR/train and MANUAL_DIR/test hold into OUT_DIR."""
    size = sum(e.stat().st_size for s in ("train", "test") for e in os.scandir(os.path.join(manual_dir, s)))
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{i:05d}.bin") for i in range(max(1, size // _FILE))]
    block = os.urandom(_CHUNK)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        parts = [paths[i::threads] for i in range(threads)]
        written = sum(pool.map(write_files, parts, [block] * threads, [sync] * threads, [direct] * threads))
    seconds = time.perf_counter() - start
    shutil.rmtree(out_dir)
    return written, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manual_dir")
    ap.add_argument("--out_dir", required=True, help="created, written and removed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fdatasync", action="store_true", help="fdatasync each file once written")
    ap.add_argument("--direct", action="store_true", help="write past the page cache (O_DIRECT), 16 MiB at a time")
    a = ap.parse_args(argv)
    n, s = floor(a.manual_dir, a.out_dir, a.threads, a.fdatasync, a.direct)
    what = "write floor" + (" with fdatasync" if a.fdatasync else "") + (" (O_DIRECT)" if a.direct else "")
    print(f"{what}: {n:,} bytes in {s:.2f} s, {n / s / 1e6:,.0f} MB/s ({a.threads} threads)")


if __name__ == "__main__":
    main()
