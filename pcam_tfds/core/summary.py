"""summary.json: every file and label row counted by what became of it, and the check that none was lost.

Both executors count the same keys (`file_key`, `row_key`) and the same duplicate facts
(`duplicate_fact`) and hand the totals to `build_summary`, which raises AccountingError when the
counts do not add up to the inputs: a job fails rather than drop a record.
"""

from __future__ import annotations

from pcam_tfds.core import layout, records

FILE, ROW = "file", "row"  # the first element of a count key


class AccountingError(RuntimeError):
    """The job lost or invented records: its outputs must not be trusted."""


def file_key(f: dict) -> tuple:
    """What summary.json counts of a file record."""
    return (FILE, f["source"], f["valid"], f["reason"] or "", f["label"])


def row_key(r: dict) -> tuple:
    """What summary.json counts of a rejected label row."""
    return (ROW, r["reason"])


def duplicate_fact(group: dict) -> tuple[str, bool, int]:
    """What summary.json counts of a duplicate group: (kind, conflicting labels, number of files)."""
    return group["kind"], group["conflicting_labels"], len(group["members"])


def build_summary(counts, num_rows: int, duplicate_facts, num_listed: int) -> dict:
    """Turns the counted keys [(key, n)] into summary.json, checking that every input is accounted for."""
    files = {"valid": 0, "rejected": 0, "by_source": {}, "rejected_by_reason": {}}
    labels = {}
    rows_rejected_by_reason = {}
    for key, n in counts:
        if key[0] == ROW:
            rows_rejected_by_reason[key[1]] = rows_rejected_by_reason.get(key[1], 0) + n
            continue
        _, source, valid, reason, label = key
        src = files["by_source"].setdefault(source, {"total": 0, "valid": 0, "rejected": 0})
        src["total"] += n
        src["valid" if valid else "rejected"] += n
        files["valid" if valid else "rejected"] += n
        if valid and source == layout.TRAIN:
            labels[str(label)] = labels.get(str(label), 0) + n
        if not valid:
            files["rejected_by_reason"][reason] = files["rejected_by_reason"].get(reason, 0) + n
    total = files["valid"] + files["rejected"]
    if total != num_listed:
        raise AccountingError(f"{num_listed} files were listed but {total} came out of the pipeline (valid + rejected)")
    rows_rejected = sum(rows_rejected_by_reason.values())
    rows_matched = sum(
        n for key, n in counts if key[0] == FILE and key[1] == layout.TRAIN and key[4] != layout.NO_LABEL
    )
    if rows_matched + rows_rejected != num_rows:
        raise AccountingError(
            f"train_labels.csv has {num_rows} rows but {rows_matched} matched + {rows_rejected} rejected"
        )
    dup = dict.fromkeys(records.DUPLICATE_KINDS, 0)
    dup.update(conflicting_labels=0, files_in_groups=0)
    for kind, conflicting, size in duplicate_facts:
        dup[kind] += 1
        dup["conflicting_labels"] += int(conflicting)
        dup["files_in_groups"] += size
    return {
        "total": total,
        "valid": files["valid"],
        "rejected": files["rejected"],
        "rejected_by_reason": dict(sorted(files["rejected_by_reason"].items())),
        "by_source": dict(sorted(files["by_source"].items())),
        "train_labels": dict(sorted(labels.items())),
        "label_rows": {
            "total": num_rows,
            "matched": rows_matched,
            "rejected": rows_rejected,
            "rejected_by_reason": dict(sorted(rows_rejected_by_reason.items())),
        },
        "duplicate_groups": dup,
    }


def render_report(summary: dict, manual_dir: str) -> str:
    """summary.json as Markdown."""
    s = summary
    lines = [
        f"# Validation of `{manual_dir}`",
        "",
        f"**{s['total']:,} files: {s['valid']:,} valid, {s['rejected']:,} rejected.**",
        "",
        "| source | files | valid | rejected |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {k} | {v['total']:,} | {v['valid']:,} | {v['rejected']:,} |" for k, v in s["by_source"].items()]
    lines += ["", "## Valid train labels", "", "| label | files |", "| --- | ---: |"]
    lines += [f"| {k} | {v:,} |" for k, v in s["train_labels"].items()]
    lines += ["", "## Rejected files by reason", ""]
    if s["rejected_by_reason"]:
        lines += ["| reason | files |", "| --- | ---: |"] + [
            f"| {k} | {v:,} |" for k, v in s["rejected_by_reason"].items()
        ]
    else:
        lines.append("None.")
    r = s["label_rows"]
    lines += [
        "",
        "## train_labels.csv",
        "",
        f"{r['total']:,} rows: {r['matched']:,} matched a file, {r['rejected']:,} rejected.",
        "",
    ]
    if r["rejected_by_reason"]:
        lines += ["| reason | rows |", "| --- | ---: |"] + [
            f"| {k} | {v:,} |" for k, v in r["rejected_by_reason"].items()
        ]
    d = s["duplicate_groups"]
    lines += [
        "",
        "## Exact-duplicate pixels",
        "",
        "| groups within train | within test | across train and test | with conflicting labels | files in groups |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {d['within_train']:,} | {d['within_test']:,} | {d['across_train_test']:,} "
        f"| {d['conflicting_labels']:,} | {d['files_in_groups']:,} |",
        "",
        "Rejected files and rows are listed in `rejected.csv`, duplicate groups in `duplicates.csv`, "
        "every file in `manifest.parquet`.",
        "",
    ]
    return "\n".join(lines)
