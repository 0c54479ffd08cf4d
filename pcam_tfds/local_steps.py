"""The single-machine executor of the `pcam` builder: the same validation, join and splits, without Beam.

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full

On one machine Beam's DirectRunner moves every serialized example through its shuffle in memory,
which costs several times the memory and time of this path, and in multi_processing mode it dropped
examples (bench/RESULTS.md). Here a pool of worker processes (one per core) validates the folder
(`pcam_tfds.core.local_validation`: the steps of `pcam_tfds.core` that `beam_jobs` distributes), the same
`assign_splits` decides membership and the same validation outputs are written.

The test split needs no drawing, so its shards are written first, while a thread (`Drawing`) draws train and
validation (they need every pixel hash: duplicates stay on one side) and a process forked before it writes the
validation's outputs; `settle` waits for both when a build fails. Each split's shards are written by the
workers: each reads its shard's files again, checks their pixels against the hash validation recorded
(`RereadExamples`; so too when a `beam_jobs.validate` run is reused) and serializes the records
(`pcam_tfds.core.serialize`). With a spill folder (PCAM_READ_ONCE=1, `local_validation.read_once`) each file
is read only once: the validation keeps the pixels and the writers take them from there
(`local_validation.SpilledExamples`). Either way each split is a `SortedSplit`: its (key, serialized
`tf.train.Example`) pairs in the order TFDS' Writer puts them in its shards (the key's hash), never depending
on the number of workers, with their count and total size known up front, so that
`builder_base.write_sorted_split` knows every shard's range of examples before the first is read and the
workers write the shards in parallel, as TFDS' Writer lays them out.

A worker that dies fails the build (`local_validation.WorkerDied`) inside TFDS' temporary folder, so no
dataset is left. Nothing here imports Beam. Reading the files and writing each split log a progress line
(files/s, time left) at least every 10 s.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import threading
import time
from collections.abc import Iterator

import numpy as np

from pcam_tfds.core import (
    batch_read,
    examples,
    layout,
    local_validation,
    outputs,
    serialize,
    splits,
    summary,
    validated,
)
from pcam_tfds.core.progress import Progress, print_line


class RereadExamples:
    """(key, serialized example) pairs of valid records, each file read again and checked against the pixel
    hash its validation recorded (`examples.FileChangedError` when it changed). A sequence, as local_validation.SpilledExamples."""

    def __init__(self, chosen: list[dict]):
        self.chosen = chosen

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, part: slice) -> RereadExamples:
        return RereadExamples(self.chosen[part])

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        # A group of files at a time through the validation's kernel (batch_read): read into its rows, decoded,
        # hashed; each record serialized from its row while it is there.
        for start in range(0, len(self.chosen), batch_read.GROUP):
            part = self.chosen[start : start + batch_read.GROUP]
            records = [None] * len(part)

            def keep(i, pixels, part=part, records=records):
                records[i] = serialize.serialize_record(pixels, part[i]["label"], part[i]["id"])

            cols = batch_read.read_columns([f["path"] for f in part], part[0]["source"], keep=keep, moments=False)
            for i, f in enumerate(part):
                examples.check_decoded(f, cols.reason[i], cols.detail[i])  # FileChangedError: it no longer decodes
                examples.check_hash_unchanged(f, cols.pixel_hash[i])
                yield f["id"], records[i]


@local_validation.gc_paused()
def split_generators(
    manual_dir,
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
    beam_jobs.validate output to reuse instead of validating (pcam_tfds.core.validated checks it first).
    `spill_dir`: where the one-pass build keeps the pixels between validation and writing (the caller
    removes it once the generators are done); without it the files are read again. `workers`: processes
    (default: one per core).
    """
    workers = workers or local_validation.default_workers()
    start = time.monotonic()
    check, outputs_written = None, None
    if validation_dir:
        files = validated.load_records(validation_dir, manual_dir)
        by_source = collections.defaultdict(list)
        for f in files:
            if examples.is_valid(f):
                by_source[f["source"]].append(f)
        valid_of = {source: functools.partial(list, by_source[source]) for source in layout.SOURCES}
        num_files, doc = len(files), validated.copy_outputs(validation_dir, checks_dir)
        verb = f"reused the validation in {validation_dir} of"
    else:
        check = local_validation.LocalValidation(manual_dir, workers, spill_dir)
        # What routing and writing use of each valid file, not its whole record (at Kaggle scale 0.45 s to make
        # against 1.6 s, and half the time to pickle to the shard writers), one source at a time: the train
        # files' only once the test split is being written.
        valid_of = {source: functools.partial(check.table.valid_records, source) for source in layout.SOURCES}
        num_files, doc = len(check.table), check.summary()
        # The outputs (manifest, CSVs, summary) are written by a forked process meanwhile (no thread exists yet).
        outputs_written = check.write_outputs_apart(checks_dir, doc)
        verb = "validated"
    print_line(
        f"{verb} {doc['total']} files in {time.monotonic() - start:.1f} s: {doc['valid']} valid, "
        f"{doc['rejected']} rejected {doc['rejected_by_reason']}; listed in {checks_dir}"
    )
    try:
        if num_files != doc["total"]:
            raise summary.AccountingError(f"{num_files} file records but summary.json counts {doc['total']} files")
        for source in (layout.TRAIN, layout.TEST):
            if not doc["by_source"].get(source, {}).get("valid", 0):
                listed = doc["by_source"].get(source, {}).get("total", 0)
                raise ValueError(
                    f"{os.path.join(manual_dir, source)} has no valid patch file ({listed} files listed, all "
                    f"rejected: see {os.path.join(checks_dir, outputs.REJECTED)}); the dataset would have an empty split"
                )
    except BaseException:
        if outputs_written is not None:  # the outputs the message points to, written before it is raised
            with contextlib.suppress(Exception):
                outputs_written()
        raise

    def split(name: str, chosen: list[dict]) -> tuple:
        chosen = in_writer_order(chosen, name)
        source = check.spilled(chosen) if check is not None and spill_dir else RereadExamples(chosen)
        return source, len(chosen), serialize.total_serialized_size((f["label"], f["id"]) for f in chosen)

    @local_validation.gc_paused()
    def plan() -> dict[str, tuple]:
        """The train and validation splits drawn while the test split, which needs no drawing, is written; then the
        validation's outputs waited for."""
        train_files = valid_of[layout.TRAIN]()
        assignment = splits.assign_splits(
            [examples.split_key(f) for f in train_files],
            validation_fraction=validation_fraction,
            seed=seed,
            sample_fraction=sample_fraction,
            slides=slides,
        )
        by_split = collections.defaultdict(list)
        for f in train_files:
            by_split[assignment[f["id"]]].append(f)
        if counts is not None:
            counts[splits.UNUSED] = len(by_split[splits.UNUSED])
        drawn = {name: split(name, by_split[name]) for name in (splits.TRAIN, splits.VALIDATION)}
        if outputs_written is not None:
            outputs_written()
        return drawn

    drawing = Drawing(plan, apart=outputs_written)
    try:
        test_files = valid_of[layout.TEST]()
        test = SortedSplit(*split(layout.TEST, test_files), layout.TEST, counts=counts, workers=workers)
    except BaseException:
        drawing.settle()
        raise
    test.on_writing, test.drawing = drawing.start, drawing
    out = {name: SortedSplit.drawn(drawing, name, counts, workers) for name in (splits.TRAIN, splits.VALIDATION)}
    return {**out, layout.TEST: test}


