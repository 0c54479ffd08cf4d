"""The evaluation's CSV files: predictions (written, and read back by compare), a labels CSV given by the user,
and a run's training history.

    write_predictions(model_dir / run_folder.VAL_PREDICTIONS, ids, labels, scores)   # id,label,probability
    ids, labels, scores = read_predictions(path)
    truth = read_labels_csv("SAMPLE/test_labels.csv")                             # {id: 0 or 1}
    history = read_history(model_dir / run_folder.HISTORY_CSV)                      # {column: values by epoch}

Errors in a file the user gave name the file, the line and the problem (trainer.errors.UsageError: one line,
exit status 2 in a command).
"""

from __future__ import annotations

import csv

import numpy as np
from etils import epath

from pcam_tfds.core.folder_lock import atomic_path
from trainer import errors

PREDICTION_COLUMNS = ("id", "label", "probability")


def write_predictions(path, ids, labels, scores) -> None:
    """id,label,probability rows, the probability to 6 decimals; written beside `path` and renamed over it."""
    with atomic_path(path) as tmp, tmp.open("w") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICTION_COLUMNS)
        for i, y, p in zip(ids, np.asarray(labels).ravel(), np.asarray(scores).ravel()):
            writer.writerow([i, int(y), f"{float(p):.6f}"])


def read_predictions(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, labels, probabilities) of a file that write_predictions wrote."""
    ids, labels, scores = [], [], []
    with epath.Path(path).open() as f:
        reader = csv.DictReader(f)
        missing = set(PREDICTION_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise errors.UsageError(f"{path}: no column {', '.join(sorted(missing))} (expected id,label,probability)")
        for row in reader:
            ids.append(row["id"])
            labels.append(int(row["label"]))
            scores.append(float(row["probability"]))
    return ids, np.asarray(labels), np.asarray(scores)


def read_labels_csv(path) -> dict[str, int]:
    """{id: label} of an id,label CSV (a header, then one row per patch, labels 0 or 1; other columns ignored).

    A missing file, a header without id or label, an empty id, a label other than 0 or 1, an id given twice and
    a file without rows are errors that name the file (and the line).
    """
    try:
        f = epath.Path(path).open()
    except FileNotFoundError:
        raise errors.MissingInput(f"{path}: no such labels file") from None
    labels: dict[str, int] = {}
    first_line: dict[str, int] = {}
    with f:
        reader = csv.DictReader(f)
        # A byte-order mark (spreadsheets write one) would otherwise stick to the first column's name.
        columns = [n.strip().lstrip("\ufeff") for n in reader.fieldnames or ()]
        if {"id", "label"} - set(columns):
            raise errors.UsageError(
                f"{path}: expected a header with the columns id and label, got {','.join(columns) or 'an empty file'}"
            )
        reader.fieldnames = columns
        for row in reader:
            line = reader.line_num
            patch_id, label = (row.get("id") or "").strip(), (row.get("label") or "").strip()
            if not patch_id:
                raise errors.UsageError(f"{path} line {line}: the id is empty")
            if label not in ("0", "1"):
                raise errors.UsageError(f"{path} line {line}: label {label!r} of id {patch_id!r} is not 0 or 1")
            if patch_id in labels:
                raise errors.UsageError(
                    f"{path} line {line}: id {patch_id!r} appears twice (first on line {first_line[patch_id]})"
                )
            labels[patch_id] = int(label)
            first_line[patch_id] = line
    if not labels:
        raise errors.UsageError(f"{path}: no rows under the header")
    return labels


def read_history(csv_path) -> dict[str, list[float]]:
    """The epoch log (training_log.csv) as {column: values by epoch}; a row repeated by a resumed run keeps its
    last copy; an empty cell is NaN."""
    rows: dict[int, dict] = {}
    with epath.Path(csv_path).open() as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    history: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(float(value) if value not in ("", None) else float("nan"))
    return history
