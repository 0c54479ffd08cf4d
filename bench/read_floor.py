"""The read floor: every file of a Kaggle folder opened and read once, nothing else, in N threads.

    python bench/read_floor.py /tmp/kaggle_full [--threads=2] [--hash=xxh3_128|blake2b_128]

What the data path is measured against (bench/RESULTS.md): a build or a validation can hardly be
faster than reading its files. With --hash each file's read is followed by that hash over 27,648 of
its bytes (a patch's pixels): XXH3-128 is manifest version 2's pixel hash, BLAKE2b-128 version 1's, so
this is the least a validation that writes that manifest can take. Prints files, seconds, files/s.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

_PIXEL_BYTES = 96 * 96 * 3


def _xxh3_128(data) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(data)


HASHES = {"xxh3_128": _xxh3_128, "blake2b_128": lambda data: hashlib.blake2b(data, digest_size=16).hexdigest()}


def read_all(paths: list[str], hash_pixels: str | None = None) -> int:
    total = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
        if hash_pixels:  # the manifest's pixel hash over as many bytes as a patch's pixels
            data = b"".join(chunks)
            HASHES[hash_pixels](memoryview(data)[-_PIXEL_BYTES:])
    return total


def floor(manual_dir: str, threads: int = 2, hash_pixels: str | None = None) -> tuple[int, float]:
    """(files, seconds) to list and read every file under MANUAL_DIR/train and MANUAL_DIR/test; with HASH_PIXELS
    also to hash each one's pixel bytes as the validation does."""
    start = time.perf_counter()
    paths = [e.path for s in ("train", "test") for e in os.scandir(os.path.join(manual_dir, s))]
    chunks = [paths[i : i + 512] for i in range(0, len(paths), 512)]
    with ThreadPoolExecutor(threads) as pool:
        sum(pool.map(functools.partial(read_all, hash_pixels=hash_pixels), chunks))
    return len(paths), time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manual_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hash", choices=sorted(HASHES), help="also hash each file's pixel bytes, as a manifest does")
    a = ap.parse_args(argv)
    n, s = floor(a.manual_dir, a.threads, a.hash)
    what = f"read + {a.hash} floor" if a.hash else "read floor"
    print(f"{what}: {n} files in {s:.2f} s, {n / s:,.0f} files/s ({a.threads} threads)")


if __name__ == "__main__":
    main()
