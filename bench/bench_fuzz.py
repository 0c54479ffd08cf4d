"""The reader's fuzz test at scale: N mutated patch files, outcome counts, files/s and the largest allocation.

    PCAM_SHARED_DATA=../shared/data python bench/bench_fuzz.py [--files=20000] [--seed=1]

Same corpus and checks as tests/test_fuzz.py (mutated genuine Kaggle TIFFs and hostile PNG/JPEG headers;
each file decodes exactly as tifffile does or is rejected with a reason, within the memory bound).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    import logging

    import test_fuzz

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # it logs every malformed tag it meets
    files = test_fuzz.corpus(a.files, seed=a.seed)
    start = time.perf_counter()
    counts = test_fuzz.check_corpus(files)
    seconds = time.perf_counter() - start
    print(
        f"{len(files)} files (seed {a.seed}) in {seconds:.1f} s ({len(files) / seconds:,.0f} files/s); "
        f"memory bound {test_fuzz.MEMORY_BOUND >> 20} MiB per file held"
    )
    for outcome, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"| {outcome} | {n} |")


if __name__ == "__main__":
    main()
