"""Compare finished runs (or evaluations of them): a results table, paired tests of the AUC differences, ROC plot.

    pcam-compare runs/* --output_dir=results
    pcam-compare runs/baseline/external runs/tuned/external --output_dir=results/external
    python -m trainer.evaluation.compare ...      # the same command

A folder counts when it holds metrics.json and its predictions: a trainer run (val_predictions.csv)
or a `trainer.inference.evaluate` output (predictions.csv). Other folders (a tuner folder under runs/, say) are
skipped and named. Writes OUTPUT_DIR/results.md, results.json and roc_curves.png. Rows are sorted by ROC
AUC, best first; each other row is tested against the best with DeLong's paired test on the examples
both scored (the difference, its 95% interval and the p-value), or marked when they share no examples.
Reading the folders and testing need numpy alone (trainer.evaluation.metrics and files); matplotlib is
loaded for the ROC plot only.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
from absl import flags
from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text
from trainer import errors, run_folder
from trainer.config import cli, options
from trainer.config.options import option
from trainer.evaluation import files, metrics


class NotARun(errors.UsageError):
    """The folder has no metrics.json with predictions beside it."""


def load_run(folder: str) -> tuple[str, dict, tuple]:
    """(label, metrics, (ids, labels, scores)) of one run; the label is the model name plus the folder name."""
    root = epath.Path(folder)
    predictions = next((root / n for n in run_folder.PREDICTION_FILES if (root / n).exists()), None)
    if not (root / run_folder.METRICS_FILE).exists() or predictions is None:
        raise NotARun(f"{folder}: no {run_folder.METRICS_FILE} with {' or '.join(run_folder.PREDICTION_FILES)}")
    recorded = json.loads((root / run_folder.METRICS_FILE).read_text())
    ids, labels, scores = files.read_predictions(predictions)
    label = recorded.get("model", root.name)
    if root.name != label:
        label = f"{label} ({root.name})"
    return label, recorded, (ids, labels, scores)


def paired_test(a: tuple, b: tuple) -> dict | None:
    """DeLong's test of run a against run b on the ids both scored (labels must agree); None if they share none."""
    ids_a, labels_a, scores_a = a
    ids_b, labels_b, scores_b = b
    index_b = {i: k for k, i in enumerate(ids_b)}
    common = [(k, index_b[i]) for k, i in enumerate(ids_a) if i in index_b]
    if not common:
        return None
    ka, kb = np.array(common).T
    if not np.array_equal(labels_a[ka], labels_b[kb]):
        raise errors.UsageError("the two runs disagree on the labels of shared examples")
    return metrics.delong_paired(labels_a[ka], scores_a[ka], scores_b[kb])


def results_table(rows: list[tuple[str, dict]]) -> str:
    """Markdown table of (label, metrics) rows, best ROC AUC first; precision/recall/F1 are of the tumour class."""
    lines = [
        "| model | ROC AUC (95% CI) | accuracy | precision | recall | F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, m in sorted(rows, key=lambda r: -r[1]["roc_auc"]):
        lo, hi = m["roc_auc_ci95"]
        t = m["per_class"]["tumour"]
        lines.append(
            f"| {label} | {m['roc_auc']:.4f} ({lo:.4f}-{hi:.4f}) | {m['accuracy']:.4f} | "
            f"{t['precision']:.4f} | {t['recall']:.4f} | {t['f1-score']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def compare(folders: list[str], output_dir: str) -> dict:
    runs, skipped = [], []
    for d in folders:
        try:
            runs.append(load_run(d))
        except NotARun as e:
            skipped.append(str(e))
    if not runs:
        raise errors.UsageError("no run folders among the arguments: " + "; ".join(skipped))
    runs.sort(key=lambda r: -r[1]["roc_auc"])
    best_label, _, best = runs[0]
    tests = []
    for label, _, preds in runs[1:]:
        test = paired_test(best, preds)
        tests.append({"a": best_label, "b": label, **(test or {"note": "no examples in common"})})
    out = epath.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table([(label, m) for label, m, _ in runs])
    lines = [
        "",
        f"Paired DeLong tests against the best ({best_label}), on the examples both scored:",
        "",
        "| model | AUC difference (best - model) | 95% CI | p-value | examples |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for t in tests:
        if "note" in t:
            lines.append(f"| {t['b']} | - | - | - | {t['note']} |")
        else:
            lo, hi = t["difference_ci95"]
            lines.append(
                f"| {t['b']} | {t['difference']:.4f} | {lo:.4f} to {hi:.4f} | {t['p_value']:.3g} | "
                f"{t['num_examples']} |"
            )
    n = runs[0][1]["num_examples"]
    sets = sorted({m.get("set", "validation") for _, m, _ in runs})
    text = (
        f"# Results\n\n{len(runs)} runs on {', '.join(sets)}; threshold 0.5; precision, recall and F1 of the "
        f"tumour class; {n} patches in the first run.\n\n" + table + ("\n".join(lines) + "\n" if tests else "")
    )
    if skipped:
        text += "\nSkipped (not runs): " + "; ".join(skipped) + "\n"
    atomic_write_text(out / "results.md", text)
    result = {
        "runs": [
            {
                "label": label,
                "roc_auc": m["roc_auc"],
                "roc_auc_ci95": m["roc_auc_ci95"],
                "set": m.get("set", "validation"),
            }
            for label, m, _ in runs
        ],
        "paired_tests": tests,
        "skipped": skipped,
    }
    atomic_write_text(out / "results.json", json.dumps(result, indent=2) + "\n")
    from trainer.evaluation import plots  # here, not at import: matplotlib, and --help stays fast

    plots.plot_roc_curves({label: (p[1], p[2]) for label, _, p in runs}, out / "roc_curves.png", "ROC curves")
    return result


FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """What pcam-compare compares, and where the results go; output_dir is its one flag."""

    output_dir: str = options.output_dir("results.md, results.json and roc_curves.png")
    folders: tuple[str, ...] = option(
        (), "Run folders, or pcam-evaluate output folders, to compare: the positional arguments.", positional=True
    )


def define_flags(flag_values: flags.FlagValues) -> None:
    cli.define(flag_values, CompareConfig)


def _main(argv) -> int:
    config = cli.make(FLAGS, CompareConfig, argv[1:])
    if not config.folders:
        raise errors.UsageError("give one or more run folders, e.g. pcam-compare runs/* --output_dir=results")
    result = compare(list(config.folders), config.output_dir)
    print((epath.Path(config.output_dir) / "results.md").read_text(), end="")
    for note in result["skipped"]:
        print(f"skipped: {note}", file=sys.stderr)
    print(f"wrote {config.output_dir}/results.md, results.json and roc_curves.png")
    return 0


def main() -> None:
    """The console script `pcam-compare` (and `python -m trainer.evaluation.compare`)."""
    define_flags(FLAGS)
    errors.run(_main)


if __name__ == "__main__":
    main()
