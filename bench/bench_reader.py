"""Files per second of the fast patch reader vs tifffile.imread, on the same files in one run.

    python bench/bench_reader.py KAGGLE_DIR [--num_files=20000] [--repeats=3]

KAGGLE_DIR is a Kaggle-layout folder of TIFFs, e.g. one written by
`../shared/tools/make_kaggle_layout.py OUT --scale sample`. Both readers read the
same files from the page cache (a warm-up pass reads them first), alternating
rounds; each is checked to return identical pixels. Both include open+read.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import tifffile

from pcam_tfds.core import patches


def bench(fn, paths) -> float:
    start = time.perf_counter()
    for p in paths:
        fn(p)
    return len(paths) / (time.perf_counter() - start)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manual_dir")
    ap.add_argument("--num_files", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    train = os.path.join(a.manual_dir, "train")
    paths = sorted(os.path.join(train, n) for n in os.listdir(train))[: a.num_files]
    for p in paths[:200]:
        np.testing.assert_array_equal(patches.read_patch(p), tifffile.imread(p), err_msg=p)
    for p in paths:  # warm the page cache so both readers see the same conditions
        with open(p, "rb") as f:
            f.read()
    fast, slow = [], []
    for _ in range(a.repeats):
        fast.append(bench(patches.read_patch, paths))
        slow.append(bench(tifffile.imread, paths))
    f, s = max(fast), max(slow)
    print(
        f"{len(paths)} files, best of {a.repeats}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    )
    print(f"fast reader:     {f:10.0f} files/s")
    print(f"tifffile.imread: {s:10.0f} files/s")
    print(f"speed-up:        {f / s:10.1f}x")


if __name__ == "__main__":
    main()
