"""Reusing a `beam_jobs.validate` run in the build, so every file is read once to check it, not twice.

    python -m beam_jobs.validate --data_dir=KAGGLE_DIR --output_dir=CHECKS
    PCAM_VALIDATION_DIR=CHECKS tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --config=full

Without the variable the build validates the folder itself. With it, the build takes ids, labels,
validity and pixel hashes from CHECKS/manifest.parquet and copies CHECKS' outputs beside the
dataset (its `validate/` folder), but first proves that the folder is still what was validated:

- train_labels.csv has the size and SHA-256 recorded in CHECKS/inputs.json;
- train/ and test/ list exactly the files of the manifest, none added, none gone;
- every local file has the size and modification time the manifest recorded.

Any difference fails the build with the files named; nothing is rebuilt from a stale validation.
Files on remote filesystems (gs://) are checked by listing and size only. The examples are still
read from the files, and a file that no longer decodes fails the build.
"""

from __future__ import annotations

import json
import os

from beam_jobs import layout, patches

ENV_VAR = "PCAM_VALIDATION_DIR"
MANIFEST = "manifest.parquet"
INPUTS = "inputs.json"
OUTPUT_FILES = (MANIFEST, "summary.json", "rejected.csv", "duplicates.csv", "report.md", INPUTS)
_SHOWN = 5  # files named per kind of difference
COLUMNS = ["id", "source", "label", "path", "pixel_hash", "valid", "reason", "size_bytes", "mtime_ns"]


class StaleValidationError(ValueError):
    """The validation folder does not describe the data folder as it is now."""


def from_env(environ=os.environ) -> str | None:
    """The validation folder named by PCAM_VALIDATION_DIR, or None."""
    return environ.get(ENV_VAR) or None


def _listing(data_dir: str, source: str) -> dict[str, tuple[int, int | None]]:
    """{file name: (size, mtime_ns or None)} of DATA_DIR/SOURCE."""
    folder = layout.join(data_dir, source)
    if "://" not in folder:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: no such folder; expected the Kaggle layout {source}/<id>.tif")
        with os.scandir(folder) as entries:
            out = {}
            for e in entries:
                if not e.is_dir():
                    st = e.stat()
                    out[e.name] = (st.st_size, st.st_mtime_ns)
            return out
    from apache_beam.io.filesystems import FileSystems

    result = FileSystems.match([layout.join(folder, "*")])[0]
    return {m.path.rsplit("/", 1)[-1]: (m.size_in_bytes, None) for m in result.metadata_list if not m.path.endswith("/")}


def _folder(data_dir: str, source: str) -> str:
    return layout.join(data_dir, source).rstrip("/")


def _file_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def record_from_row(row: dict, data_dir: str, folder: str | None = None) -> dict:
    """A manifest row -> the file record the build uses, its path under DATA_DIR (which may have moved)."""
    folder = folder or _folder(data_dir, row["source"])
    return {"id": row["id"], "source": row["source"], "label": row["label"], "path": f"{folder}/{_file_name(row['path'])}",
            "pixel_hash": row["pixel_hash"], "valid": row["valid"]}


def _describe(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
    return f"{len(names)} {kind} ({shown})"


def load_records(validation_dir: str, data_dir: str) -> list[dict]:
    """The manifest's file records with paths under DATA_DIR, after checking they still describe it.

    Raises StaleValidationError naming what differs, FileNotFoundError when an output is missing.
    """
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    from beam_jobs.validate import inputs_fingerprint

    missing = [name for name in OUTPUT_FILES if not FileSystems.exists(layout.join(validation_dir, name))]
    if missing:
        raise FileNotFoundError(
            f"{ENV_VAR}={validation_dir}: {', '.join(missing)} missing; run python -m beam_jobs.validate "
            f"--data_dir={data_dir} --output_dir={validation_dir} (inputs.json is new: validations older than it "
            "cannot be reused)"
        )
    with FileSystems.open(layout.join(validation_dir, INPUTS)) as f:
        recorded = json.load(f)["labels_csv"]
    now = inputs_fingerprint(data_dir)["labels_csv"]
    problems = []
    if now != recorded:
        problems.append(f"{layout.join(data_dir, layout.LABELS_CSV)} changed (validated: {recorded['size_bytes']} bytes, "
                        f"sha256 {recorded['sha256'][:12]}...; now {now['size_bytes']} bytes, sha256 {now['sha256'][:12]}...)")
    with FileSystems.open(layout.join(validation_dir, MANIFEST)) as f:
        table = pq.read_table(f, columns=COLUMNS)
    rows = table.to_pylist()
    records = []
    for source in layout.SOURCES:
        listed = _listing(data_dir, source)
        folder = _folder(data_dir, source)
        seen = set()
        changed = []
        for row in rows:
            if row["source"] != source:
                continue
            name = _file_name(row["path"])
            seen.add(name)
            now_stat = listed.get(name)
            if now_stat is None:
                continue
            size, mtime = now_stat
            size_known = row["reason"] != patches.UNREADABLE  # an unreadable file's size was never read
            if (size_known and size != row["size_bytes"]) or (mtime is not None and row["mtime_ns"] not in (None, mtime)):
                changed.append(f"{source}/{name}")
            records.append(record_from_row(row, data_dir, folder))
        gone = sorted(f"{source}/{n}" for n in seen - listed.keys())
        added = sorted(f"{source}/{n}" for n in listed.keys() - seen)
        for kind, names in (("files gone since validation", gone), ("files added since validation", added),
                            ("files changed since validation (size or modification time)", sorted(changed))):
            if names:
                problems.append(_describe(kind, names))
    if problems:
        raise StaleValidationError(
            f"{ENV_VAR}={validation_dir} does not describe {data_dir} any more: {'; '.join(problems)}. Validate again "
            f"(python -m beam_jobs.validate --data_dir={data_dir} --output_dir={validation_dir}) or unset {ENV_VAR} "
            "to let the build validate"
        )
    # The manifest's row order is whatever the validate job's workers produced; make it a function of the data.
    records.sort(key=lambda r: (r["id"], r["source"], r["path"]))
    return records


def copy_outputs(validation_dir: str, checks_dir: str) -> dict:
    """Copies the validation's files into the dataset's `validate/` folder; returns its summary."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(checks_dir):
        FileSystems.mkdirs(checks_dir)
    for name in OUTPUT_FILES:
        with FileSystems.open(layout.join(validation_dir, name), compression_type="uncompressed") as src:
            data = src.read()
        with FileSystems.create(layout.join(checks_dir, name)) as dst:
            dst.write(data)
    with FileSystems.open(layout.join(checks_dir, "summary.json")) as f:
        return json.load(f)
