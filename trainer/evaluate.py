"""Per-run evaluation: metrics.json, classification_report.txt and the PNG plots in RUN_DIR.

All functions take arrays or file paths explicitly. Plots are `matplotlib.figure.Figure` objects
rendered by the Agg canvas, without pyplot: no display, no global figure state.
"""

from __future__ import annotations

import csv
import json

import numpy as np
from etils import epath
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm

CLASS_NAMES = ("normal", "tumour")


def bootstrap_auc(labels: np.ndarray, scores: np.ndarray, seed: int, n: int = 1000, level: float = 0.95):
    """Percentile bootstrap interval of the ROC AUC; resamples without both classes are skipped."""
    rng = np.random.default_rng(seed)
    labels, scores = np.asarray(labels), np.asarray(scores)
    aucs = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() != labels[idx].max():
            aucs.append(skm.roc_auc_score(labels[idx], scores[idx]))
    if not aucs:
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(aucs, tail)), float(np.percentile(aucs, 100 - tail))]


def compute_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5, seed: int = 0) -> dict:
    """ROC AUC (+ bootstrap 95% interval), accuracy, per-class precision/recall/F1 and the confusion matrix."""
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape or labels.size == 0:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal, non-empty 1-D arrays")
    predicted = (scores >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    report = skm.classification_report(
        labels, predicted, labels=[0, 1], target_names=CLASS_NAMES, output_dict=True, zero_division=0
    )
    return {
        "num_examples": int(labels.size),
        "num_positive": int(labels.sum()),
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if both else float("nan"),
        "roc_auc_ci95": bootstrap_auc(labels, scores, seed) if both else [float("nan"), float("nan")],
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "threshold": threshold,
        "per_class": {
            name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
            for name in CLASS_NAMES
        },
        # Rows: true label (normal, tumour); columns: predicted label.
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
    }


def classification_report_text(labels, scores, threshold: float = 0.5) -> str:
    predicted = (np.asarray(scores).ravel() >= threshold).astype(int)
    return skm.classification_report(
        np.asarray(labels).astype(int).ravel(), predicted, labels=[0, 1], target_names=CLASS_NAMES, digits=4,
        zero_division=0,
    )


def plot_confusion_matrix(matrix, path, title: str) -> None:
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="patches")
    fig.tight_layout()
    _save(fig, path)


def plot_roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path, title: str) -> None:
    """One ROC curve per entry of {legend label: (labels, scores)}, with the AUC in the legend."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = skm.roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def read_history(csv_path) -> dict[str, list[float]]:
    """The CSVLogger log as {column: values by epoch}; a row repeated by a resumed run keeps its last copy."""
    rows: dict[int, dict] = {}
    with epath.Path(csv_path).open() as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    history: dict[str, list[float]] = {}
    for epoch in sorted(rows):
        for key, value in rows[epoch].items():
            history.setdefault(key, []).append(float(value) if value not in ("", None) else float("nan"))
    return history


def plot_learning_curves(history: dict[str, list[float]], path, title: str, phase_starts: tuple[int, ...] = ()) -> None:
    """Accuracy, loss and AUC by epoch, train and validation; dotted lines where a new training phase starts."""
    epochs = np.asarray(history.get("epoch", []), dtype=int) + 1
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for ax, key, label in zip(axes, ("accuracy", "loss", "auc"), ("accuracy", "binary cross-entropy", "ROC AUC")):
        for prefix, name in (("", "train"), ("val_", "validation")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], marker="o", label=name)
        for start in phase_starts:
            ax.axvline(start + 0.5, linestyle=":", color="grey", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: Figure, path) -> None:
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png", dpi=110)


def write_predictions(path, ids, labels, scores) -> None:
    """id,label,probability rows (the validation predictions that compare.py re-reads)."""
    with epath.Path(path).open("w") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "probability"])
        for i, y, p in zip(ids, np.asarray(labels).ravel(), np.asarray(scores).ravel()):
            writer.writerow([i, int(y), f"{float(p):.6f}"])


def read_predictions(path) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids, labels, scores = [], [], []
    with epath.Path(path).open() as f:
        for row in csv.DictReader(f):
            ids.append(row["id"])
            labels.append(int(row["label"]))
            scores.append(float(row["probability"]))
    return ids, np.asarray(labels), np.asarray(scores)


def write_report(run_dir, name: str, ids, labels, scores, history_csv, seed: int, phase_starts=()) -> dict:
    """Writes metrics.json, classification_report.txt, val_predictions.csv and the three plots; returns the metrics."""
    run_dir = epath.Path(run_dir)
    m = compute_metrics(labels, scores, seed=seed)
    m["model"] = name
    (run_dir / "metrics.json").write_text(json.dumps(m, indent=2) + "\n")
    (run_dir / "classification_report.txt").write_text(
        f"{name}: validation split, threshold {m['threshold']}\n\n" + classification_report_text(labels, scores)
    )
    write_predictions(run_dir / "val_predictions.csv", ids, labels, scores)
    plot_confusion_matrix(m["confusion_matrix"], run_dir / "confusion_matrix.png", f"{name}: validation confusion matrix")
    plot_roc_curves({name: (labels, scores)}, run_dir / "roc_curve.png", f"{name}: validation ROC")
    if epath.Path(history_csv).exists():
        plot_learning_curves(read_history(history_csv), run_dir / "learning_curves.png", f"{name}: learning curves",
                             phase_starts)
    return m
