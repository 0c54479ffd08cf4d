"""The single-machine executor of the `pcam` builder: the same validation, join and splits, without Beam.

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full

On one machine Beam's DirectRunner moves every serialized example through its shuffle in memory,
which costs several times the memory and time of this path, and in multi_processing mode it dropped
examples (bench/RESULTS.md). Here a pool of worker processes (one per core) runs the steps of
`pcam_tfds.core` that `beam_jobs` distributes (`records`: read, join, duplicates; `summary`;
`outputs`), the same `assign_splits` decides membership and the same validation outputs are written.

Reading: the worker that reads a file decodes it, hashes the pixels and takes the channel moments, all
from that one read. Once the splits are known (they need every pixel hash: duplicates stay on one side),
the workers write the shards: each reads its shard's files again, checks their pixels against the hash
validation recorded (`RereadExamples`; so too when a `beam_jobs.validate` run is reused) and serializes
the records (`pcam_tfds.core.serialize`). With `spill_dir` (PCAM_READ_ONCE=1, `read_once`) each file is
read only once: the validating worker appends the pixels of a valid file to its chunk's spill file
(`spill_dir/NNNNNN.px`, fixed-size slots) and the writers take them from there with one `pread` each
(`SpilledExamples`). Either way each split is a `SortedSplit`: its (key, serialized `tf.train.Example`)
pairs in the order TFDS' Writer puts them in its shards (the key's hash), never depending on the number
of workers, with their count and total size known up front, so that `builder_base.write_sorted_split`
knows every shard's range of examples before the first is read and the workers write the shards in
parallel, as TFDS' Writer lays them out.

Worker processes are forked, so they do not re-import TensorFlow and TFDS as spawned ones would. A
worker that dies fails the build (`WorkerDied`) inside TFDS' temporary folder, so no dataset is left.
Nothing here imports Beam. Reading the files and writing each split log a progress line (files/s,
time left) at least every 10 s.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from pcam_tfds import validated
from pcam_tfds.core import examples, layout, outputs, records, serialize, splits, summary
from pcam_tfds.core.progress import Progress, print_line

_CHUNK = 512  # files per task
_IN_FLIGHT = 4  # tasks queued per worker: enough to keep them busy, few enough to bound memory
_SLOT = serialize.IMAGE_BYTES  # bytes per file in a spill file


class WorkerDied(RuntimeError):
    """A worker process of the local build ended without finishing its task (killed, out of memory)."""


def default_workers() -> int:
    """One worker process per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


READ_ONCE_ENV = "PCAM_READ_ONCE"


def read_once(environ=os.environ) -> bool:
    """Whether the local build reads each file once (PCAM_READ_ONCE=1), keeping the pixels of every valid file
    in a spill folder between validation and writing, instead of reading the files again to write them.

    Reading again is the default: on one machine the second read comes from the page cache, and with its
    decode and hash check it cost less than writing and reading back the spill (7.7 GB at Kaggle scale,
    CPU-bound kernel writes on the machines measured; bench/RESULTS.md). Reading once wins where a read costs
    more than a local write: a network file system, a cold disk, a folder larger than the page cache.
    """
    return environ.get(READ_ONCE_ENV, "") not in ("", "0")


def spill_folder(parent: str) -> str:
    """A new folder for the one-pass build's pixels: in PARENT (TFDS' temporary folder, so a killed build's
    pixels go with it) when it is local, else in the system's temporary folder."""
    local = "://" not in parent
    if local:
        os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix="spill.", dir=parent if local else None)


def remove_spill_folder(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _gc_paused():
    """The cyclic garbage collector paused while this process builds the records of every file.

    They are dicts, lists and strings with no reference cycles, so the collector finds nothing, but a
    heap of millions of new objects triggers it over and over: at Kaggle scale it took about half the
    time of the join, the duplicates and the splits (bench/RESULTS.md). Used as a decorator too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of forked workers: they share the parent's imports (under `tfds build`, TensorFlow) instead of
    redoing them. The parent's objects are frozen first (`gc.freeze`, as Python's documentation advises
    before a fork), so a worker's collector does not walk them and copy the parent's heap page by page."""
    gc.freeze()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)
        gc.unfreeze()


def _ordered(pool: ProcessPoolExecutor, fn, tasks, what: str) -> Iterator:
    """fn(task) for each task, in order, with at most _IN_FLIGHT tasks per worker queued (bounded memory)."""
    window: collections.deque = collections.deque()
    todo = iter(tasks)
    limit = _IN_FLIGHT * pool._max_workers
    try:
        for task in todo:
            window.append(pool.submit(fn, task))
            if len(window) >= limit:
                break
        while window:
            result = window.popleft().result()
            task = next(todo, None)
            if task is not None:
                window.append(pool.submit(fn, task))
            yield result
    except BrokenProcessPool as e:
        raise WorkerDied(
            f"a worker process of the local build died while {what} ({e}); killed, or out of memory? Nothing "
            "was kept: run the build again"
        ) from None