class Drawing:
    """PLAN (a function) run once, in a thread that `start` starts, or here when its result is asked first.

    The local build draws the train and validation splits while its workers write the test split: the thread
    starts once the test split's writers are forked (SortedSplit.on_writing), so that no fork happens while it
    runs, and is joined before the next split's writers are forked."""

    def __init__(self, plan, apart=None):
        self.plan, self.thread, self.value, self.error = plan, None, None, None
        self.apart = apart  # what else runs meanwhile, as a function that waits for it (the outputs' process)
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="pcam-draw-splits", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        try:
            self.value = self.plan()
        except BaseException as e:  # raised where the result is asked for
            self.error = e

    def result(self):
        self.start()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.value

    def settle(self) -> None:
        """Waits for whatever was started (the thread, the process apart), raising nothing: once a build has
        failed, nothing of it may go on writing into the folder TFDS removes."""
        with self.lock:
            thread = self.thread
        if thread is not None:
            thread.join()
        if self.apart is not None:
            with contextlib.suppress(Exception):
                self.apart()


def settle(generators: dict) -> None:
    """`Drawing.settle` of the splits of `split_generators` (the builder calls it once writing has ended, or
    failed)."""
    for split in generators.values():
        if isinstance(split, SortedSplit) and split.drawing is not None:
            split.drawing.settle()


