"""The local build reads each file twice (or once, asked), in worker processes, and writes what TFDS' own path writes.

On the folder with every injected problem: the one-pass build, the build that reuses a validation and
the build through TFDS' own encoder and serializer (the path before issue 23) hold the same records in
the same order in the same shard files; the bytes do not depend on the number of worker processes; and a
worker that is killed fails the build with a clear message, leaves no dataset, and the next build is clean.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from kaggle_folders import make_with_problems, parse_record
from tensorflow_datasets.core.utils import shard_utils

from pcam_tfds import builder_base, local_steps
from pcam_tfds.core import local_validation, patches, serialize
from pcam_tfds.pcam.pcam_dataset_builder import Builder


class _TfdsEncoded(Builder, skip_registration=True):
    """The build as it was: dict examples, encoded and serialized by TFDS' split builder."""

    name = "pcam"

    def _generate_splits(self, dl_manager, download_config):
        self._spill_dir = None
        return tfds.core.GeneratorBasedBuilder._generate_splits(self, dl_manager, download_config)

    def _split_generators(self, dl_manager):
        generators = super()._split_generators(dl_manager)
        return {name: ((key, parse_record(ex)) for key, ex in gen) for name, gen in generators.items()}


def _build(builder_class, manual_dir, data_dir):
    builder = builder_class(data_dir=str(data_dir), config="full")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def _shards(builder) -> dict[str, bytes]:
    folder = Path(builder.data_dir)
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tfrecord*"))}


def _records(builder) -> dict[str, list]:
    out = {}
    for name in _shards(builder):
        path = str(Path(builder.data_dir) / name)
        out[name] = [tf.train.Example.FromString(r) for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("one_pass")
    make_with_problems(root / "d")
    return root / "d"


@pytest.fixture(scope="module")
def one_pass(folder, tmp_path_factory):
    return _build(Builder, folder, tmp_path_factory.mktemp("tfds_one_pass"))


def test_one_pass_reuse_and_tfds_own_path_write_the_same_dataset(folder, one_pass, tmp_path, monkeypatch):
    reference = _build(_TfdsEncoded, folder, tmp_path / "reference")
    assert _records(one_pass) == _records(reference)  # same shard files, records in the same order
    infos = [json.loads((Path(b.data_dir) / "dataset_info.json").read_text()) for b in (one_pass, reference)]
    for info in infos:
        info.pop("moduleName")  # the reference's class lives in this test module
    assert infos[0] == infos[1]
    assert not list(Path(one_pass.data_dir).glob("spill.*"))
    validation = tmp_path / "validation"
    local_validation.LocalValidation(str(folder)).write_outputs(str(validation))
    monkeypatch.setenv("PCAM_VALIDATION_DIR", str(validation))
    reused = _build(Builder, folder, tmp_path / "reused")
    assert _shards(reused) == _shards(one_pass)
    assert {n: s.num_examples for n, s in one_pass.info.splits.items()} == {"train": 31, "validation": 7, "test": 11}


@pytest.mark.parametrize("read_once", ["", "1"])
def test_each_file_is_read_twice_or_once_as_asked_and_the_dataset_is_the_same(
    folder, one_pass, tmp_path, monkeypatch, read_once
):
    log = tmp_path / "reads.log"
    read_file, read_rows = patches.read_file, patches.read_rows

    def logged(path, **kw):  # runs in the forked workers: one appended line per read
        with open(log, "a") as f:
            f.write(os.path.basename(path) + "\n")
        return read_file(path, **kw)

    def logged_rows(paths, rows):  # the native kernel's reads (the files it left to read_file are logged there)
        sizes, mtimes = read_rows(paths, rows)
        with open(log, "a") as f:
            f.writelines(os.path.basename(p) + "\n" for p, n in zip(paths, sizes) if n >= 0)
        return sizes, mtimes

    monkeypatch.setattr(patches, "read_file", logged)
    monkeypatch.setattr(patches, "read_rows", logged_rows)
    monkeypatch.setenv(local_validation.READ_ONCE_ENV, read_once)
    built = _build(Builder, folder, tmp_path / "built")
    assert _shards(built) == _shards(one_pass)
    assert not list(Path(built.data_dir).parent.rglob("spill.*"))
    reads = collections.Counter(log.read_text().split())
    written = {key for key, _ in _keys(built)}
    listed = {p.name for source in ("train", "test") for p in (folder / source).iterdir() if p.is_file()}
    assert set(reads) <= listed and len(set(reads)) > 40
    for name, n in reads.items():
        assert n == (2 if name[:-4] in written and not read_once else 1), name


def _keys(builder):
    for records_ in _records(builder).values():
        for ex in records_:
            yield ex.features.feature["id"].bytes_list.value[0].decode(), ex


def _build_in_shards(manual_dir, data_dir, num_shards):
    builder = Builder(data_dir=str(data_dir), config="full")
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir), num_shards=num_shards)
    builder.download_and_prepare(download_config=config)
    return builder


