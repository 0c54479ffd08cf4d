"""The Kaggle folder layout, its labels CSV, and what can be wrong with them.

    DIR/train/<id>.tif      220,025 labelled patches
    DIR/train_labels.csv    id,label   (1 = tumour in the centre 32x32)
    DIR/test/<id>.tif       57,458 unlabelled patches

Every file under `train/` and `test/` is an input, whatever its extension, so
a stray file is reported rather than overlooked. Local paths are read with `os`; remote ones
(`gs://`, `s3://`) through Beam's FileSystems (`fileio`), so they work on a cluster.

`resolve_id` is the join of one id's files with its label rows; it decides
which of them are usable and why the others are not. It is a plain function
so the rules can be read and tested without Beam.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

from pcam_tfds.core import fileio

TRAIN, TEST = "train", "test"
SOURCES = (TRAIN, TEST)
LABELS_CSV = "train_labels.csv"
IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
NO_LABEL = -1  # the label of test patches, which Kaggle does not publish

# Reasons a file or a label row is rejected by the join (decoding has its own, in patches.py).
MISSING_LABEL = "missing_label"  # a train file whose id has no row in the CSV
MISSING_FILE = "missing_file"  # a CSV row whose id has no train file
BAD_LABEL = "bad_label"  # a label other than 0 or 1
MALFORMED_ROW = "malformed_row"  # not two fields, or an empty id
DUPLICATE_ID = "duplicate_id"  # one id in several CSV rows or several files
UNSAFE_ID = "unsafe_id"  # an id that is not a plain file name ('../x', 'a/b')
LABELLED_TEST_FILE = "labelled_test_file"  # a CSV row naming a test file

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


def is_safe_id(id_: str) -> bool:
    """True for ids that are plain file names: no separators, no leading dot."""
    return bool(_SAFE_ID.match(id_)) and ".." not in id_


def file_id(path: str) -> str:
    """The id of a patch file: its name without the extension."""
    name = path.replace("\\", "/").rpartition("/")[2]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def join(base: str, *parts: str) -> str:
    return fileio.join(base, *parts)


def _source_folder(manual_dir: str, source: str) -> str:
    folder = join(manual_dir, source)
    if not fileio.exists(folder):
        raise FileNotFoundError(f"{folder}: no such folder; expected the Kaggle layout {source}/<id>.tif")
    return folder


def _matched_files(folder: str) -> list:
    """FileSystems.match metadata of the files directly under a remote FOLDER."""
    return [m for m in fileio.filesystems().match([join(folder, "*")])[0].metadata_list if not m.path.endswith("/")]


def list_files(manual_dir: str, source: str) -> list[str]:
    """Every entry directly under MANUAL_DIR/SOURCE, sorted (the order never matters downstream)."""
    folder = _source_folder(manual_dir, source)
    if "://" not in folder:
        # os.scandir reads file types from the directory itself; FileSystems.match stats every
        # file three times, which is 277k x 3 system calls on a Kaggle-size folder.
        # Directories, FIFOs and other non-files are listed too, so that validation rejects them by name
        # (not_a_regular_file) instead of skipping them in silence.
        with os.scandir(folder) as entries:
            return sorted(e.path for e in entries)
    return sorted(m.path for m in _matched_files(folder))


def list_batches(manual_dir: str, size: int) -> Iterator[tuple[str, list[str]]]:
    """(source, up to SIZE paths) for every entry `list_files` lists, test/ first: a local folder's batches come
    while os.scandir reads on (so the files of the first can be read while the rest are listed), in the
    folder's own order; a remote folder's, once it is listed. Both folders are checked before the first batch."""
    folders = {source: _source_folder(manual_dir, source) for source in sorted(SOURCES)}
    for source, folder in folders.items():
        if "://" in folder:
            paths = list_files(manual_dir, source)
            yield from ((source, paths[i : i + size]) for i in range(0, len(paths), size))
            continue
        with os.scandir(folder) as entries:
            batch = []
            for e in entries:
                batch.append(e.path)
                if len(batch) == size:
                    yield source, batch
                    batch = []
            if batch:
                yield source, batch


def list_file_stats(manual_dir: str, source: str) -> dict[str, tuple[int, int | None]]:
    """{path: (size in bytes, modification time in ns)} of the files under MANUAL_DIR/SOURCE, as
    `list_files` lists them; remote filesystems give no modification time here (None)."""
    folder = _source_folder(manual_dir, source)
    if "://" not in folder:
        stats = {}
        with os.scandir(folder) as entries:
            for e in entries:
                st = e.stat()
                stats[e.path] = (st.st_size, st.st_mtime_ns)
        return stats
    return {m.path: (m.size_in_bytes, None) for m in _matched_files(folder)}


def check_labels_header(path: str) -> None:
    """Fails early, naming the file, unless the CSV starts with the header `id,label`."""
    if not fileio.exists(path):
        raise FileNotFoundError(f"{path}: no such file; the Kaggle layout has train_labels.csv beside train/")
    with fileio.open_read(path) as f:
        first = f.readline().decode("utf-8-sig", "replace").strip()
    try:  # as a CSV row, so a quoted header ("id","label") is the same header
        fields = next(csv.reader(io.StringIO(first)))
    except (StopIteration, csv.Error):
        fields = []
    if [c.strip() for c in fields] != ["id", "label"]:
        raise ValueError(f"{path}: header is {first!r}, expected 'id,label'")


class LabelRows(NamedTuple):
    """The rows of train_labels.csv after its header as columns, in file order (`read_label_columns`)."""

    ids: pa.Array  # string
    label: np.ndarray  # int64; NO_LABEL where the row is rejected
    good: np.ndarray  # bool: usable (reason None)
    reason: list[str | None]
    raw: pa.Array  # string: each row's line
    repeated: set[str]  # the ids of several rows

    def __len__(self) -> int:
        return len(self.raw)

    def records(self, indices: list[int]) -> list[dict]:
        """The rows at INDICES as `parse_label_line` makes them."""
        import pyarrow as pa

        ids = self.ids.take(pa.array(indices, pa.int64())).to_pylist()
        return [
            {"id": id_, "label": int(self.label[i]), "raw": self.raw[i].as_py(), "reason": self.reason[i]}
            for id_, i in zip(ids, indices)
        ]


# A row `parse_label_line` accepts as it is: a safe id (still checked for '..'), a comma, 0 or 1. Anything else
# (quotes, spaces, other labels, other ids) goes through parse_label_line itself.
_PLAIN_ROW = r"^[A-Za-z0-9][A-Za-z0-9_.-]*,[01]$"
# Line boundaries of str.splitlines other than '\n'.
_OTHER_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def read_label_columns(csv_path: str) -> LabelRows:
    """Every row of train_labels.csv after its header, as columns: what `parse_label_line` makes of each line
    (str.splitlines' lines). The plain rows (all of Kaggle's) are split by Arrow's string kernels, any other
    row by `parse_label_line` itself, with the same result (tests/test_file_table.py)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    check_labels_header(csv_path)
    content = fileio.read_bytes(csv_path).decode("utf-8-sig")
    if len(content) < 1 << 30 and _OTHER_LINE_BREAKS.search(content) is None:
        # Only '\n' ends lines: Arrow splits the text into the lines str.splitlines gives, without a Python string
        # per line (splitlines leaves out the empty piece after a last '\n').
        text = pc.list_flatten(pc.split_pattern(pa.array([content], pa.string()), "\n"))
        if len(text) and not text[len(text) - 1].as_py():
            text = text.slice(0, len(text) - 1)
        text = text.slice(1)
    else:
        text = pa.array(content.splitlines()[1:], pa.string())
    lines = text  # each row's line, kept for the rows parse_label_line reads and for rejected rows
    plain = pc.and_(pc.match_substring_regex(text, _PLAIN_ROW), pc.invert(pc.match_substring(text, "..")))
    ids = pc.utf8_slice_codeunits(text, 0, -2)
    one = pc.ends_with(text, ",1").to_numpy(zero_copy_only=False)
    label = np.where(plain.to_numpy(zero_copy_only=False), one.astype(np.int64), NO_LABEL)
    reason: list[str | None] = [None] * len(lines)
    others = pc.indices_nonzero(pc.invert(plain)).to_pylist()
    if others:
        ids = ids.to_pylist()
        for i in others:
            row = parse_label_line(lines[i].as_py())
            ids[i], label[i], reason[i] = row["id"], row["label"], row["reason"]
        ids = pa.array(ids, pa.string())
    good = np.array([r is None for r in reason], bool) if others else np.ones(len(lines), bool)
    return LabelRows(ids, label, good, reason, lines, repeated_values(ids))


