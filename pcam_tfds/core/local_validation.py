"""Validating a Kaggle folder on one machine, in worker processes: what `beam_jobs.validate` computes, in memory.

    check = LocalValidation(KAGGLE_DIR)          # one worker process per core
    check.write_outputs(CHECKS)                  # manifest, rejected.csv, duplicates.csv, summary.json

The worker that reads a file decodes it, hashes the pixels and takes the channel moments, all from that one
read (`batch_read.read_columns`), and hands its chunk back as an Arrow batch; this process joins the labels,
groups the duplicates and counts on those columns (`file_table`), with no Python object per file. With
`spill_dir` (the one-pass build, PCAM_READ_ONCE=1, `read_once`) the worker also appends the pixels of each
valid file to its chunk's spill file (`spill_dir/NNNNNN.px`, fixed-size slots), and `SpilledExamples`
serializes them from there with one `pread` each. Both `pcam-validate` (its default on one
machine) and the local build (`pcam_tfds.local_steps`) use it, so it lives in the core: Beam-free and
TensorFlow-free. The pool helpers (`pool`, `ordered`, `WorkerDied`) are the build's shard writers' too.

Worker processes are forked, so they do not re-import what the parent has (under `tfds build`, TensorFlow and
TFDS). A worker that dies raises `WorkerDied` in the parent, naming what it was doing.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import pyarrow as pa
import pyarrow.compute as pc

from pcam_tfds.core import batch_read, file_table, layout, outputs, serialize, summary
from pcam_tfds.core.progress import Progress

_CHUNK = 2048  # files per task
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

    Reading again is the default: on one machine the second read comes from the page cache, which costs
    less than writing the pixels out and reading them back. Reading once wins where a read costs more than
    a local write: a network file system, a cold disk, a folder larger than the page cache.
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
def gc_paused():
    """The cyclic garbage collector paused while this process builds the records of every file.

    They are dicts, lists and strings with no reference cycles, so the collector finds nothing, but a
    heap of millions of new objects triggers it over and over. Used as a decorator too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of forked workers: they share the parent's imports (under `tfds build`, TensorFlow) instead of
    redoing them. The parent's objects are frozen first (`gc.freeze`, as Python's documentation advises
    before a fork), so a worker's collector does not walk them and copy the parent's heap page by page."""
    gc.freeze()
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    try:
        yield executor
    finally:
        executor.shutdown(cancel_futures=True)
        gc.unfreeze()


def _died(e: BrokenProcessPool, what: str) -> WorkerDied:
    return WorkerDied(
        f"a worker process of the local build died while {what} ({e}); killed, or out of memory? Nothing "
        "was kept: run the build again"
    )


def ordered(pool: ProcessPoolExecutor, fn, tasks, what: str) -> Iterator:
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
        raise _died(e, what) from None


def result(future, what: str):
    """FUTURE's result, or WorkerDied naming WHAT its process was doing when it died."""
    try:
        return future.result()
    except BrokenProcessPool as e:
        raise _died(e, what) from None


def _read_chunk(task: tuple[int, str, list[str], str | None]) -> pa.RecordBatch:
    """A worker's task: read, check and hash a chunk's files (`batch_read.read_columns`), as an Arrow batch; with
    a spill folder, append the pixels of each valid file to the chunk's spill file, in order (its slot is its
    rank among the chunk's valid files)."""
    index, source, paths, spill_dir = task
    if not spill_dir:
        return batch_read.read_columns(paths, source).arrow()
    with open(os.path.join(spill_dir, f"{index:06d}.px"), "wb") as spill:
        return batch_read.read_columns(paths, source, keep=lambda i, pixels: spill.write(pixels)).arrow()