def _split_records(builder) -> dict[str, list[bytes]]:
    out = {}
    for name in _shards(builder):  # sorted: each split's shards in their order
        split = name.split("-")[1].split(".")[0]
        out.setdefault(split, []).extend(
            tf.data.TFRecordDataset(str(Path(builder.data_dir) / name)).as_numpy_iterator()
        )
    return out


def test_the_bytes_do_not_depend_on_the_number_of_workers(folder, one_pass, tmp_path, monkeypatch):
    in_shards = {}
    for workers in (1, 2):
        monkeypatch.setattr(local_validation, "default_workers", lambda workers=workers: workers)
        assert _shards(_build(Builder, folder, tmp_path / f"w{workers}")) == _shards(one_pass), workers
        # Several shards a split: with 2 workers each worker writes some of them.
        in_shards[workers] = _build_in_shards(folder, tmp_path / f"w{workers}_shards", 3)
    assert _shards(in_shards[1]) == _shards(in_shards[2])
    assert len(_shards(in_shards[2])) == 9
    assert _split_records(in_shards[2]) == _split_records(one_pass)  # the same records in the same order


def test_a_worker_killed_while_writing_fails_the_build_and_leaves_nothing(folder, tmp_path, monkeypatch):
    serialize_record = serialize.serialize_record
    victim = sorted((folder / "train").iterdir())[7].stem

    def dies_on_one_record(image, label, id_):
        if id_ == victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return serialize_record(image, label, id_)

    monkeypatch.setattr(serialize, "serialize_record", dies_on_one_record)
    monkeypatch.setattr(local_validation, "default_workers", lambda: 2)
    with pytest.raises(local_validation.WorkerDied, match="died while writing the (train|validation) shards"):
        _build_in_shards(folder, tmp_path / "tfds", 3)
    parent = tmp_path / "tfds" / "pcam" / "full"
    assert [p.name for p in parent.iterdir()] == []
    monkeypatch.setattr(serialize, "serialize_record", serialize_record)
    builder = _build_in_shards(folder, tmp_path / "tfds", 3)
    assert builder.is_prepared() and sum(s.num_examples for s in builder.info.splits.values()) == 49


def test_a_killed_worker_fails_the_build_and_leaves_nothing(folder, tmp_path, monkeypatch):
    read_file, read_rows = patches.read_file, patches.read_rows
    victim = sorted((folder / "train").iterdir())[5].name

    def dies_on_one_file(path, **kw):
        if path.endswith(victim):
            os.kill(os.getpid(), signal.SIGKILL)
        return read_file(path, **kw)

    def dies_on_one_of(paths, rows):  # the native kernel's reads
        if any(path.endswith(victim) for path in paths):
            os.kill(os.getpid(), signal.SIGKILL)
        return read_rows(paths, rows)

    monkeypatch.setattr(patches, "read_file", dies_on_one_file)
    monkeypatch.setattr(patches, "read_rows", dies_on_one_of)
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    config = tfds.download.DownloadConfig(manual_dir=str(folder))
    with pytest.raises(local_validation.WorkerDied, match="worker process of the local build died while validating"):
        builder.download_and_prepare(download_config=config)
    parent = tmp_path / "tfds" / "pcam" / "full"
    assert not builder.is_prepared() and [p.name for p in parent.iterdir()] == []
    monkeypatch.setattr(patches, "read_file", read_file)
    monkeypatch.setattr(patches, "read_rows", read_rows)
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    builder.download_and_prepare(download_config=config)
    assert builder.is_prepared() and sum(s.num_examples for s in builder.info.splits.values()) == 49


