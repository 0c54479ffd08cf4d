"""Reusing a `beam_jobs.validate` run in the build, so every file is read once to check it, not twice.

    python -m beam_jobs.validate --manual_dir=KAGGLE_DIR --output_dir=CHECKS
    PCAM_VALIDATION_DIR=CHECKS tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --config=full

Without the variable the build validates the folder itself. With it, the build takes ids, labels,
validity and pixel hashes from CHECKS/manifest.parquet and copies CHECKS' outputs beside the
dataset (its `validate/` folder), but first proves that the folder is still what was validated:

- the manifest is of this build's version (`outputs.MANIFEST_VERSION`: its pixel hash decides the splits);
- train_labels.csv has the size and SHA-256 recorded in CHECKS/inputs.json;
- train/ and test/ list exactly the files of the manifest, none added, none gone;
- every local file has the size and modification time the manifest recorded.

Any difference fails the build with the files named; nothing is rebuilt from a stale validation.
Files on remote filesystems (gs://) are checked by listing and size only. The examples are still
read from the files: a file that no longer decodes, or whose pixels no longer hash to the manifest's
`pixel_hash` (rewritten in place with its size and modification time kept), fails the build with the
file, its id and the difference named (`pcam_tfds.core.examples.FileChangedError`).
"""

from __future__ import annotations

import json
import os

from pcam_tfds.core import fileio, layout, outputs, patches

ENV_VAR = "PCAM_VALIDATION_DIR"
_SHOWN = 5  # files named per kind of difference
COLUMNS = ["id", "source", "label", "path", "pixel_hash", "valid", "reason", "size_bytes", "mtime_ns"]


class StaleValidationError(ValueError):
    """The validation folder does not describe the data folder as it is now."""


class ManifestVersionError(StaleValidationError):
    """The validation's manifest has another version (another pixel hash) than this build reads."""


def from_env(environ=os.environ) -> str | None:
    """The validation folder named by PCAM_VALIDATION_DIR, or None."""
    return environ.get(ENV_VAR) or None


def _folder(manual_dir: str, source: str) -> str:
    return layout.join(manual_dir, source).rstrip("/")


def _file_name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def record_from_row(row: dict, manual_dir: str, folder: str | None = None) -> dict:
    """A manifest row -> the file record the build uses, its path under MANUAL_DIR (which may have moved)."""
    folder = folder or _folder(manual_dir, row["source"])
    return {
        "id": row["id"],
        "source": row["source"],
        "label": row["label"],
        "path": f"{folder}/{_file_name(row['path'])}",
        "pixel_hash": row["pixel_hash"],
        "valid": row["valid"],
    }


