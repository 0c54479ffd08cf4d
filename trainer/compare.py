"""Compare finished runs: a Markdown results table and one ROC plot with every model.

    python -m trainer.compare runs/baseline runs/tuned runs/resnet50 runs/densenet169 --output_dir=results

Reads each RUN_DIR's metrics.json and val_predictions.csv (written by `python -m trainer`) and writes
OUTPUT_DIR/results.md (model, ROC AUC with 95% interval, accuracy, tumour-class precision, recall, F1)
and OUTPUT_DIR/roc_curves.png. Rows are sorted by ROC AUC, best first.
"""

from __future__ import annotations

import argparse
import json
import sys

from etils import epath

from trainer import evaluate


def load_run(run_dir: str) -> tuple[str, dict, tuple]:
    """(label, metrics, (labels, scores)) of one run; the label is the model name plus the folder name."""
    root = epath.Path(run_dir)
    missing = [n for n in ("metrics.json", "val_predictions.csv") if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: missing {', '.join(missing)}; is it a finished trainer run?")
    metrics = json.loads((root / "metrics.json").read_text())
    _, labels, scores = evaluate.read_predictions(root / "val_predictions.csv")
    label = metrics.get("model", root.name)
    if root.name != label:
        label = f"{label} ({root.name})"
    return label, metrics, (labels, scores)


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dirs", nargs="+", help="trainer run folders")
    p.add_argument("--output_dir", required=True, help="where results.md and roc_curves.png go")
    args = p.parse_args(argv)
    try:
        runs = [load_run(d) for d in args.run_dirs]
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = epath.Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = results_table([(label, m) for label, m, _ in runs])
    n = runs[0][1]["num_examples"]
    (out / "results.md").write_text(
        f"# Validation results\n\n{len(runs)} runs; threshold 0.5; precision, recall and F1 of the tumour class; "
        f"{n} validation patches in the first run.\n\n" + table
    )
    evaluate.plot_roc_curves({label: curve for label, _, curve in runs}, out / "roc_curves.png",
                             "Validation ROC curves")
    print(table, end="")
    print(f"wrote {out / 'results.md'} and {out / 'roc_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