def test_the_local_build_writes_each_split_in_one_sequential_pass(folder, one_pass, tmp_path, monkeypatch):
    calls = []
    real = builder_base.write_sorted_split

    def spy(split, *args):
        calls.append(split.hash_salt)
        return real(split, *args)

    monkeypatch.setattr(builder_base, "write_sorted_split", spy)
    built = _build(Builder, folder, tmp_path / "sorted")
    assert sorted(calls) == ["test", "train", "validation"]  # no split went through TFDS' shuffle buckets
    assert _shards(built) == _shards(one_pass)


def _writer(tmp_path, split="train"):
    from tensorflow_datasets.core import file_adapters, naming
    from tensorflow_datasets.core import writer as writer_lib

    template = naming.ShardedFileTemplate(
        data_dir=str(tmp_path), dataset_name="pcam", split=split, filetype_suffix="tfrecord"
    )
    return template, writer_lib.ExampleWriter(file_format=file_adapters.FileFormat.TFRECORD)


def _ordered_pairs(n, split="train"):
    keys = [f["id"] for f in local_steps.in_writer_order([{"id": f"{i:040x}"} for i in range(n)], split)]
    return [(k, b"x" * (i + 1)) for i, k in enumerate(keys)]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("reverse", "out of TFDS' order"),
        ("repeat", "came twice"),
        ("size", "were announced"),
        ("fewer", "were announced"),
        ("more", "and more"),
        ("across shards", "out of TFDS' order"),  # each shard in order, the second shard's keys before the first's
        ("repeat across shards", "came twice"),
    ],
)
def test_a_sorted_split_that_breaks_its_promise_fails(change, message, workers, tmp_path):
    pairs, size, num_examples = _ordered_pairs(6), None, None
    if change == "reverse":
        pairs = pairs[::-1]
    elif change == "repeat":
        pairs = [pairs[0], *pairs]
    elif change == "size":
        size = 1
    elif change == "fewer":
        num_examples = 7
    elif change == "more":
        num_examples = 5
    elif change == "across shards":
        pairs = pairs[2:4] + pairs[:2] + pairs[4:]
    else:
        pairs = pairs[:2] + [pairs[1]] + pairs[3:]
    size = sum(len(s) for _, s in pairs[:num_examples]) if size is None else size
    split = local_steps.SortedSplit(pairs, num_examples or len(pairs), size, "train", workers=workers)
    template, example_writer = _writer(tmp_path)
    with pytest.raises(RuntimeError, match=message):
        builder_base.write_sorted_split(split, template, shard_utils.ShardConfig(num_shards=3), example_writer)


@pytest.mark.parametrize("num_shards", [1, 3, 7])
def test_a_sorted_split_writes_the_same_shards_with_any_number_of_workers(num_shards, tmp_path):
    pairs = _ordered_pairs(20)
    written = {}
    for workers in (1, 2):
        counts = {}
        split = local_steps.SortedSplit(pairs, 20, sum(len(s) for _, s in pairs), "train", counts, workers)
        (tmp_path / str(workers)).mkdir()
        template, example_writer = _writer(tmp_path / str(workers))
        lengths, size = builder_base.write_sorted_split(
            split, template, shard_utils.ShardConfig(num_shards=num_shards), example_writer
        )
        assert len(lengths) == num_shards and sum(lengths) == 20 == counts["train"]
        assert size == sum(len(s) for _, s in pairs)
        files = sorted((tmp_path / str(workers)).iterdir())
        records = [r for f in files for r in tf.data.TFRecordDataset(str(f)).as_numpy_iterator()]
        assert records == [s for _, s in pairs]  # every record, in order, across the shards
        written[workers] = {f.name: f.read_bytes() for f in files}
    assert written[1] == written[2]


