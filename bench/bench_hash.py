"""The manifest's pixel hash, chosen on numbers: microseconds per patch for each candidate, one thread.

    python bench/bench_hash.py [--repeat=7]

Hashes the 27,648 pixel bytes of a random 96x96x3 patch with BLAKE2b-128 (manifest version 1), SHA-1,
SHA-256, XXH3-128 (`xxhash`, manifest version 2, as core.patches.pixel_hash calls it: the shape's repr,
then the pixels) and BLAKE3 when the `blake3` package is installed (it is not a dependency). Prints a
Markdown table for bench/RESULTS.md: the best of REPEAT runs of 20,000 hashes each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import timeit

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pcam_tfds.core import patches  # noqa: E402


def candidates(pixels: np.ndarray) -> dict:
    data = pixels.tobytes()
    out = {
        "BLAKE2b-128 (hashlib; manifest version 1)": lambda: hashlib.blake2b(data, digest_size=16).hexdigest(),
        "SHA-1 (hashlib)": lambda: hashlib.sha1(data).hexdigest(),
        "SHA-256 (hashlib)": lambda: hashlib.sha256(data).hexdigest(),
        "XXH3-128 (xxhash; manifest version 2: core.patches.pixel_hash)": lambda: patches.pixel_hash(pixels),
    }
    try:
        import blake3
    except ImportError:
        pass
    else:
        out["BLAKE3 (blake3)"] = lambda: blake3.blake3(data).hexdigest()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args(argv)
    pixels = np.random.default_rng(0).integers(0, 256, patches.PATCH_SHAPE, dtype=np.uint8)
    number = 20_000
    print("| hash of one patch's pixels (27,648 bytes) | us per patch |")
    print("| --- | ---: |")
    for name, fn in candidates(pixels).items():
        best = min(timeit.repeat(fn, number=number, repeat=a.repeat)) / number
        print(f"| {name} | {best * 1e6:.2f} |")


if __name__ == "__main__":
    main()