def repeated_values(values: pa.Array | pa.ChunkedArray) -> set[str]:
    """The values that occur more than once (`unique` first: far cheaper than counting when none does)."""
    import pyarrow.compute as pc

    if len(pc.unique(values)) == len(values):
        return set()
    counted = pc.value_counts(values)
    return set(pc.filter(counted.field("values"), pc.greater(counted.field("counts"), 1)).to_pylist())


def parse_label_line(line: str) -> dict:
    """One CSV line as a label row: {'id', 'label', 'raw', 'reason'}; reason is None when it is usable."""
    row = {"id": "", "label": NO_LABEL, "raw": line, "reason": None}
    try:
        fields = next(csv.reader(io.StringIO(line)))
    except (StopIteration, csv.Error):
        fields = []
    if len(fields) != 2 or not fields[0].strip():
        row["reason"] = MALFORMED_ROW
        row["id"] = fields[0].strip() if fields else ""
        return row
    id_, label = fields[0].strip(), fields[1].strip()
    row["id"] = id_
    if not is_safe_id(id_):
        row["reason"] = UNSAFE_ID
    elif label not in ("0", "1"):
        row["reason"] = BAD_LABEL
    else:
        row["label"] = int(label)
    return row


def resolve_id(id_: str, files: Iterable[dict], rows: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """Joins the decoded file records and the CSV rows of one id.

    Each file record carries 'source', 'valid' and 'reason' from decoding;
    this sets its 'label' and, where the join finds a problem, marks it
    invalid with the join's reason (a decoding failure is kept: it is the
    first thing wrong with the file). Returns (file records, rejected rows):
    every input comes back exactly once, in one list or the other.
    """
    files, rows = list(files), list(rows)
    out_files, bad_rows = [], []
    good_rows = [r for r in rows if r["reason"] is None]
    bad_rows += [dict(r, id=id_) for r in rows if r["reason"] is not None]
    train = [f for f in files if f["source"] == TRAIN]
    test = [f for f in files if f["source"] == TEST]

    if len(good_rows) > 1:
        bad_rows += [dict(r, reason=DUPLICATE_ID) for r in good_rows]
    elif good_rows and not train:
        bad_rows.append(dict(good_rows[0], reason=LABELLED_TEST_FILE if test else MISSING_FILE))

    def reject(f, reason, detail):
        f = dict(f, label=NO_LABEL)
        if f["valid"]:
            f.update(valid=False, reason=reason, detail=detail)
        return f

    # Only ids with several files need this; built for every id it took most of a Kaggle-scale join.
    shared = (
        f"{len(files)} files ({', '.join(sorted(f['source'] for f in files))}) share this id" if len(files) > 1 else ""
    )
    for f in test:
        f = dict(f, label=NO_LABEL)
        out_files.append(reject(f, DUPLICATE_ID, shared) if len(files) > 1 else f)
    for f in train:
        if len(files) > 1:
            out_files.append(reject(f, DUPLICATE_ID, shared))
        elif len(good_rows) == 1:
            out_files.append(dict(f, label=good_rows[0]["label"]))
        elif len(good_rows) > 1:
            out_files.append(reject(f, DUPLICATE_ID, f"{len(good_rows)} rows of {LABELS_CSV} name this id"))
        elif rows:  # only rejected rows: the file has no usable label
            out_files.append(reject(f, rows[0]["reason"], f"its row is {rows[0]['raw']!r}"))
        else:
            out_files.append(reject(f, MISSING_LABEL, f"no row in {LABELS_CSV}"))
    if len(files) > 1 and len(good_rows) == 1 and train:
        # The row itself is fine, but it cannot say which of the files it labels.
        bad_rows.append(dict(good_rows[0], reason=DUPLICATE_ID))
    return out_files, bad_rows