def _read_chunk(task: tuple[int, str, list[str], str | None]) -> list[tuple[dict, int | None]]:
    """A worker's task: read, check and hash a chunk's files; with a spill folder, keep their pixels there.

    Returns (record, slot in the chunk's spill file or None) per path, in order.
    """
    index, source, paths, spill_dir = task
    out, slot = [], 0
    spill = open(os.path.join(spill_dir, f"{index:06d}.px"), "wb") if spill_dir else None
    try:
        for path in paths:
            rec, pixels = records.read_record(path, source)
            if spill is not None and pixels is not None:
                spill.write(pixels.tobytes())
                out.append((rec, slot))
                slot += 1
            else:
                out.append((rec, None))
    finally:
        if spill is not None:
            spill.close()
    return out


class LocalValidation:
    """Validates a Kaggle folder in worker processes; the results of beam_jobs.validate, in memory.

    With `spill_dir` the pixels of every valid file are kept there (`pixels_of`), so a build reads each
    file once.
    """

    @_gc_paused()
    def __init__(self, data_dir: str, workers: int | None = None, spill_dir: str | None = None):
        self.data_dir = data_dir
        self.spill_dir = spill_dir
        paths = records.list_paths(data_dir)
        self.num_listed = sum(len(p) for p in paths.values())
        rows = layout.read_label_rows(layout.join(data_dir, layout.LABELS_CSV))
        self.num_rows = len(rows)
        if spill_dir:
            os.makedirs(spill_dir, exist_ok=True)
        tasks = [(i, s, p, spill_dir) for i, (s, p) in enumerate(records.batch_paths(paths, _CHUNK))]
        progress = Progress("validate", self.num_listed)
        decoded = []
        self._slots: dict[str, tuple[int, int]] = {}  # path -> (chunk, slot) of its pixels in spill_dir
        with _pool(workers or default_workers()) as pool:
            for index, chunk in enumerate(_ordered(pool, _read_chunk, tasks, "validating the files")):
                for rec, slot in chunk:
                    decoded.append(rec)
                    if slot is not None:
                        self._slots[rec["path"]] = (index, slot)
                progress.update(len(decoded))
        self.files, self.rejected_rows = records.join_labels(decoded, rows)
        self.duplicates = records.find_duplicates(self.files)

    def summary(self) -> dict:
        return summary.summarize(self.files, self.rejected_rows, self.duplicates, self.num_rows, self.num_listed)

    @_gc_paused()
    def write_outputs(self, output_dir: str) -> dict:
        """The files beam_jobs.validate writes, from this validation."""
        doc = self.summary()
        outputs.write_validation(output_dir, self.data_dir, self.files, self.rejected_rows, self.duplicates, doc)
        return doc

    def spilled(self, chosen: list[dict]) -> SpilledExamples:
        """The (key, serialized example) pairs of CHOSEN (valid records), their pixels from the spill folder."""
        return SpilledExamples(self.spill_dir, [(f["id"], f["label"], *self._slots[f["path"]]) for f in chosen])


class SpilledExamples:
    """(key, serialized example) pairs whose pixels the validation kept in a spill folder.

    A sequence: slicing gives the pairs of a range (small to pickle: id, label, chunk and slot per
    example), iterating reads each example's pixels with one `pread` and serializes it.
    """

    def __init__(self, spill_dir: str, rows: list[tuple[str, int, int, int]]):
        self.spill_dir, self.rows = spill_dir, rows  # (id, label, chunk, slot)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> SpilledExamples:
        return SpilledExamples(self.spill_dir, self.rows[part])

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        fds = {}
        try:
            for id_, label, index, slot in self.rows:
                fd = fds.get(index)
                if fd is None:
                    fd = fds[index] = os.open(os.path.join(self.spill_dir, f"{index:06d}.px"), os.O_RDONLY)
                pixels = os.pread(fd, _SLOT, slot * _SLOT)
                if len(pixels) != _SLOT:
                    raise OSError(f"{self.spill_dir}: the pixels of {id_} are cut short; build again")
                yield id_, serialize.serialize_record(pixels, label, id_)
        finally:
            for fd in fds.values():
                os.close(fd)


class RereadExamples:
    """(key, serialized example) pairs of valid records, each file read again and checked against the pixel
    hash its validation recorded (`examples.FileChangedError` when it changed). A sequence, as SpilledExamples."""

    def __init__(self, chosen: list[dict]):
        self.chosen = chosen

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, part: slice) -> RereadExamples:
        return RereadExamples(self.chosen[part])

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for f in self.chosen:
            pixels = examples.read_pixels(f)  # FileChangedError when it no longer decodes
            examples.check_pixels_unchanged(f, pixels)
            yield f["id"], serialize.serialize_record(pixels.tobytes(), f["label"], f["id"])


