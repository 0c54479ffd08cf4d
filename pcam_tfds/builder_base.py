"""What the two patch datasets (`pcam`: the Kaggle folder, `pcam_hdf5`: the official HDF5 files) share.

Each builds either in this process or on Apache Beam, and TFDS itself makes that choice from what
`_generate_examples` returns: a Python generator is written by TFDS' own writer with no Beam at all; a
`beam.PTransform` makes TFDS create one pipeline (with `--beam_pipeline_options` or a runner) and apply
it there. `use_beam` decides which one a builder returns, from the download config alone.

Both builds also share:
- one build of a config at a time (a lock on the config folder), and the removal of `incomplete.*`
  folders that killed builds leave behind;
- shards of 64 MiB unless told otherwise;
- the count of examples sent to the writer per split (a dict on the local path, Beam counters on Beam),
  checked against what TFDS wrote, so a writer that loses examples fails the build (`_check_counts`);
- what the build says: a line when it starts (stderr) and one with the split sizes and rejections when
  it is done (stdout), instead of TFDS' "Downloading and preparing dataset Unknown size (download: Unknown
  size, ...)" (nothing is downloaded; the size is unknown until the end).

Reading a built dataset needs none of this: `tfds.builder_from_directory(TFDS_DIR/<name>/<config>/<version>)`
(only pcam_tfds/features.py, which TFDS imports for the image feature).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import itertools
import json
import logging
import os
from typing import NamedTuple

import tensorflow_datasets as tfds
from etils import epath

from pcam_tfds import features
from pcam_tfds.core import counters, folder_lock, outputs, serialize, tfrecord
from pcam_tfds.core.patches import PATCH_SHAPE
from pcam_tfds.core.progress import print_line

DEFAULT_MAX_SHARD_BYTES = 64 << 20
# The patches' license, as both datasets state it (PatchCamelyon is CC0, following Camelyon16).
PCAM_LICENSE = "CC0 1.0 (PatchCamelyon, following Camelyon16: https://github.com/basveeling/pcam)"


def patch_features(label_doc: str, id_doc: str) -> tfds.features.FeaturesDict:
    """image (96x96x3 uint8), label (normal/tumour; -1 = no label), id: the features of both datasets."""
    return tfds.features.FeaturesDict(
        {
            # An Image to TFDS (show_examples, as_dataframe) stored as raw bytes, not PNG (pcam_tfds/features.py).
            "image": features.RawImage(shape=PATCH_SHAPE, doc="an H&E-stained lymph-node patch, RGB"),
            "label": tfds.features.ClassLabel(names=features.LABEL_NAMES, doc=label_doc),
            "id": tfds.features.Text(doc=id_doc),
        }
    )


def written_counts(split_infos, names) -> dict[str, int]:
    """{split: examples TFDS wrote} for the split names given (0 for a split TFDS has no record of)."""
    return {name: split_infos[name].num_examples if name in split_infos else 0 for name in names}


def emitted_problems(written: dict[str, int], emitted: dict[str, int]) -> list[str]:
    """Each split whose count of examples sent to the writer differs from what was written."""
    if not emitted:
        return []
    return [
        f"{name}: {emitted.get(name, 0)} examples sent to the writer, {n} written"
        for name, n in written.items()
        if emitted.get(name, 0) != n
    ]


class _AlreadySerialized:
    """What TFDS' Writer is given as its serializer for records that are serialized already (core.serialize)."""

    def __init__(self, example_specs):
        self.example_specs = example_specs  # the Writer names the features when it reports duplicate keys

    def serialize_example(self, example: bytes) -> bytes:
        return example


