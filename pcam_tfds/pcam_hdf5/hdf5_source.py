"""Reading the official PCam HDF5 files for the `pcam_hdf5` dataset, which keeps their own splits.

    tfds build pcam_tfds/pcam_hdf5 --manual_dir=PCAM_H5_DIR --data_dir=TFDS_DIR

PCAM_H5_DIR holds the six files of https://github.com/basveeling/pcam, unzipped (`gunzip *.gz`):
`camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`. Each `_x` file has a dataset `x` of shape
(N, 96, 96, 3) uint8, each `_y` file a dataset `y` of N labels (stored as (N, 1, 1, 1) uint8). The
official splits are kept: train 262,144, validation 32,768 and test 32,768 patches, all labelled (PCam's
test labels are public, unlike Kaggle's), each split from different slides.

A file that is missing, gzipped, or of the wrong shape or dtype stops the build with its name: the
HDF5 layout is all or nothing. A patch whose label is not 0 or 1 is rejected, counted and listed in
`validate/rejected.csv`; `validate/summary.json` gives the counts per split, which the build checks
against what was written. Ids are `<split>_<index>` (e.g. `valid_000017`), the row in the file.
HDF5 is read with h5py from a local or mounted path (every Beam worker must see it).
"""

from __future__ import annotations

import json
import os

import numpy as np

from pcam_tfds.core import layout, splits

FILE_SPLITS = {"train": splits.TRAIN, "valid": splits.VALIDATION, "test": layout.TEST}  # file name -> TFDS split
CHUNK = 1024  # patches read per h5py slice (27 MiB)
BAD_LABEL = "bad_label"


def file_path(manual_dir: str, name: str, xy: str) -> str:
    return os.path.join(manual_dir, f"camelyonpatch_level_2_split_{name}_{xy}.h5")


def _open(path: str):
    import h5py

    if not os.path.exists(path):
        hint = " (found the .gz: gunzip it first)" if os.path.exists(path + ".gz") else ""
        raise FileNotFoundError(
            f"{path}: no such file{hint}; the PCam HDF5 layout is "
            "camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5"
        )
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file ({e})") from e