@_gc_paused()
def split_generators(
    data_dir,
    checks_dir,
    validation_fraction,
    sample_fraction,
    seed,
    slides=None,
    counts=None,
    validation_dir=None,
    spill_dir=None,
    workers=None,
):
    """Returns {'train', 'validation', 'test'}: a SortedSplit of (key, serialized tf.train.Example) each.

    `counts` (a dict) receives the number of examples each generator yielded. `validation_dir`: a
    beam_jobs.validate output to reuse instead of validating (pcam_tfds.validated checks it first).
    `spill_dir`: where the one-pass build keeps the pixels between validation and writing (the caller
    removes it once the generators are done); without it the files are read again. `workers`: processes
    (default: one per core).
    """
    workers = workers or default_workers()
    start = time.monotonic()
    check = None
    if validation_dir:
        files = validated.load_records(validation_dir, data_dir)
        doc = validated.copy_outputs(validation_dir, checks_dir)
        verb = f"reused the validation in {validation_dir} of"
    else:
        check = LocalValidation(data_dir, workers, spill_dir)
        files, doc = check.files, check.write_outputs(checks_dir)
        verb = "validated"
    print_line(
        f"{verb} {doc['total']} files in {time.monotonic() - start:.1f} s: {doc['valid']} valid, "
        f"{doc['rejected']} rejected {doc['rejected_by_reason']}; listed in {checks_dir}"
    )
    if len(files) != doc["total"]:
        raise summary.AccountingError(f"{len(files)} file records but summary.json counts {doc['total']} files")
    valid = [f for f in files if examples.is_valid(f)]
    for source in (layout.TRAIN, layout.TEST):
        if not any(f["source"] == source for f in valid):
            listed = sum(f["source"] == source for f in files)
            raise ValueError(
                f"{os.path.join(data_dir, source)} has no valid patch file ({listed} files listed, all rejected: "
                f"see {os.path.join(checks_dir, outputs.REJECTED)}); the dataset would have an empty split"
            )
    assignment = splits.assign_splits(
        [examples.split_key(f) for f in valid if examples.is_labelled(f)],
        validation_fraction=validation_fraction,
        seed=seed,
        sample_fraction=sample_fraction,
        slides=slides,
    )
    by_split = collections.defaultdict(list)
    for f in valid:
        by_split[examples.split_of(f, assignment)].append(f)
    if counts is not None:
        counts[splits.UNUSED] = len(by_split[splits.UNUSED])
    names = (splits.TRAIN, splits.VALIDATION, layout.TEST)
    out = {}
    for name in names:
        chosen = in_writer_order(by_split[name], name)
        source = check.spilled(chosen) if check is not None and spill_dir else RereadExamples(chosen)
        size = sum(serialize.serialized_size(f["label"], f["id"]) for f in chosen)
        out[name] = SortedSplit(source, len(chosen), size, name, counts=counts, workers=workers)
    return out


def in_writer_order(chosen: list[dict], split: str) -> list[dict]:
    """CHOSEN in the order TFDS' Writer puts a split's examples in its shards: by the MD5 of the split's name
    (the writer's hash salt) and the key, the example's id (tensorflow_datasets.core.hashing.Hasher)."""
    from tensorflow_datasets.core import hashing

    hasher = hashing.Hasher(split)
    return sorted(chosen, key=lambda f: hasher.hash_key(f["id"]))


class SortedSplit:
    """One split's (key, serialized example) pairs, already in the order TFDS' Writer would write them.

    `source` is a sequence of the pairs (a list, SpilledExamples, RereadExamples): `source[a:b]` the pairs
    of a range, picklable, so that `shards` can hand each shard's range to a worker process. `num_examples`
    and `total_size` (the sum of the serialized sizes) are known before the first pair is read, so
    `builder_base.write_sorted_split` can lay out TFDS' shards and write them without the Writer's shuffle
    buckets (a second copy of the whole split on disk, written and read back) or its sort. `counts` (a dict)
    receives the number of examples yielded or written under the split's name.
    """

    def __init__(self, source, num_examples: int, total_size: int, hash_salt: str, counts=None, workers: int = 1):
        self.source, self.num_examples, self.total_size, self.hash_salt = source, num_examples, total_size, hash_salt
        self.counts, self.workers = counts, workers

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for pair in self.source:
            self.count(1)
            yield pair

    def count(self, n: int) -> None:
        if self.counts is not None:
            self.counts[self.hash_salt] = self.counts.get(self.hash_salt, 0) + n

    def shards(self, write, ranges: list[tuple[object, int, int]]) -> Iterator:
        """write(target, source[start:stop]) for each (target, start, stop), in order: in `workers` forked
        processes (each writes its own shards; at most a few ranges queued per worker) or in this one.

        A progress line every 10 s counts the examples of the ranges done.
        """
        progress = Progress(f"{self.hash_salt} examples", self.num_examples, unit="examples")
        tasks = ((write, target, self.source[start:stop]) for target, start, stop in ranges)
        with contextlib.ExitStack() as stack:
            if self.workers > 1 and len(ranges) > 1:
                pool = stack.enter_context(_pool(min(self.workers, len(ranges))))
                results = _ordered(pool, _apply, tasks, f"writing the {self.hash_salt} shards")
            else:
                results = (_apply(task) for task in tasks)
            for (_, _, stop), result in zip(ranges, results):
                progress.update(stop)
                yield result


def _apply(task):
    write, target, part = task
    return write(target, part)
