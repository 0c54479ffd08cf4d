"""Where the local build's time goes, per file and per stage, beside the read floor of the same run.

    python bench/bench_profile.py /tmp/kaggle_full [--max_files=25000] [--workers=1,2]

Part 1 runs every stage of the one-pass build in this process, one chunk of 512 files at a time, and
times each stage on its own: list (scandir of train/ and test/), read (open + read, as
core.patches.read_bytes), decode (core.patches.decode_patch), hash (pixel_hash), moments
(since issue 39's third session in the "hash" row: the native kernel's scan_patches takes a group's hashes
and exact sums in one call; core.moments.moments_at over a group's rows before it; channel_moments_batch before that; channel_moments per
patch before issue 39), kernel (since issue 39's second session: core.batch_read.read_columns, what a
validation worker runs per chunk, whose read, hash and moments are then also timed alone over the same files:
the native read into rows, the hashes of the rows' pixels, their moments), serialize (core.serialize.serialize_record), write (the build's shard writer,
builder_base._write_shard: key hash, order check and the TFRecord writer (core.tfrecord since issue 39), one shard per
chunk into a temporary folder) and finalize (putting every example in TFDS' shard order,
local_steps.in_writer_order, done once per split). It prints microseconds per file and each stage's
share of their sum.

Part 2 measures, in the same run, two floors and the whole local validation
(pcam_tfds.core.local_validation.LocalValidation: what `pcam-validate` and the build's first pass run) with
each number of worker processes, as seconds, us per file, multiples of each floor and the scaling
efficiency against one worker. The floors: reading every file (bench/read_floor.py: list and read, 2
threads), and reading every file and hashing its pixel bytes as the manifest's pixel_hash does (XXH3-128,
manifest version 2; `--hash_floor=blake2b_128` for version 1's; 2 threads), the
least any validation that writes this manifest can cost.
`--spill` validates the way the one-pass build does (PCAM_READ_ONCE=1: each valid file's pixels also
written to a spill folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import read_floor  # noqa: E402


def profile_stages(manual_dir: str, max_files: int | None) -> tuple[int, dict[str, float]]:
    import functools

    from tensorflow_datasets.core import file_adapters, hashing
    from tensorflow_datasets.core import writer as writer_lib

    from pcam_tfds import builder_base, local_steps
    from pcam_tfds.core import patches, serialize

    try:
        from pcam_tfds.core import moments
    except ImportError:  # older code: the moments lived in core.patches
        moments = None
    try:  # issue 39's kernel: a group's files read into rows, viewed through layout templates, hashed, summed
        import numpy as np

        from pcam_tfds.core import batch_read
    except ImportError:
        batch_read = None

    stages = ("list", "read", "decode", "hash", "moments", "kernel", "serialize", "write", "finalize")
    seconds = dict.fromkeys(stages, 0.0)
    t = time.perf_counter()
    paths = sorted(e.path for s in ("train", "test") for e in os.scandir(os.path.join(manual_dir, s)))[:max_files]
    seconds["list"] = time.perf_counter() - t
    hasher = hashing.Hasher("train")
    write_shard = functools.partial(
        builder_base._write_shard,
        salt="train",
        example_writer=writer_lib.ExampleWriter(file_format=file_adapters.FileFormat.TFRECORD),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(0, len(paths), 512):
            chunk = paths[i : i + 512]
            if batch_read is not None:
                # The kernel as the validation runs it (read, templates or decode, hash, moments, the Arrow batch);
                # and its parts alone: the native read into rows, the hashes and the moments of those rows.
                t0 = time.perf_counter()
                batch_read.read_columns(chunk, "train").arrow()
                t1 = time.perf_counter()
                seconds["kernel"] += t1 - t0
                rows = np.empty((batch_read.GROUP, batch_read.ROW_BYTES), np.uint8)
                for g in range(0, len(chunk), batch_read.GROUP):
                    group = chunk[g : g + batch_read.GROUP]
                    t0 = time.perf_counter()
                    sizes, _ = patches.read_rows(group, rows)
                    t1 = time.perf_counter()
                    offsets = np.array(
                        [j * batch_read.ROW_BYTES + n - patches.PATCH_BYTES for j, n in enumerate(sizes)]
                    )
                    native = getattr(patches, "_native", None)
                    if native is not None and hasattr(native, "scan_patches"):
                        # since issue 39's third session the hashes and sums are one native call: timed as "hash"
                        hexes, sums = np.zeros((len(group), 32), np.uint8), np.zeros((len(group), 6), np.int64)
                        flat, prefix = rows[: len(group)].reshape(-1), patches.PATCH_HASH_PREFIX
                        native.scan_patches(flat, offsets, prefix, hexes, sums)
                        t2 = t3 = time.perf_counter()
                    else:
                        for o in offsets.tolist():
                            patches.patch_hash(rows.reshape(-1)[o : o + patches.PATCH_BYTES].data)
                        t2 = time.perf_counter()
                        moments.moments_at(rows[: len(group)], offsets)
                        t3 = time.perf_counter()
                    for name, a, b in (("read", t0, t1), ("hash", t1, t2), ("moments", t2, t3)):
                        seconds[name] += b - a
            t0 = time.perf_counter()
            data = [patches.read_bytes(p) for p in chunk]
            t1 = time.perf_counter()
            pixels = [patches.decode_patch(d) for d in data]
            t2 = time.perf_counter()
            for p in pixels:
                patches.pixel_hash(p)
            t3 = time.perf_counter()
            if batch_read is not None:
                pass  # read, hash and moments were timed above; decode is the templates' (in the kernel)
            elif moments is not None and hasattr(moments, "channel_moments_batch"):  # as records.read_records took them
                for j in range(0, len(pixels), moments.MOMENT_BATCH):
                    moments.channel_moments_batch(pixels[j : j + moments.MOMENT_BATCH])
            elif hasattr(patches, "channel_moments_batch"):  # issue 39's code, before core.moments
                for j in range(0, len(pixels), patches.MOMENT_BATCH):
                    patches.channel_moments_batch(pixels[j : j + patches.MOMENT_BATCH])
            else:  # the code before issue 39: one patch at a time
                for p in pixels:
                    patches.channel_moments(p)
            t4 = time.perf_counter()
            keys = [os.path.basename(q)[:-4] for q in chunk]
            pairs = [(k, serialize.serialize_record(p.reshape(-1).data, 0, k)) for p, k in zip(pixels, keys)]
            t5 = time.perf_counter()
            pairs.sort(key=lambda pair: hasher.hash_key(pair[0]))  # a shard's examples come in hash order
            t6 = time.perf_counter()
            write_shard(os.path.join(tmp, f"train.tfrecord-{i // 512:05d}"), pairs)
            t7 = time.perf_counter()
            if batch_read is None:
                for name, a, b in (("read", t0, t1), ("decode", t1, t2), ("hash", t2, t3), ("moments", t3, t4)):
                    seconds[name] += b - a
            seconds["serialize"] += t5 - t4
            seconds["write"] += t7 - t6
        rows = [{"id": os.path.basename(q)[:-4]} for q in paths]
        t = time.perf_counter()
        local_steps.in_writer_order(rows, "train")
        seconds["finalize"] = time.perf_counter() - t
    return len(paths), seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manual_dir")
    ap.add_argument("--max_files", type=int, default=None, help="profile only the first N files (part 1)")
    ap.add_argument("--workers", default="1,2", help="worker counts for part 2")
    ap.add_argument("--spill", action="store_true", help="part 2 keeps the pixels, as PCAM_READ_ONCE=1 does")
    ap.add_argument("--hash_floor", default="xxh3_128", choices=sorted(read_floor.HASHES), help="the hash floor's hash")
    a = ap.parse_args(argv)
    n, seconds = profile_stages(a.manual_dir, a.max_files)
    inside = ("read", "decode", "hash", "moments") if seconds["kernel"] else ()  # parts of the kernel, timed again
    total = sum(s for name, s in seconds.items() if name not in inside)
    print(f"part 1: {n:,} files, one process, each stage alone")
    print("| stage | us per file | share |")
    print("| --- | ---: | ---: |")
    for name, s in seconds.items():
        share = "(in kernel)" if name in inside else f"{s / total:.1%}"
        print(f"| {name} | {s / n * 1e6:.1f} | {share} |")
    print(f"| all | {total / n * 1e6:.1f} | 100% |")

    from pcam_tfds.core import local_validation

    num, floor_s = read_floor.floor(a.manual_dir, 2)
    _, hash_s = read_floor.floor(a.manual_dir, 2, hash_pixels=a.hash_floor)
    print(f"\npart 2: {num:,} files; read floor (2 threads) {floor_s:.2f} s, {floor_s / num * 1e6:.1f} us per file;")
    print(f"read + {a.hash_floor} floor (2 threads) {hash_s:.2f} s, {hash_s / num * 1e6:.1f} us per file")
    what = "validation, pixels spilled" if a.spill else "validation"
    print(f"| {what} | s | CPU s | us per file | x read floor | x hash floor | efficiency |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = None
    for w in (int(x) for x in a.workers.split(",")):
        with tempfile.TemporaryDirectory() as spill:
            cpu = _cpu_seconds()
            t = time.perf_counter()
            local_validation.LocalValidation(a.manual_dir, workers=w, spill_dir=spill if a.spill else None)
            s = time.perf_counter() - t
            cpu = _cpu_seconds() - cpu
        base = base or s * w
        print(
            f"| {w} worker(s) | {s:.2f} | {cpu:.1f} | {s / num * 1e6:.1f} | {s / floor_s:.2f} | {s / hash_s:.2f} "
            f"| {base / (s * w):.0%} |"
        )
    num, floor_s = read_floor.floor(a.manual_dir, 2)
    print(f"read floor again: {floor_s:.2f} s")


def _cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (the pool's workers, once it is shut down)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
