"""Decoding cost of a 96x96x3 patch stored as raw bytes or as PNG, in tf.data, in images per CPU-second.

    python bench/bench_image_decode.py KAGGLE_DIR/train [--num_files=3200] [--repeats=5]

Reads the first NUM_FILES TIFFs, encodes each as raw bytes and as PNG (tf.io.encode_png, as
tfds.features.Image does), then times three tf.data pipelines over the encoded bytes: raw bytes decoded
per example, PNG decoded per example (what TFDS does for an Image feature) and raw bytes decoded per
batch of 256 (what trainer/data.py does). CPU time counts every thread of this process, so the rate
stays meaningful on a machine other jobs load.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import tensorflow as tf
import tifffile


def rate(ds: tf.data.Dataset, repeats: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second) over REPEATS passes after a warm-up pass."""
    for _ in ds:
        pass
    n, cpu, wall = 0, time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for batch in ds:
            n += int(batch.shape[0])
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train_dir")
    p.add_argument("--num_files", type=int, default=3200)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    names = sorted(os.listdir(args.train_dir))[: args.num_files]
    images = np.stack([tifffile.imread(os.path.join(args.train_dir, n)) for n in names])
    raw = [x.tobytes() for x in images]
    png = [tf.io.encode_png(x).numpy() for x in images]
    print(
        f"{len(images)} patches; raw {np.mean([len(b) for b in raw]):.0f} B, PNG {np.mean([len(b) for b in png]):.0f} B"
    )
    auto = tf.data.AUTOTUNE
    shape = tuple(images.shape[1:])
    pipelines = {
        "raw bytes, decoded per example": tf.data.Dataset.from_tensor_slices(raw)
        .map(lambda b: tf.reshape(tf.io.decode_raw(b, tf.uint8), shape), num_parallel_calls=auto)
        .batch(256),
        "PNG, decoded per example": tf.data.Dataset.from_tensor_slices(png)
        .map(lambda b: tf.io.decode_png(b, channels=3), num_parallel_calls=auto)
        .batch(256),
        "raw bytes, decoded per batch": tf.data.Dataset.from_tensor_slices(raw)
        .batch(256)
        .map(lambda b: tf.reshape(tf.io.decode_raw(b, tf.uint8), (-1, *shape)), num_parallel_calls=auto),
    }
    print("| pipeline | images/s | images per CPU-s |")
    print("| --- | ---: | ---: |")
    for name, ds in pipelines.items():
        wall, cpu = rate(ds, args.repeats)
        print(f"| {name} | {wall:.0f} | {cpu:.0f} |", flush=True)


if __name__ == "__main__":
    main()