def in_writer_order(chosen: list[dict], split: str) -> list[dict]:
    """CHOSEN in the order TFDS' Writer puts a split's examples in its shards: by the MD5 of the split's name
    (the writer's hash salt) and the key, the example's id (tensorflow_datasets.core.hashing.Hasher)."""
    digest = serialize.key_digester(split)
    digests = np.array([digest(f["id"]) for f in chosen], dtype="S16")  # big-endian: sorted as the integers
    return [chosen[i] for i in np.argsort(digests, kind="stable").tolist()]


class SortedSplit:
    """One split's (key, serialized example) pairs, already in the order TFDS' Writer would write them.

    `source` is a sequence of the pairs (a list, local_validation.SpilledExamples, RereadExamples): `source[a:b]` the pairs
    of a range, picklable, so that `shards` can hand each shard's range to a worker process. `num_examples`
    and `total_size` (the sum of the serialized sizes) are known before the first pair is read, so
    `builder_base.write_sorted_split` can lay out TFDS' shards and write them without the Writer's shuffle
    buckets (a second copy of the whole split on disk, written and read back) or its sort. `counts` (a dict)
    receives the number of examples yielded or written under the split's name.
    """

    def __init__(self, source, num_examples: int, total_size: int, hash_salt: str, counts=None, workers: int = 1):
        self._pairs = (source, num_examples, total_size)  # None: drawn later, by `drawing`
        self.hash_salt, self.counts, self.workers = hash_salt, counts, workers
        self.drawing: Drawing | None = None  # what runs beside the writing (`settle` waits for it)
        self.on_writing = None  # called once the first shard is back (this split's writers are forked)

    @classmethod
    def drawn(cls, drawing: Drawing, name: str, counts, workers: int) -> SortedSplit:
        """The split NAME of what DRAWING (a Drawing) returns: {name: (source, num_examples, total_size)}."""
        split = cls(None, 0, 0, name, counts, workers)
        split._pairs, split.drawing = None, drawing
        return split

    def _resolved(self) -> tuple:
        if self._pairs is None:
            self._pairs = self.drawing.result()[self.hash_salt]
        return self._pairs

    @property
    def waits(self) -> bool:
        """Whether this split is still being drawn (the other splits are best written first)."""
        return self._pairs is None

    source = property(lambda self: self._resolved()[0])
    num_examples = property(lambda self: self._resolved()[1])
    total_size = property(lambda self: self._resolved()[2])

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
        on_writing, self.on_writing = self.on_writing, None
        with contextlib.ExitStack() as stack:
            if self.workers > 1 and len(ranges) > 1:
                pool = stack.enter_context(local_validation.pool(min(self.workers, len(ranges))))
                results = local_validation.ordered(pool, _apply, tasks, f"writing the {self.hash_salt} shards")
            else:
                results = (_apply(task) for task in tasks)
            for (_, _, stop), result in zip(ranges, results):
                if on_writing is not None:  # the first shard is back: the writers, if any, are forked
                    on_writing()
                    on_writing = None
                progress.update(stop)
                yield result


def _apply(task):
    write, target, part = task
    return write(target, part)