def check_split(manual_dir: str, name: str) -> int:
    """The number of patches of one split, after checking both of its files' shapes and dtypes."""
    x_path, y_path = file_path(manual_dir, name, "x"), file_path(manual_dir, name, "y")
    with _open(x_path) as fx, _open(y_path) as fy:
        for path, f, key in ((x_path, fx, "x"), (y_path, fy, "y")):
            if key not in f:
                raise ValueError(f"{path}: no dataset {key!r} (has {sorted(f.keys())})")
        x, y = fx["x"], fy["y"]
        if x.shape[1:] != (96, 96, 3) or x.dtype != np.uint8:
            raise ValueError(f"{x_path}: dataset 'x' is {x.shape} {x.dtype}, expected (N, 96, 96, 3) uint8")
        if y.shape[:1] != x.shape[:1] or int(np.prod(y.shape[1:], dtype=np.int64)) != 1:
            raise ValueError(
                f"{y_path}: dataset 'y' is {y.shape}, expected one label per patch of {x_path} ({x.shape[0]}, 1, 1, 1)"
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{y_path}: labels are {y.dtype}, expected integers")
        return int(x.shape[0])


def read_chunk(manual_dir: str, name: str, start: int, stop: int) -> list[tuple[str, np.ndarray, int]]:
    """[(id, image, label)] of rows start..stop-1 of one split, in row order."""
    with _open(file_path(manual_dir, name, "x")) as fx, _open(file_path(manual_dir, name, "y")) as fy:
        images = fx["x"][start:stop]
        labels = np.asarray(fy["y"][start:stop]).reshape(-1)
    return [(f"{name}_{start + i:06d}", images[i], int(labels[i])) for i in range(stop - start)]


def chunks(sizes: dict[str, int]) -> list[tuple[str, int, int]]:
    return [(name, s, min(s + CHUNK, n)) for name, n in sizes.items() for s in range(0, n, CHUNK)]


def scan_labels(manual_dir: str, sizes: dict[str, int]) -> list[dict]:
    """The rejected patches (label not 0 or 1) of every split; labels are small, read whole."""
    rejected = []
    for name in sizes:
        with _open(file_path(manual_dir, name, "y")) as fy:
            labels = np.asarray(fy["y"][:]).reshape(-1)
        for i in np.flatnonzero((labels != 0) & (labels != 1)):
            rejected.append(
                {
                    "source": name,
                    "id": f"{name}_{i:06d}",
                    "path": file_path(manual_dir, name, "y"),
                    "reason": BAD_LABEL,
                    "detail": f"label {int(labels[i])}, expected 0 or 1",
                }
            )
    return rejected


def write_validation(checks_dir: str, manual_dir: str, sizes: dict[str, int], rejected: list[dict]) -> dict:
    """validate/summary.json, rejected.csv and report.md for the HDF5 source; returns the summary."""
    from pcam_tfds.core import outputs as validate

    os.makedirs(checks_dir, exist_ok=True)
    by_reason: dict[str, int] = {}
    bad_per_split = dict.fromkeys(sizes, 0)
    for r in rejected:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
        bad_per_split[r["source"]] += 1
    total = sum(sizes.values())
    summary = {
        "source": "hdf5",
        "total": total,
        "valid": total - len(rejected),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "by_split": {
            FILE_SPLITS[n]: {"total": sizes[n], "valid": sizes[n] - bad_per_split[n], "rejected": bad_per_split[n]}
            for n in sizes
        },
    }
    lines = [",".join(validate.REJECTED_HEADER)]
    lines += [validate.csv_line(["patch", r["source"], r["id"], r["path"], r["reason"], r["detail"]]) for r in rejected]
    validate.write_lines(os.path.join(checks_dir, "rejected.csv"), lines)
    validate.write_text(os.path.join(checks_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
    rows = "\n".join(
        f"| {s} | {v['total']:,} | {v['valid']:,} | {v['rejected']:,} |" for s, v in summary["by_split"].items()
    )
    validate.write_text(
        os.path.join(checks_dir, "report.md"),
        f"# PCam HDF5 validation\n\nSource: `{manual_dir}`\n\n| split | patches | valid | rejected |\n"
        f"| --- | ---: | ---: | ---: |\n{rows}\n\nRejected patches by reason: "
        f"{summary['rejected_by_reason'] or 'none'} (listed in rejected.csv).\n",
    )
    return summary


def prepare(manual_dir: str, checks_dir: str) -> tuple[dict[str, int], dict]:
    """Checks the six files, writes the validation outputs; returns ({file split: size}, summary)."""
    sizes = {name: check_split(manual_dir, name) for name in FILE_SPLITS}
    summary = write_validation(checks_dir, manual_dir, sizes, scan_labels(manual_dir, sizes))
    return sizes, summary


def _examples_of_chunk(chunk: tuple[str, int, int], manual_dir: str):
    name, start, stop = chunk
    for id_, image, label in read_chunk(manual_dir, name, start, stop):
        if label in (0, 1):
            yield id_, {"image": image, "label": label, "id": id_}


def split_examples(manual_dir: str, name: str, size: int, counts: dict | None = None):
    """(id, example) of the valid patches of file split NAME, chunk by chunk; counted into `counts`."""
    split = FILE_SPLITS[name]
    for chunk in chunks({name: size}):
        for key, example in _examples_of_chunk(chunk, manual_dir):
            if counts is not None:
                counts[split] = counts.get(split, 0) + 1
            yield key, example


def read_split(pbegin, manual_dir: str, name: str, size: int, counter_key: tuple[str, str]):
    """The same on Beam (PBegin -> (id, example)): each chunk of rows is one element, read on a worker.

    Wrap it with `beam.ptransform_fn` to get the PTransform TFDS applies; the Beam counter
    `counter_key` (namespace, name) counts the examples.
    """
    import apache_beam as beam
    from apache_beam.metrics import Metrics

    counter = Metrics.counter(*counter_key)

    def examples(chunk):
        for key, example in _examples_of_chunk(chunk, manual_dir):
            counter.inc()
            yield key, example

    return (
        pbegin
        | "Chunks" >> beam.Create(chunks({name: size}))
        | "Reshuffle" >> beam.Reshuffle()  # spread the chunks over workers (Create may keep them on one)
        | "Read" >> beam.FlatMap(examples)
    )