def test_the_writer_order_is_tfds_hash_order():
    from tensorflow_datasets.core import hashing

    ids = [{"id": f"{i:040x}"} for i in range(50)] + [{"id": x} for x in ("a\\b", "a/c", "ünï", "x" * 90)]
    for split in ("train", "validation", "test"):
        ordered = local_steps.in_writer_order(ids, split)
        hasher = hashing.Hasher(split)
        assert ordered == sorted(ids, key=lambda f: hasher.hash_key(f["id"])) and len(ordered) == 54
        key_hash = serialize.key_hasher(split)
        assert [key_hash(f["id"]) for f in ids] == [hasher.hash_key(f["id"]) for f in ids]


_FORKS: list | None = None  # while a test records them: the threads alive in this process at each fork


def _record_fork():
    if _FORKS is not None:
        _FORKS.append(sorted(t.name for t in threading.enumerate()))


os.register_at_fork(before=_record_fork)


def test_the_splits_are_drawn_while_the_test_split_is_written(folder, tmp_path, monkeypatch):
    # The test split needs no drawing: it is written first, while a thread writes the validation's outputs and
    # draws train and validation. No process is forked while that thread runs.
    global _FORKS
    writes, drawn_in = [], []
    write, run = builder_base.write_sorted_split, local_steps.Drawing._run

    def logged_write(split, *args, **kwargs):
        writes.append((split.hash_salt, split.waits))
        return write(split, *args, **kwargs)

    def logged_run(self):
        drawn_in.append(threading.current_thread().name)
        run(self)

    monkeypatch.setattr(builder_base, "write_sorted_split", logged_write)
    monkeypatch.setattr(local_steps.Drawing, "_run", logged_run)
    _FORKS = []
    try:
        built = _build_in_shards(folder, tmp_path / "tfds", num_shards=3)  # several shards: writers are forked
    finally:
        forks, _FORKS = _FORKS, None
    assert writes == [("test", False), ("train", True), ("validation", True)]
    assert drawn_in == ["pcam-draw-splits"]
    assert forks and not [names for names in forks if "pcam-draw-splits" in names]
    assert list(built.info.splits.keys()) == ["train", "validation", "test"]
    assert (Path(built.data_dir) / "validate" / "manifest.parquet").exists()


def test_a_failed_outputs_writer_fails_the_build_and_leaves_nothing(folder, tmp_path, monkeypatch):
    def fails(self, output_dir, doc=None):
        raise OSError(f"{output_dir}: no space left on device")

    monkeypatch.setattr(local_validation.LocalValidation, "write_outputs", fails)  # runs in the forked writer
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    config = tfds.download.DownloadConfig(manual_dir=str(folder))
    with pytest.raises(local_validation.WorkerDied, match="writing the validation outputs .* exit code 1"):
        builder.download_and_prepare(download_config=config)
    assert not builder.is_prepared() and list((tmp_path / "tfds" / "pcam" / "full").iterdir()) == []


def test_a_build_that_fails_while_the_outputs_are_written_leaves_nothing(folder, tmp_path, monkeypatch):
    # The outputs' process may still be writing when a split fails: the build waits for it before TFDS removes its
    # temporary folder, so that nothing is written into a folder that is gone.
    import time

    write_outputs, write = local_validation.LocalValidation.write_outputs, builder_base.write_sorted_split

    def slow(self, output_dir, doc=None):  # in the forked process
        time.sleep(1.0)
        return write_outputs(self, output_dir, doc)

    def fails_on_test(split, *args, **kwargs):
        if split.hash_salt == "test":
            raise RuntimeError("the test split failed")
        return write(split, *args, **kwargs)

    monkeypatch.setattr(local_validation.LocalValidation, "write_outputs", slow)
    monkeypatch.setattr(builder_base, "write_sorted_split", fails_on_test)
    builder = Builder(data_dir=str(tmp_path / "tfds"), config="full")
    with pytest.raises(RuntimeError, match="the test split failed"):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
    time.sleep(1.5)  # longer than the outputs' process would still have written
    assert list((tmp_path / "tfds" / "pcam" / "full").iterdir()) == []