class LocalValidation:
    """Validates a Kaggle folder in worker processes; the results of beam_jobs.validate, in memory.

    With `spill_dir` the pixels of every valid file are kept there (`spilled`), so a build reads each
    file once.
    """

    @gc_paused()
    def __init__(self, manual_dir: str, workers: int | None = None, spill_dir: str | None = None):
        self.manual_dir = manual_dir
        self.spill_dir = spill_dir
        labels_csv = layout.join(manual_dir, layout.LABELS_CSV)
        layout.check_labels_header(labels_csv)  # a wrong header fails before any file is read
        if spill_dir:
            os.makedirs(spill_dir, exist_ok=True)
        progress = Progress("validate", None)  # its total once the folders are listed
        self.num_listed = 0

        def tasks():  # listed while the workers read: a task each time one is taken
            for i, (source, paths) in enumerate(layout.list_batches(manual_dir, _CHUNK)):
                self.num_listed += len(paths)
                yield i, source, paths, spill_dir
            progress.total = self.num_listed

        chunks: list[pa.RecordBatch] = []
        done = 0
        # The label CSV is parsed in a thread of this process while the workers read the files, not before. The
        # thread starts once the first chunk is back, so that the workers are forked before it exists.
        label_rows = None
        with pool(workers or default_workers()) as executor, ThreadPoolExecutor(1) as labels:
            for cols in ordered(executor, _read_chunk, tasks(), "validating the files"):
                if label_rows is None:
                    label_rows = labels.submit(layout.read_label_columns, labels_csv)
                chunks.append(cols)
                done += cols.num_rows
                progress.update(done)
            rows = label_rows.result() if label_rows is not None else layout.read_label_columns(labels_csv)
        self.num_rows = len(rows)
        self.table, self.rejected_rows = file_table.join_columns(chunks, rows)
        # path -> (chunk, slot) of its pixels in spill_dir: the valid files of each chunk, in order
        self._slots = {}
        if spill_dir:
            for index, cols in enumerate(chunks):
                valid = cols.filter(pc.is_valid(cols["pixel_hash"]))["path"].to_pylist()
                self._slots.update((p, (index, slot)) for slot, p in enumerate(valid))

    @functools.cached_property
    def duplicates(self) -> list[dict]:
        """The duplicate groups (records.find_duplicates')."""
        return self.table.duplicates()

    def summary(self) -> dict:
        counts = self.table.counts() + list(collections.Counter(map(summary.row_key, self.rejected_rows)).items())
        facts = [summary.duplicate_fact(g) for g in self.duplicates]
        return summary.build_summary(counts, self.num_rows, facts, self.num_listed)

    @gc_paused()
    def write_outputs(self, output_dir: str, doc: dict | None = None) -> dict:
        """The files beam_jobs.validate writes, from this validation (and its `summary()`, when already made).

        The manifest is made and written by a thread while this one groups the duplicates and writes the rest:
        both are mostly Arrow's work, which runs without the GIL.
        """
        os.makedirs(output_dir, exist_ok=True)
        with ThreadPoolExecutor(1) as writer:
            manifest = writer.submit(lambda: outputs.write_manifest(output_dir, self.table.manifest()))
            doc = self.summary() if doc is None else doc
            outputs.write_validation(
                output_dir, self.manual_dir, self.table.rejected(), self.rejected_rows, self.duplicates, doc
            )
            manifest.result()
        return doc

    def write_outputs_apart(self, output_dir: str, doc: dict):
        """`write_outputs` in a forked process, started now; returns a function that waits for it and raises
        WorkerDied if it failed. Call it while this process has no other thread (a fork copies the locks a
        thread may hold); the process needs no pool, so it leaves none behind."""
        process = multiprocessing.get_context("fork").Process(
            target=self.write_outputs, args=(output_dir, doc), name="pcam-write-outputs", daemon=True
        )
        process.start()

        def wait() -> None:
            process.join()
            if process.exitcode != 0:
                raise WorkerDied(
                    f"the process writing the validation outputs into {output_dir} ended with exit code "
                    f"{process.exitcode} (its error is above); nothing was kept: run the build again"
                )

        return wait

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
