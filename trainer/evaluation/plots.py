"""The evaluation's figures, each written as a PNG: confusion matrix, ROC, precision-recall, reliability, learning
curves and galleries of patches.

    plot_roc_curves({"baseline": (labels, scores)}, model_dir / "roc_curve.png", "baseline: validation ROC")

Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas, without pyplot: no display, no
global figure state. The numbers drawn come from trainer.evaluation.metrics; nothing is computed here.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from pcam_tfds.core.folder_lock import atomic_path
from trainer.evaluation import metrics


def _save(fig: Figure, path) -> None:
    """The figure as PNG, written beside `path` and renamed over it, so a kill never leaves half a file."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        fig.savefig(f, format="png", dpi=110)


def plot_confusion_matrix(matrix, path, title: str) -> None:
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")  # constrained layout keeps a long title inside
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], metrics.CLASS_NAMES)
    ax.set_yticks([0, 1], metrics.CLASS_NAMES)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    fig.suptitle(textwrap.fill(title, 45))
    fig.colorbar(im, ax=ax, label="patches")
    _save(fig, path)


def plot_precision_recall(labels, scores, path, title: str) -> None:
    precision, recall, _ = metrics.precision_recall_curve(labels, scores)
    ap = metrics.average_precision(labels, scores)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.step(recall, precision, where="post", label=f"AP {ap:.4f}")
    ax.axhline(np.mean(labels), linestyle="--", color="grey", label="chance (tumour share)")
    ax.set_xlabel("recall (tumour)")
    ax.set_ylabel("precision (tumour)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    fig.suptitle(textwrap.fill(title, 50))
    _save(fig, path)


def plot_reliability(labels, curves: dict[str, np.ndarray], path, title: str, bins: int = 15) -> None:
    """Reliability diagram: tumour rate against mean probability per bin, one line per {name: probabilities}."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, scores in curves.items():
        mean_score, rate, _ = metrics.reliability_bins(labels, scores, bins)
        ece = metrics.expected_calibration_error(labels, scores, bins)
        ax.plot(mean_score, rate, marker="o", label=f"{name} (ECE {ece:.4f})")
    ax.set_xlabel("mean predicted tumour probability")
    ax.set_ylabel("tumour rate")
    ax.legend(loc="upper left")
    fig.suptitle(textwrap.fill(title, 50))
    _save(fig, path)


def plot_gallery(rows: dict[str, list[tuple[str, np.ndarray, float, np.ndarray | None]]], path, title: str) -> None:
    """A grid: one row per {row title: [(id, uint8 image, probability, heatmap or None)]}, the centre 32x32
    outlined (the label is decided there); heatmaps (0..1, image-sized) are drawn over the image."""
    rows = {k: v for k, v in rows.items() if v}
    if not rows:  # e.g. no errors at all: say so rather than leave the figure out
        rows = {"no examples of this kind": []}
    width = max(max(len(items) for items in rows.values()), 1)
    fig = Figure(figsize=(max(1.7 * width, 4.0), 2.0 * len(rows) + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), width, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    for r, (row_title, items) in enumerate(rows.items()):
        axes[r, 0].set_title(row_title, loc="left", fontsize=9, fontweight="bold")
        for c, (patch_id, image, prob, heat) in enumerate(items):
            ax = axes[r, c]
            ax.imshow(image)
            if heat is not None:
                ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            size = image.shape[0]
            ax.add_patch(
                Rectangle(
                    (size / 3 - 0.5, size / 3 - 0.5), size / 3, size / 3, fill=False, edgecolor="lime", linewidth=1.2
                )
            )
            ax.text(
                0.02,
                0.02,
                f"p={prob:.3f}\n{patch_id[:8]}",
                transform=ax.transAxes,
                fontsize=7,
                color="white",
                va="bottom",
                bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0},
            )
    fig.suptitle(title)
    _save(fig, path)


def plot_roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path, title: str) -> None:
    """One ROC curve per entry of {legend label: (labels, scores)}, with the AUC in the legend (NaN, and no
    curve, for a set of one class)."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = metrics.roc_curve(labels, scores)
        both = np.min(labels) != np.max(labels)
        ax.plot(fpr, tpr, label=f"{name} (AUC {metrics.roc_auc(labels, scores) if both else float('nan'):.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def plot_learning_curves(history: dict[str, list[float]], path, title: str, phase_starts: tuple[int, ...] = ()) -> None:
    """Accuracy, loss and AUC by epoch, train and validation; the best val_auc epoch marked (the weights kept);
    dotted lines where a new training phase starts."""
    epochs = np.asarray(history.get("epoch", []), dtype=int) + 1
    val_auc = np.asarray(history.get("val_auc", []), dtype=float)
    best = int(epochs[np.nanargmax(val_auc)]) if val_auc.size and not np.isnan(val_auc).all() else None
    fig = Figure(figsize=(13, 3.9), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, key, label in zip(axes, ("accuracy", "loss", "auc"), ("accuracy", "binary cross-entropy", "ROC AUC")):
        for prefix, name in (("", "train"), ("val_", "validation")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], marker="o", markersize=3, label=name)
        for start in phase_starts:
            ax.axvline(start + 0.5, linestyle=":", color="grey", label="fine-tuning starts")
        if best is not None:
            ax.axvline(best, linestyle="--", color="tab:red", alpha=0.7, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.legend()
    fig.suptitle(title)
    _save(fig, path)
