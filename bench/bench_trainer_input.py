"""Input-pipeline benchmark of the trainer: images/s of the input alone and of baseline training.

    python bench/bench_trainer_input.py --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR [--batch_size=64] [--epochs=2]
    python bench/bench_trainer_input.py --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --batch_size=256 --input_only
    python bench/bench_trainer_input.py --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --batch_size=256 --reading_only

KAGGLE_DIR is a Kaggle-layout folder (train/*.tif, train_labels.csv) and TFDS_DIR the `pcam/full`
dataset built from it, e.g.

    python /work/shared/tools/make_kaggle_layout.py /tmp/bench/kaggle --scale 4000
    tfds build pcam_tfds/pcam --manual_dir=/tmp/bench/kaggle --data_dir=/tmp/bench/tfds --config=full \\
        --beam_pipeline_options=direct_running_mode=in_memory

Pipelines compared, all shuffled, batched and prefetched the same way:
  seed_per_file   the seed notebook's: TIFF paths mapped through tf.numpy_function(tifffile.imread)
  tfds_per_example  tfds as_dataset (TFDS decodes each example), then batch
  trainer         trainer.data.train_dataset: TFRecords parsed and decoded per batch
and, for where augmentation runs: dihedral + stain jitter in tf.data (trainer) against the same ops
as a layer at the front of the model (run by the training step, on the accelerator on a GPU host).
"Input only" iterates the pipeline; "train" is model.fit of the baseline (one warm-up epoch, then
the mean of --epochs timed epochs of one pass over the train split each).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import tifffile

from trainer import augment, data, models
from trainer.training import recipe


def seed_per_file(manual_dir: str, ids: list[str], labels: list[int], batch_size: int, seed: int) -> tf.data.Dataset:
    """The notebook's pipeline: one file read per example through numpy_function."""
    paths = [os.path.join(manual_dir, "train", f"{i}.tif") for i in ids]

    def read(path):
        return tifffile.imread(path.decode()).astype(np.float32)

    def load(path, label):
        image = tf.numpy_function(read, [path], tf.float32)
        return tf.ensure_shape(image, (96, 96, 3)), tf.reshape(tf.cast(label, tf.float32), [1])

    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).shuffle(len(paths), seed=seed)
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def tfds_per_example(builder, batch_size: int, seed: int) -> tf.data.Dataset:
    ds = builder.as_dataset("train", shuffle_files=True, read_config=tfds.ReadConfig(shuffle_seed=seed))
    ds = ds.shuffle(8192, seed=seed).map(
        lambda ex: (tf.cast(ex["image"], tf.float32), tf.reshape(tf.cast(ex["label"], tf.float32), [1])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class AugmentInModel(keras.layers.Layer):
    """The trainer's dihedral + stain jitter as a model layer (the alternative placement)."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        s = tf.cast(keras.random.randint([2], 0, 2**30, seed=self.generator), tf.int64)
        return augment.stain_jitter(augment.dihedral(images, s), s)


def input_only(ds: tf.data.Dataset, epochs: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second of this process, all its threads).

    On a machine other jobs load, the CPU rate is the steadier measure of what reading costs.
    """
    for _ in ds:  # warm-up pass: fills caches, traces the map functions
        pass
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for images, _ in ds:
            n += int(images.shape[0])
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def train_rate(ds: tf.data.Dataset, n: int, epochs: int, seed: int, augment_in_model: bool = False) -> float:
    keras.utils.set_random_seed(seed)
    model = models.build("baseline")
    if augment_in_model:
        model = keras.Sequential([keras.Input((96, 96, 3)), AugmentInModel(seed), model])
    recipe.compile_model(model, keras.optimizers.Adam(1e-3), jit_compile=False)
    timer = _EpochTimer()
    model.fit(ds, epochs=1 + epochs, callbacks=[timer], verbose=0, shuffle=False)
    return n / float(np.mean(timer.times[1:]))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manual_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--dataset", default="pcam/full")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input_only", action="store_true", help="skip the training rows (reading the dataset alone)")
    p.add_argument("--reading_only", action="store_true", help="only the input rows without augmentation")
    args = p.parse_args(argv)

    builder = data.load_builder(args.data_dir, args.dataset)
    files = data.split_files(builder, "train")
    n = data.num_examples(builder, "train")
    # The seed pipeline reads the same examples from the TIFFs: the train split's ids.
    ids, labels = [], []
    for batch in data.eval_dataset(files, 1024, with_ids=True).as_numpy_iterator():
        ids += [i.decode() for i in batch["id"]]
        labels += [int(y) for y in batch["label"].ravel()]
    with open(os.path.join(args.manual_dir, "train_labels.csv")) as f:
        known = {row["id"] for row in csv.DictReader(f)}
    missing = [i for i in ids if i not in known]
    if missing:
        raise SystemExit(f"{len(missing)} train ids of the dataset are not in {args.manual_dir}, e.g. {missing[0]}")

    def mine(aug):
        return data.train_dataset(files, args.batch_size, args.seed, aug, num_examples=n)

    print(
        f"# {n} train patches, batch {args.batch_size}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), "
        f"TF {tf.__version__}, {time.strftime('%Y-%m-%d')}"
    )
    print("| measurement | pipeline | augmentation | images/s | images per CPU-s |")
    print("| --- | --- | --- | ---: | ---: |")
    rows = [
        (
            "input only",
            "seed_per_file",
            "none",
            lambda: input_only(seed_per_file(args.manual_dir, ids, labels, args.batch_size, args.seed), args.epochs),
        ),
        (
            "input only",
            "tfds_per_example",
            "none",
            lambda: input_only(tfds_per_example(builder, args.batch_size, args.seed), args.epochs),
        ),
        ("input only", "trainer", "none", lambda: input_only(mine("none"), args.epochs)),
        ("input only", "trainer", "dihedral (tf.data)", lambda: input_only(mine("dihedral"), args.epochs)),
        ("input only", "trainer", "seed layers (tf.data)", lambda: input_only(mine("seed"), args.epochs)),
        (
            "train baseline",
            "seed_per_file",
            "none",
            lambda: train_rate(
                seed_per_file(args.manual_dir, ids, labels, args.batch_size, args.seed), n, args.epochs, args.seed
            ),
        ),
        ("train baseline", "trainer", "none", lambda: train_rate(mine("none"), n, args.epochs, args.seed)),
        (
            "train baseline",
            "trainer",
            "dihedral (tf.data)",
            lambda: train_rate(mine("dihedral"), n, args.epochs, args.seed),
        ),
        (
            "train baseline",
            "trainer",
            "dihedral (in model)",
            lambda: train_rate(mine("none"), n, args.epochs, args.seed, augment_in_model=True),
        ),
    ]
    if args.input_only or args.reading_only:
        rows = [r for r in rows if r[0] == "input only"]
    if args.reading_only:
        rows = [r for r in rows if r[2] == "none"]
    for what, pipeline, aug, fn in rows:
        rate = fn()
        wall, cpu = rate if isinstance(rate, tuple) else (rate, None)
        print(f"| {what} | {pipeline} | {aug} | {wall:.0f} | {'' if cpu is None else f'{cpu:.0f}'} |", flush=True)


if __name__ == "__main__":
    main()