def write_serialized_splits(builder, generators: dict, download_config) -> list:
    """Writes {split: iterable of (key, serialized tf.train.Example)} with TFDS' own Writer; the SplitInfos.

    What TFDS' generator path does (tensorflow_datasets.core.split_builder: the same Writer, key hash,
    shuffle salt, shard sizes, file names and example writer), minus encoding and serializing each
    example in this process: the records arrive serialized (`pcam_tfds.core.serialize`, byte for byte
    what TFDS would have made: tests/test_serialize.py), so the shards are TFDS' bytes. A
    `local_steps.SortedSplit` (the local build's splits) skips the Writer's shuffle: `write_sorted_split`
    writes the same shards from the stream; a truncated build (max_examples_per_split) and
    ignore_duplicates still go through the Writer.
    """
    from tensorflow_datasets.core import splits as splits_lib
    from tensorflow_datasets.core import writer as writer_lib

    from pcam_tfds import local_steps

    infos = {}
    specs = builder.info.features.get_serialized_info()
    # A split still being drawn (local_steps.Drawing: train and validation, drawn while the test split is written)
    # is written after the others; the SplitInfos keep the generators' order.
    for name, generator in sorted(generators.items(), key=lambda item: bool(getattr(item[1], "waits", False))):
        template = builder._get_filename_template(split_name=name)
        if (
            isinstance(generator, local_steps.SortedSplit)
            and generator.hash_salt == name
            and not builder.info.disable_shuffling
            and not download_config.ignore_duplicates
            and download_config.max_examples_per_split is None
        ):
            shard_lengths, total_size = write_sorted_split(
                generator, template, download_config.get_shard_config(), builder._example_writer()
            )
            infos[name] = splits_lib.SplitInfo(
                name=name, shard_lengths=shard_lengths, num_bytes=total_size, filename_template=template
            )
            continue
        writer = writer_lib.Writer(
            serializer=_AlreadySerialized(specs),
            filename_template=template,
            hash_salt=name,
            disable_shuffling=builder.info.disable_shuffling,
            shard_config=download_config.get_shard_config(),
            example_writer=builder._example_writer(),
            ignore_duplicates=download_config.ignore_duplicates,
        )
        if download_config.max_examples_per_split is not None:
            generator = itertools.islice(generator, download_config.max_examples_per_split)
        for key, serialized in generator:
            writer.write(key, serialized)
        shard_lengths, total_size = writer.finalize()
        infos[name] = splits_lib.SplitInfo(
            name=name, shard_lengths=shard_lengths, num_bytes=total_size, filename_template=template
        )
    return [infos[name] for name in generators]


def write_sorted_split(split, template, shard_config, example_writer) -> tuple[list[int], int]:
    """Writes a `local_steps.SortedSplit` as TFDS' Writer would, shard by shard: (shard lengths, bytes).

    TFDS' Writer hashes each key (MD5 of the split's name and the key), keeps the examples in shuffle
    buckets on disk once they pass 1 GB, sorts by the hash and cuts the sorted run into shards whose number
    and boundaries depend only on the count and total size. A SortedSplit arrives in that order with both
    numbers known, so each shard's range of examples is known up front and the same shards (the same files,
    records and bytes, whatever the number of workers; tests/test_one_pass.py) are written each by one
    worker process, from the split's source, without the buckets. The Writer's checks are kept: a key
    seen twice (or out of order, also across shards) fails the build, as do fewer or more examples, or
    other sizes, than announced.
    """
    from tensorflow_datasets.core import writer as writer_lib

    n, size = split.num_examples, split.total_size
    if n == 0:
        raise AssertionError("No examples were yielded.")  # what TFDS' Writer says
    shard_specs = writer_lib._get_shard_specs(
        num_examples=n, total_size=size, bucket_lengths=[n], filename_template=template, shard_config=shard_config
    )
    ends = list(itertools.accumulate(int(spec.examples_number) for spec in shard_specs))
    ranges = [(spec.path, end - int(spec.examples_number), end) for spec, end in zip(shard_specs, ends)]
    write = functools.partial(_write_shard, salt=split.hash_salt, example_writer=example_writer)
    arrived, size_arrived, previous = 0, 0, None
    for spec, shard in zip(shard_specs, split.shards(write, ranges)):
        if shard.examples:
            _check_after(template.split, previous, shard.first)
        previous = shard.last or previous
        arrived += shard.examples
        size_arrived += shard.bytes
        split.count(shard.examples)
        if shard.examples != spec.examples_number:
            break  # the count check below says so
        if shard.record_keys:  # formats with an index (ArrayRecord): as TFDS' Writer writes it
            if len(shard.record_keys) != int(spec.examples_number):
                raise RuntimeError(
                    f"{spec.path}: {len(shard.record_keys)} records written, {spec.examples_number} planned"
                )
            writer_lib._write_index_file(spec.index_path, shard.record_keys)
    more = " and more" if arrived == n and len(split.source[n : n + 1]) else ""
    if more or arrived != n or size_arrived != size:
        raise RuntimeError(
            f"{template.split}: {n} examples of {size} bytes were announced, {arrived}{more} of "
            f"{size_arrived} bytes arrived"
        )
    return [int(spec.examples_number) for spec in shard_specs], size


