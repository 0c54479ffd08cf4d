"""tf.data input pipelines over a built `pcam` TFDS dataset; pure functions of their arguments.

Training order: shuffled file list -> interleaved TFRecord readers -> (sample filter) -> shuffle buffer of
serialized records -> (repeat) -> batch -> parse + decode + augment per batch -> prefetch.
Records are parsed after batching, with one `tf.io.parse_example` call per batch, so that decoding and
the augmentation run on whole batches (bench/RESULTS.md, "Trainer input pipeline and where augmentation
runs").
"""

from __future__ import annotations

import functools

import tensorflow as tf
import tensorflow_datasets as tfds

from pcam_tfds.core import record_spec
from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import augment as augment_lib
from trainer import determinism, errors

# Bucket count for --sample_fraction's hash filter: fractions are kept to 1e-4.
_SAMPLE_BUCKETS = 10_000
# The random streams of an epoch (trainer.determinism.epoch_seed): file order, record order, augmentation.
_FILE_ORDER, _RECORD_ORDER, _AUGMENT = 0, 1, 2

# The parse spec of pcam_tfds.core.record_spec's record (the builder's features; tests/test_features.py checks).
RECORD_FEATURES = {
    record_spec.IMAGE: tf.io.FixedLenFeature([], tf.string),  # raw uint8 bytes (the builder's encoding="bytes")
    record_spec.LABEL: tf.io.FixedLenFeature([], tf.int64),  # NO_LABEL (-1) on the unlabelled test split
    record_spec.ID: tf.io.FixedLenFeature([], tf.string),
}


def load_builder(data_dir: str, dataset: str) -> tfds.core.DatasetBuilder:
    """The built dataset `dataset` ("pcam/full", "pcam/sample25:1.0.0") under `data_dir`, read without Beam."""
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except Exception as e:  # TFDS raises several types (DatasetNotFoundError, registry errors)
        raise errors.UsageError(f"--dataset={dataset!r} not found under --data_dir={data_dir!r}: {e}") from e
    if not builder.is_prepared():
        raise errors.UsageError(
            f"--dataset={dataset!r} is not built under --data_dir={data_dir!r}; build it first "
            "(tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=... --config=...)"
        )
    return builder


def split_files(builder: tfds.core.DatasetBuilder, split: str) -> list[str]:
    """The TFRecord shard paths of `split`."""
    if split not in builder.info.splits:
        raise errors.UsageError(
            f"split {split!r} is not in {builder.info.full_name}; it has {sorted(builder.info.splits)}"
        )
    return [str(p) for p in builder.info.splits[split].filepaths]


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
    return builder.info.splits[split].num_examples


def parse_batch(serialized: tf.Tensor, image_shape=PATCH_SHAPE) -> dict[str, tf.Tensor]:
    """A batch of serialized examples -> {"image": uint8 (B, H, W, 3), "label": int64 (B,), "id": string (B,)}."""
    ex = tf.io.parse_example(serialized, RECORD_FEATURES)
    pixels = tf.io.decode_raw(ex[record_spec.IMAGE], tf.dtypes.as_dtype(record_spec.IMAGE_DTYPE))
    images = tf.reshape(pixels, [-1, *image_shape])
    return {"image": images, "label": ex[record_spec.LABEL], "id": ex[record_spec.ID]}


def _keep_sample(serialized: tf.Tensor, fraction: float) -> tf.Tensor:
    # A hash of the record, not a random draw: the same examples are kept in every epoch and every run.
    return tf.strings.to_hash_bucket_fast(serialized, _SAMPLE_BUCKETS) < round(fraction * _SAMPLE_BUCKETS)


@functools.lru_cache(maxsize=8)
def _count_kept(files: tuple[str, ...], fraction: float) -> int:
    """How many records of `files` --sample_fraction keeps: one pass that reads but does not parse them."""
    ds = tf.data.TFRecordDataset(list(files), num_parallel_reads=min(len(files), 8) or None)
    kept = ds.map(lambda s: tf.cast(_keep_sample(s, fraction), tf.int64), num_parallel_calls=tf.data.AUTOTUNE)
    return int(kept.reduce(tf.constant(0, tf.int64), lambda total, k: total + k))


def _known_count(files: list[str], num_examples: int | None, fraction: float) -> int | None:
    """The examples a pass yields: the split's size, or what the sample keeps of it (counted once)."""
    if not num_examples or fraction >= 1.0:
        return num_examples
    return _count_kept(tuple(files), fraction)


