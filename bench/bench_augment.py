"""Throughput of the trainer's augmentations on one batch, as tf.data runs them: images/s and images per CPU-second.

    python bench/bench_augment.py [--batch_size=64] [--batches=200] [--core=N]

Each augmentation (`trainer.augment.make_augment_fn`: none, dihedral, hed) runs as one traced function
on uint8 batches of random pixels, a new stateless seed per batch, after two warm-up calls. The cost
that matters for training is images per CPU-second next to the training step's (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--core", type=int, help="pin to this core (Linux)")
    a = p.parse_args(argv)
    if a.core is not None:
        os.sched_setaffinity(0, {a.core})
    import tensorflow as tf

    from trainer import augment

    images = tf.constant(np.random.default_rng(0).integers(0, 256, (a.batch_size, 96, 96, 3)), tf.uint8)
    print("| augmentation | images/s | images per CPU-second |")
    print("| --- | ---: | ---: |")
    for name in ("none", "dihedral", "hed"):
        fn = tf.function(augment.make_augment_fn(name, seed=0))
        for i in range(2):
            fn(images, tf.constant([0, i], tf.int64)).numpy()
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(a.batches):
            fn(images, tf.constant([1, i], tf.int64)).numpy()
        n = a.batches * a.batch_size
        print(f"| {name} | {n / (time.perf_counter() - wall):,.0f} | {n / (time.process_time() - cpu):,.0f} |")


if __name__ == "__main__":
    main()