def _check_after(split: str, previous: tuple[int, str] | None, current: tuple[int, str]) -> None:
    """Fails unless the (hash, key) CURRENT comes strictly after PREVIOUS in TFDS' order (None: the first)."""
    if previous is not None and current[0] <= previous[0]:
        what = "twice" if current[0] == previous[0] else "out of TFDS' order"
        raise RuntimeError(f"{split}: key {current[1]!r} came {what} (after {previous[1]!r})")


class _Shard(NamedTuple):
    """What a worker wrote into one shard: its examples, their bytes, the (hash, key) of its first and last
    examples (None when empty) and the records' positions for an index (ArrayRecord; else None)."""

    examples: int
    bytes: int
    first: tuple[int, str] | None
    last: tuple[int, str] | None
    record_keys: object


def _write_shard(path, examples, *, salt: str, example_writer) -> _Shard:
    """Writes EXAMPLES ((key, serialized) pairs, in hash order) into the shard file PATH (a worker's task)."""
    key_hash = serialize.key_hasher(salt)  # TFDS' Hasher(salt).hash_key
    seen = {"examples": 0, "bytes": 0, "first": None, "last": None}

    def hashed():
        for key, serialized in examples:
            hkey = key_hash(key)
            _check_after(salt, seen["last"], (hkey, key))
            seen["last"] = (hkey, key)
            if seen["first"] is None:
                seen["first"] = seen["last"]
            seen["examples"] += 1
            seen["bytes"] += len(serialized)
            yield hkey, serialized

    if _writes_tfrecords_itself(path, example_writer):
        tfrecord.write_records(os.fspath(path), (serialized for _, serialized in hashed()))
        record_keys = None
    else:
        record_keys = example_writer.write(path, hashed())
    return _Shard(seen["examples"], seen["bytes"], seen["first"], seen["last"], record_keys)


def _writes_tfrecords_itself(path, example_writer) -> bool:
    """Whether a shard is a local TFRecord file, which core.tfrecord writes: the bytes of TFDS' TFRecord writer
    (tf.io.TFRecordWriter) with one system call per few hundred records instead of two or three per record.
    Other formats (`--file_format=array_record`), remote folders and any other writer
    go through TFDS' ExampleWriter."""
    from tensorflow_datasets.core import file_adapters
    from tensorflow_datasets.core import writer as writer_lib

    return (
        type(example_writer) is writer_lib.ExampleWriter
        and example_writer.file_format == file_adapters.FileFormat.TFRECORD
        and "://" not in os.fspath(path)
    )