def _describe(kind: str, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
    return f"{len(names)} {kind} ({shown})"


def check(validation_dir: str, manual_dir: str) -> list[dict]:
    """The manifest's rows (COLUMNS), after checking that they still describe MANUAL_DIR.

    Raises StaleValidationError naming what differs, FileNotFoundError when an output is missing.
    """
    rows, problems = compare(validation_dir, manual_dir)
    if problems:
        raise StaleValidationError(
            f"{ENV_VAR}={validation_dir} does not describe {manual_dir} any more: {'; '.join(problems)}. Validate again "
            f"(python -m beam_jobs.validate --manual_dir={manual_dir} --output_dir={validation_dir}) or unset {ENV_VAR} "
            "to let the build validate"
        )
    return rows


def compare(validation_dir: str, manual_dir: str) -> tuple[list[dict], list[str]]:
    """(the manifest's rows, what differs between the validation and MANUAL_DIR as it is now, one line per kind).

    FileNotFoundError when an output of the validation is missing.
    """
    missing = [name for name in outputs.OUTPUT_FILES if not fileio.exists(layout.join(validation_dir, name))]
    if missing:
        raise FileNotFoundError(
            f"{ENV_VAR}={validation_dir}: {', '.join(missing)} missing; run python -m beam_jobs.validate "
            f"--manual_dir={manual_dir} --output_dir={validation_dir} (inputs.json is new: validations older than it "
            "cannot be reused)"
        )
    manifest = layout.join(validation_dir, outputs.MANIFEST)
    table = outputs.read_manifest(manifest, COLUMNS)
    check_version(table.schema, manifest, validation_dir, manual_dir)
    with fileio.open_read(layout.join(validation_dir, outputs.INPUTS)) as f:
        recorded = json.load(f)["labels_csv"]
    now = outputs.inputs_fingerprint(manual_dir)["labels_csv"]
    problems = []
    if now != recorded:
        problems.append(
            f"{layout.join(manual_dir, layout.LABELS_CSV)} changed (validated: {recorded['size_bytes']} bytes, "
            f"sha256 {recorded['sha256'][:12]}...; now {now['size_bytes']} bytes, sha256 {now['sha256'][:12]}...)"
        )
    rows = table.to_pylist()
    for source in layout.SOURCES:
        listed = {_file_name(path): stat for path, stat in layout.list_file_stats(manual_dir, source).items()}
        seen, changed = set(), []
        for row in rows:
            if row["source"] != source:
                continue
            name = _file_name(row["path"])
            seen.add(name)
            if name not in listed:
                continue
            size, mtime = listed[name]
            size_known = row["reason"] != patches.UNREADABLE  # an unreadable file's size was never read
            if (size_known and size != row["size_bytes"]) or (
                mtime is not None and row["mtime_ns"] not in (None, mtime)
            ):
                changed.append(f"{source}/{name}")
        gone = sorted(f"{source}/{n}" for n in seen - listed.keys())
        added = sorted(f"{source}/{n}" for n in listed.keys() - seen)
        for kind, names in (
            ("files gone since validation", gone),
            ("files added since validation", added),
            ("files changed since validation (size or modification time)", sorted(changed)),
        ):
            if names:
                problems.append(_describe(kind, names))
    return rows, problems


def check_version(schema, manifest: str, validation_dir: str, manual_dir: str) -> None:
    """ManifestVersionError, in one line naming MANIFEST and its version, unless SCHEMA (its Parquet schema)
    says MANIFEST_VERSION.

    The pixel hash decides duplicate groups and split membership; hashes of another version cannot be
    compared with the ones this build computes, so the folder is validated again, not converted.
    """
    version, pixel_hash = outputs.manifest_version(schema)
    if version != outputs.MANIFEST_VERSION:
        raise ManifestVersionError(
            f"{manifest} is manifest version {version} ({pixel_hash} pixel hashes); this build reads version "
            f"{outputs.MANIFEST_VERSION} ({patches.PIXEL_HASH}): validate again (python -m beam_jobs.validate "
            f"--manual_dir={manual_dir} --output_dir={validation_dir}) or unset {ENV_VAR} to let the build validate"
        )


def load_records(validation_dir: str, manual_dir: str) -> list[dict]:
    """The file records of a checked validation (`check`), with paths under MANUAL_DIR, sorted by id."""
    folders = {source: _folder(manual_dir, source) for source in layout.SOURCES}
    records = [record_from_row(row, manual_dir, folders[row["source"]]) for row in check(validation_dir, manual_dir)]
    # The manifest's row order is whatever the validate job's workers produced; make it a function of the data.
    records.sort(key=lambda r: (r["id"], r["source"], r["path"]))
    return records


def copy_outputs(validation_dir: str, checks_dir: str) -> dict:
    """Copies the validation's files into the dataset's `validate/` folder; returns its summary."""
    fileio.makedirs(checks_dir)
    summary = None
    for name in outputs.OUTPUT_FILES:
        data = fileio.read_bytes(layout.join(validation_dir, name))
        fileio.write_bytes(layout.join(checks_dir, name), data)
        if name == outputs.SUMMARY:
            summary = json.loads(data)
    return summary