def _shard_files(files: list[str], shard: tuple[int, int] | None) -> tuple[list[str], bool, int]:
    """This worker's files, whether it must keep only every count-th record of them, and its seed salt.

    Sharding is explicit (tf.data's auto-sharding is off for datasets made per worker): with at least as
    many files as workers each worker reads only its own files, so no record is read twice; with fewer,
    every worker reads all files in the same order and keeps its share of the records (tf.data's DATA
    policy). The salt gives each worker its own shuffle and augmentation draws.
    """
    if shard is None:
        return files, False, 0
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {shard}: expected (index, count) with 0 <= index < count")
    if count <= len(files):
        return files[index::count], False, 1_000_003 * index
    return files, True, 1_000_003 * index


def train_dataset(
    files: list[str],
    batch_size: int,
    seed: int,
    augment: str = "dihedral",
    shuffle_buffer: int = 8192,
    sample_fraction: float = 1.0,
    repeat: bool = False,
    num_examples: int | None = None,
    image_shape=PATCH_SHAPE,
    shard: tuple[int, int] | None = None,
    class_weights: tuple[float, float] | None = None,
    epoch: tf.Variable | None = None,
    steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """(images (B, H, W, 3) 0..255, labels float32 (B, 1)) batches for `model.fit`, augmented.

    Images are uint8 when nothing on the host needs floats (augment "none", also what
    --augment_on=device uses): a quarter of the bytes to ship to the device, where the model casts them.
    The augmentations give float32.
    num_examples: the split's size; when given (and the stream is neither repeated nor sharded) the batch
    count is asserted, so Keras knows where an epoch ends (with sample_fraction, what the sample keeps is
    counted in one reading pass) instead of running into the end and warning "Your input ran out of data".
    shard: (index, count) on a multi-worker cluster: this worker's part of the data (`_shard_files`), with
    its own augmentation seeds; batch_size is then this worker's.
    class_weights: appended as per-example sample weights (the multi-worker path, where Keras cannot add
    them to a distributed dataset).
    epoch: the epoch about to start, read each time an iterator starts (`trainer.determinism.EpochClock`
    sets it); None: every iterator is epoch 0. Epoch e's file order, record order and augmentation are
    drawn from (seed, e) alone, so a run resumed at epoch e sees what an uninterrupted one saw.
    repeat: one endless stream over passes 0, 1, 2, ... that Keras cuts into epochs of `steps_per_epoch`
    batches (needed then); an iterator started at epoch e skips the e * steps_per_epoch batches before it.
    """
    if not files:
        raise ValueError("train_dataset: no files given")
    augment_fn = augment_lib.make_augment_fn(augment, seed)
    if repeat and not steps_per_epoch:
        raise ValueError("train_dataset: repeat=True needs steps_per_epoch (where a resumed epoch starts)")
    files, by_record, salt = _shard_files(files, shard)
    files_t = tf.constant(files)
    cycle_length = min(len(files), 8)

    def one_pass(pass_index):
        """The records of one pass over the files, in the order of (seed, pass_index)."""
        # The file order is not salted: with by_record every worker must read the files in the same order.
        order = tf.random.experimental.stateless_shuffle(
            files_t, seed=determinism.epoch_seed(seed, _FILE_ORDER, pass_index)
        )
        # Reading several shards at once mixes the order beyond what the shuffle buffer alone can. In a fixed
        # order (deterministic=True): the order is a function of the seed, and records shared out by position
        # come in the same order on every worker.
        ds = tf.data.Dataset.from_tensor_slices(order).interleave(
            tf.data.TFRecordDataset,
            cycle_length=cycle_length,
            block_length=16,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if by_record:
            ds = ds.shard(shard[1], shard[0])
        if sample_fraction < 1.0:
            ds = ds.filter(lambda s: _keep_sample(s, sample_fraction))
        return _shuffle_records(ds, shuffle_buffer, determinism.epoch_seed(seed + salt, _RECORD_ORDER, pass_index))

    def batches_from(first_epoch):
        """(serialized batch, epoch, step in the epoch) from the start of `first_epoch` on."""
        if not repeat:
            return one_pass(first_epoch).batch(batch_size).enumerate().map(lambda step, b: (b, first_epoch, step))
        stream = tf.data.Dataset.counter().flat_map(one_pass).batch(batch_size).enumerate()
        return stream.skip(first_epoch * steps_per_epoch).map(
            lambda g, b: (b, g // steps_per_epoch, g % steps_per_epoch)
        )

    # The epoch is read when an iterator starts: Keras starts one per epoch (one per fit() with repeat).
    start = tf.data.Dataset.range(1).map(
        lambda _: epoch.read_value() if epoch is not None else tf.constant(0, tf.int64)
    )
    ds = start.flat_map(batches_from)
    if num_examples and not repeat and shard is None:
        ds = _assert_batches(ds, _known_count(files, num_examples, sample_fraction), batch_size)

    def prepare(serialized, epoch_index, step):
        ex = parse_batch(serialized, image_shape)
        # One stateless seed per batch, from (seed, epoch, step): augmentation is reproducible and resumable.
        batch_seed = tf.random.experimental.stateless_fold_in(
            determinism.epoch_seed(seed + salt, _AUGMENT, epoch_index), step
        )
        images = augment_fn(ex["image"], batch_seed)
        labels = tf.cast(tf.reshape(ex["label"], [-1, 1]), tf.float32)
        if class_weights is None:
            return images, labels
        return images, labels, tf.gather(tf.constant(class_weights, tf.float32), ex["label"])

    # deterministic=True: batches leave in their order (tf.data's default, unless options say otherwise).
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _shuffle_records(ds: tf.data.Dataset, buffer_size: int, seed: tf.Tensor) -> tf.data.Dataset:
    """`ds` (serialized records) through a shuffle buffer of `buffer_size`, in an order drawn from `seed` alone.

    tf.data's own shuffle buffer, given its two seeds directly: `Dataset.shuffle(seed=...)` also draws on
    TensorFlow's global seed (which `seed_everything` sets, and any caller may change), and with a tensor
    seed it fails to trace when that global seed is 0 (`python -m trainer --seed=0`). A sliding buffer,
    not fixed blocks: shuffling fixed blocks of the stream put the same records in the same part of every
    pass (its first and second half), which cost validation AUC (bench/RESULTS.md). Serialized records (~27 kB each) are cheaper to hold than decoded float images.
    """
    if ds.element_spec != tf.TensorSpec([], tf.string):
        raise TypeError(f"_shuffle_records shuffles serialized records (scalar strings), not {ds.element_spec}")
    seed = tf.cast(seed, tf.int64)
    # Seeds (0, 0) would make the kernel draw a nondeterministic seed of its own.
    seed2 = tf.where(tf.logical_and(seed[0] == 0, seed[1] == 0), tf.constant(1, tf.int64), seed[1])
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds),
        buffer_size=tf.constant(buffer_size, tf.int64),
        seed=seed[0],
        seed2=seed2,
        seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[tf.string],
        output_shapes=[[]],
        reshuffle_each_iteration=False,  # each pass gets its own seed from (seed, pass)
    )
    return tf.data.experimental.from_variant(variant, ds.element_spec)


def _assert_batches(ds: tf.data.Dataset, num_examples: int, batch_size: int) -> tf.data.Dataset:
    """Declares the batch count of `num_examples` in batches of `batch_size` (the last one partial), so
    Keras knows where an epoch ends; tf.data raises if the files hold a different number."""
    return ds.apply(tf.data.experimental.assert_cardinality(-(-num_examples // batch_size)))


def eval_dataset(
    files: list[str],
    batch_size: int,
    sample_fraction: float = 1.0,
    with_ids: bool = False,
    image_shape=PATCH_SHAPE,
    image_dtype=tf.float32,
    shard: tuple[int, int] | None = None,
    num_examples: int | None = None,
) -> tf.data.Dataset:
    """Unaugmented batches in file order: (images, labels) or, with_ids, {"image", "label", "id"} dicts.

    Images are 0..255, float32 or (image_dtype=tf.uint8, what training validates with) the raw bytes;
    labels float32 (B, 1) (-1 on the unlabelled test split). shard: (index, count), as in train_dataset.
    num_examples (the split's size, unsharded and unsampled; with sample_fraction, what the sample keeps is
    counted in one reading pass): the batch count is asserted, so Keras knows
    where the validation pass ends instead of running into the end of the files (and warning that the
    "input ran out of data") on the first epoch.
    """
    files, by_record, _ = _shard_files(files, shard)
    if by_record:
        ds = tf.data.TFRecordDataset(files).shard(shard[1], shard[0])
    else:
        ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8) or None)
    if sample_fraction < 1.0:
        ds = ds.filter(lambda s: _keep_sample(s, sample_fraction))
    ds = ds.batch(batch_size)
    if num_examples is not None and shard is None:
        ds = _assert_batches(ds, _known_count(files, num_examples, sample_fraction), batch_size)

    def prepare(serialized):
        ex = parse_batch(serialized, image_shape)
        images = tf.cast(ex["image"], image_dtype)
        labels = tf.cast(tf.reshape(ex["label"], [-1, 1]), tf.float32)
        if with_ids:
            return {"image": images, "label": labels, "id": ex["id"]}
        return images, labels

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