class PatchBuilder(tfds.core.GeneratorBasedBuilder):
    """Base of the `pcam` and `pcam_hdf5` builders (abstract: TFDS does not register it as a dataset)."""

    def checks_dir(self) -> epath.Path:
        """Where the build writes its validation outputs: `validate/` beside the shards."""
        return self.data_path / "validate"

    @staticmethod
    def use_beam(download_config: tfds.download.DownloadConfig) -> bool:
        """Beam when Beam options or a runner are given; otherwise one process, with no Beam imported.

        On one machine the DirectRunner holds TFDS' shuffle of every serialized
        example in memory (more than a laptop has at Kaggle scale), and its
        multi_processing mode can drop examples (the count check catches it).
        Both paths write the same dataset.
        """
        return download_config.beam_options is not None or download_config.beam_runner is not None

    def download_and_prepare(self, *, download_config=None, **kwargs):
        # One build of this config at a time; holding the lock, any incomplete.* folder beside the dataset
        # was left by a build that was killed (TFDS writes there, then renames), so it can go.
        parent = epath.Path(self.data_path).parent
        parent.mkdir(parents=True, exist_ok=True)
        with folder_lock.FolderLock(parent, f"tfds build {self.name} {self.builder_config.name}"):
            for stale in parent.glob("incomplete.*"):
                logging.warning("removing %s, left by a build that did not finish", stale)
                stale.rmtree(missing_ok=True)
            return super().download_and_prepare(download_config=download_config, **kwargs)

    def is_prepared(self) -> bool:
        # TFDS warns "Variant folder X has no dataset_info.json" when X does not even exist, so every first
        # build would begin with that warning; a folder that is not there holds no dataset.
        return epath.Path(self.data_path).exists() and super().is_prepared()

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        # Read by _split_generators/_generate_examples: generators, or PTransforms TFDS runs on Beam.
        self._on_beam = self.use_beam(download_config)
        self._emitted: dict[str, int] = {}  # the local generators count into it; on Beam, the counters
        default = tfds.core.utils.shard_utils.DEFAULT_MAX_SHARD_SIZE  # what `tfds build` passes when not told
        if download_config.num_shards is None and download_config.max_shard_size == default:
            # 64 MiB shards instead of TFDS' 1 GiB: about 115 shards at Kaggle size, so readers can
            # interleave many files, and no 1 GiB group has to pass through a Beam worker at once.
            download_config = dataclasses.replace(download_config, max_shard_size=DEFAULT_MAX_SHARD_BYTES)
        if self._on_beam:
            from beam_jobs import build_steps  # the Beam side of the build, imported only for a Beam build

            download_config = build_steps.local_beam_defaults(download_config)
        super()._download_and_prepare(dl_manager, download_config)
        if download_config.max_examples_per_split is not None:
            return  # a deliberately truncated build
        self._check_counts(self.info.splits, self._emitted)

    def _log_download_bytes(self) -> None:
        print_line(f"building {self.info.full_name} in {self.data_dir}")

    def _log_download_done(self) -> None:
        splits = ", ".join(f"{name} {info.num_examples:,}" for name, info in sorted(self.info.splits.items()))
        rejected = ""
        summary = self.checks_dir() / outputs.SUMMARY
        if summary.exists():
            n = json.loads(summary.read_text()).get("rejected", 0)
            rejected = f"; {n:,} files rejected, listed in {self.checks_dir() / outputs.REJECTED}" if n else ""
        print(f"built {self.info.full_name} in {self.data_dir}: {splits} examples{rejected}", flush=True)

    @abc.abstractmethod
    def _check_counts(self, split_infos, emitted: dict[str, int]) -> None:
        """Raises unless each split holds exactly the examples validation allowed into it.

        It raises inside TFDS' incomplete folder, so a short build is never left behind as finished.
        """

    def _process_pipeline_result(self, pipeline_result) -> None:
        # The counts each split was given on Beam, to check against what the writer wrote.
        from apache_beam.metrics.metric import MetricsFilter

        query = pipeline_result.metrics().query(MetricsFilter().with_namespace(counters.NAMESPACE))
        for c in query["counters"]:
            name = c.key.metric.name
            if name.startswith(counters.EXAMPLES_PREFIX):  # counters.examples(split)
                split = name[len(counters.EXAMPLES_PREFIX) :]
                self._emitted[split] = self._emitted.get(split, 0) + c.committed
