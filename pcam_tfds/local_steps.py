"""The single-machine executor of the `pcam` builder: the same validation, join and splits, without Beam.

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full

On one machine Beam's DirectRunner moves every serialized example through its
shuffle in memory, which costs several times the memory and time of this path,
and in multi_processing mode it dropped examples (bench/RESULTS.md). Here a thread
pool runs the steps of `pcam_tfds.core` that `beam_jobs` distributes (`records`:
read, join, duplicates; `summary`; `outputs`; `examples`: routing and the example
dict), the same `assign_splits` decides membership, the same validation outputs are
written, and TFDS' ordinary writer, which spills its shuffle to disk, writes the
shards. The dataset is identical to the Beam build's (tests/test_executors.py).
Nothing here imports Beam. Reading the files and writing each split log a progress line
(files/s, time left) at least every 10 s, at INFO, which `tfds build` shows.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from pcam_tfds import validated
from pcam_tfds.core import examples, layout, outputs, records, splits, summary
from pcam_tfds.core.progress import Progress, print_line

_CHUNK = 512  # files per task
_READ_THREADS, _READ_AHEAD = 4, 256  # pixel reads in flight while the writer works


class LocalValidation:
    """Validates a Kaggle folder with a thread pool; the results of beam_jobs.validate, in memory."""

    def __init__(self, data_dir: str, workers: int | None = None):
        self.data_dir = data_dir
        paths = records.list_paths(data_dir)
        self.num_listed = sum(len(p) for p in paths.values())
        rows = layout.read_label_rows(layout.join(data_dir, layout.LABELS_CSV))
        self.num_rows = len(rows)
        # Threads, not processes: reads, hashing and numpy release the GIL, and worker processes
        # would each re-import the caller (TFDS and TensorFlow under `tfds build`), which cost more
        # than they saved (bench/RESULTS.md).
        progress = Progress("validate", self.num_listed)
        decoded = []
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            for batch in pool.map(records.read_batch, records.batch_paths(paths, _CHUNK)):
                decoded += batch
                progress.update(len(decoded))
        self.files, self.rejected_rows = records.join_labels(decoded, rows)
        self.duplicates = records.find_duplicates(self.files)

    def summary(self) -> dict:
        return summary.summarize(self.files, self.rejected_rows, self.duplicates, self.num_rows, self.num_listed)

    def write_outputs(self, output_dir: str) -> dict:
        """The files beam_jobs.validate writes, from this validation."""
        doc = self.summary()
        outputs.write_validation(output_dir, self.data_dir, self.files, self.rejected_rows, self.duplicates, doc)
        return doc


def split_generators(
    data_dir, checks_dir, validation_fraction, sample_fraction, seed, slides=None, counts=None, validation_dir=None
):
    """Returns {'train', 'validation', 'test'}: generators of (key, example).

    `counts` (a dict) receives the number of examples each generator yielded. `validation_dir`: a
    beam_jobs.validate output to reuse instead of validating (pcam_tfds.validated checks it first).
    """
    start = time.monotonic()
    if validation_dir:
        files = validated.load_records(validation_dir, data_dir)
        doc = validated.copy_outputs(validation_dir, checks_dir)
        verb = f"reused the validation in {validation_dir} of"
    else:
        check = LocalValidation(data_dir)
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
    return {name: _examples(by_split[name], name, counts) for name in names}


def _examples(chosen: list[dict], split: str, counts: dict | None) -> Iterator[tuple[str, dict]]:
    # Reads run ahead in threads (file reads release the GIL) while TFDS serializes and writes.
    progress, done = Progress(f"{split} examples", len(chosen), unit="examples"), 0
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        window: collections.deque = collections.deque()
        todo = iter(chosen)
        for r in itertools.islice(todo, _READ_AHEAD):
            window.append((r, pool.submit(examples.read_pixels, r)))
        while window:
            r, future = window.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                window.append((nxt, pool.submit(examples.read_pixels, nxt)))
            # The file passed validation moments ago; failing to read it now is an error, not a rejection.
            pixels = future.result()
            if counts is not None:
                counts[split] = counts.get(split, 0) + 1
            yield examples.example(r, pixels)
            done += 1
            progress.update(done)
