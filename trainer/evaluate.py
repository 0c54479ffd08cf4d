"""Per-run evaluation: metrics.json, classification_report.txt and the PNG plots in RUN_DIR.

All functions take arrays or file paths explicitly. Plots are `matplotlib.figure.Figure` objects
rendered by the Agg canvas, without pyplot: no display, no global figure state.
As a command it evaluates finished runs (several: their ensemble) on any labelled set:

    pcam-evaluate --model_dir=runs/baseline --input_dir=SAMPLE/test --labels=SAMPLE/test_labels.csv \\
        --output_dir=runs/baseline/external
    pcam-evaluate --model_dir=runs/baseline --data_dir=TFDS_DIR --split=validation --output_dir=eval/baseline
    python -m trainer.evaluate ...     # the same command
"""

from __future__ import annotations

import csv
import json
import os
import textwrap

import numpy as np
from etils import epath
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm

from pcam_tfds.core.folder_lock import atomic_path, atomic_write_text
from trainer import errors

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


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x with ties given their mean rank."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and sorted_x[j] == sorted_x[i]:
            j += 1
        ranks[order[i:j]] = 0.5 * (i + j - 1) + 1.0
        i = j
    return ranks


def delong_paired(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict:
    """DeLong's test of two correlated ROC AUCs on the same examples: the difference a - b, its 95% interval and
    the two-sided p-value (DeLong et al. 1988, with Sun & Xu's midrank computation)."""
    from scipy import stats

    labels = np.asarray(labels).astype(int).ravel()
    scores = np.stack([np.asarray(scores_a, np.float64).ravel(), np.asarray(scores_b, np.float64).ravel()])
    if scores.shape[1] != labels.size or len(np.unique(labels)) != 2:
        raise ValueError("DeLong's test needs both labels and one score per example from each model")
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    m, n = pos.shape[1], neg.shape[1]
    aucs, v01, v10 = [], [], []
    for k in range(2):
        tx, ty = _midranks(pos[k]), _midranks(neg[k])
        tz = _midranks(np.concatenate([pos[k], neg[k]]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v01.append((tz[:m] - tx) / n)
        v10.append(1.0 - (tz[m:] - ty) / m)
    cov = np.cov(np.array(v01)) / m + np.cov(np.array(v10)) / n
    diff = float(aucs[0] - aucs[1])
    sd = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    if sd == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
    else:
        p = float(2 * stats.norm.sf(abs(diff) / sd))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "difference_ci95": [diff - 1.959964 * sd, diff + 1.959964 * sd],
        "p_value": p,
        "num_examples": int(labels.size),
    }


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Accuracy, tumour-class precision, recall (sensitivity) and F1, specificity and the confusion matrix at
    `threshold` (a patch is called tumour when its score is >= threshold)."""
    labels = np.asarray(labels).astype(int).ravel()
    predicted = (np.asarray(scores).ravel() >= threshold).astype(int)
    (tn, fp), (fn, tp) = skm.confusion_matrix(labels, predicted, labels=[0, 1])
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "threshold": float(threshold),
        "accuracy": float((tp + tn) / labels.size),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
        # Rows: true label (normal, tumour); columns: predicted label.
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises Youden's J = sensitivity + specificity - 1 (the first one, on ties)."""
    fpr, tpr, thresholds = skm.roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximises the tumour class's F1 (the first one, on ties)."""
    precision, recall, thresholds = skm.precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 15) -> float:
    """ECE of the tumour probability: sum over `bins` equal-width bins of (share of patches) x |tumour rate -
    mean probability|. A score of exactly 1 falls in the last bin."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    index = np.minimum((scores * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(labels[members].mean() - scores[members].mean())
    return float(total)


def calibration_metrics(labels: np.ndarray, scores: np.ndarray) -> dict:
    """Brier score, 15-bin ECE and log-loss (the probabilities clipped to [1e-7, 1 - 1e-7])."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    return {
        "brier": float(np.mean((scores - labels) ** 2)),
        "ece": expected_calibration_error(labels, scores),
        "log_loss": float(skm.log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7), labels=[0, 1])),
    }


def compute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
) -> dict:
    """ROC AUC (+ bootstrap 95% interval), average precision, calibration, and metrics at several thresholds.

    `thresholds` ({name: value}) are applied as given, e.g. those chosen on a run's validation split when
    scoring another set; None chooses them here: Youden's J and the best F1 on these labels, which is
    right only for the split the thresholds are chosen on (validation). The top-level accuracy,
    per_class and confusion_matrix are at `threshold` (0.5), as before.
    """
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape or labels.size == 0:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal, non-empty 1-D arrays")
    predicted = (scores >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    report = skm.classification_report(
        labels, predicted, labels=[0, 1], target_names=CLASS_NAMES, output_dict=True, zero_division=0
    )
    if thresholds is None:
        chosen = {"youden": youden_threshold(labels, scores), "f1": f1_threshold(labels, scores)} if both else {}
        source = "chosen on these examples"
    else:
        chosen, source = dict(thresholds), "given (chosen on the run's validation split)"
    return {
        "num_examples": int(labels.size),
        "num_positive": int(labels.sum()),
        "roc_auc": float(skm.roc_auc_score(labels, scores)) if both else float("nan"),
        "roc_auc_ci95": bootstrap_auc(labels, scores, seed) if both else [float("nan"), float("nan")],
        "average_precision": float(skm.average_precision_score(labels, scores)) if both else float("nan"),
        **calibration_metrics(labels, scores),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "threshold": threshold,
        "per_class": {
            name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
            for name in CLASS_NAMES
        },
        # Rows: true label (normal, tumour); columns: predicted label.
        "confusion_matrix": skm.confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
        "thresholds_source": source,
        "at_threshold": {
            name: threshold_metrics(labels, scores, t) for name, t in {"0.5": threshold, **chosen}.items()
        },
    }


def classification_report_text(labels, scores, threshold: float = 0.5) -> str:
    predicted = (np.asarray(scores).ravel() >= threshold).astype(int)
    return skm.classification_report(
        np.asarray(labels).astype(int).ravel(),
        predicted,
        labels=[0, 1],
        target_names=CLASS_NAMES,
        digits=4,
        zero_division=0,
    )


def plot_confusion_matrix(matrix, path, title: str) -> None:
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")  # constrained layout keeps a long title inside
    ax = fig.subplots()
    im = ax.imshow(matrix, cmap="Blues")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    fig.suptitle(textwrap.fill(title, 45))
    fig.colorbar(im, ax=ax, label="patches")
    _save(fig, path)


def plot_precision_recall(labels, scores, path, title: str) -> None:
    precision, recall, _ = skm.precision_recall_curve(labels, scores)
    ap = skm.average_precision_score(labels, scores)
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
    labels = np.asarray(labels, dtype=np.float64).ravel()
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, scores in curves.items():
        scores = np.asarray(scores, dtype=np.float64).ravel()
        index = np.minimum((scores * bins).astype(int), bins - 1)
        used = [b for b in range(bins) if (index == b).any()]
        ax.plot(
            [scores[index == b].mean() for b in used],
            [labels[index == b].mean() for b in used],
            marker="o",
            label=f"{name} (ECE {expected_calibration_error(labels, scores, bins):.4f})",
        )
    ax.set_xlabel("mean predicted tumour probability")
    ax.set_ylabel("tumour rate")
    ax.legend(loc="upper left")
    fig.suptitle(textwrap.fill(title, 50))
    _save(fig, path)


def plot_gallery(rows: dict[str, list[tuple[str, np.ndarray, float, np.ndarray | None]]], path, title: str) -> None:
    """A grid: one row per {row title: [(id, uint8 image, probability, heatmap or None)]}, the centre 32x32
    outlined (the label is decided there); heatmaps (0..1, image-sized) are drawn over the image."""
    from matplotlib.patches import Rectangle

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


def _save(fig: Figure, path) -> None:
    """The figure as PNG, written beside `path` and renamed over it, so a kill never leaves half a file."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        fig.savefig(f, format="png", dpi=110)


def write_predictions(path, ids, labels, scores) -> None:
    """id,label,probability rows (the validation predictions that compare.py re-reads)."""
    with atomic_path(path) as tmp, tmp.open("w") as f:
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


def write_report(
    run_dir,
    name: str,
    ids,
    labels,
    scores,
    history_csv=None,
    seed: int = 0,
    phase_starts=(),
    *,
    set_name: str = "validation",
    thresholds: dict[str, float] | None = None,
    fit_calibration: bool = True,
    images_for=None,
    gradcam=None,
    gallery_size: int = 8,
    held_out: bool = True,
) -> dict:
    """Writes metrics.json, classification_report.txt, predictions and the figures into `run_dir`; returns the metrics.

    set_name: which examples these are (recorded in metrics.json and the titles). thresholds: apply these
    (chosen on validation) instead of choosing them here. fit_calibration: fit a temperature on these
    examples (only on the validation split) and write calibration.json. images_for(ids) -> {id: uint8
    image}: with it, an error gallery (the most confident false positives and negatives) and, given a
    `gradcam` (trainer.explain.GradCam), a Grad-CAM gallery over true positives and both kinds of error.
    held_out: False when the model trained on these examples (`--refit`): recorded in metrics.json and
    said in every title, since such metrics flatter the model.
    """
    from trainer import calibration, explain

    run_dir = epath.Path(run_dir)
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    m = compute_metrics(labels, scores, seed=seed, thresholds=thresholds)
    m["model"] = name
    m["set"] = set_name
    m["held_out"] = held_out
    shown = set_name if held_out else f"{set_name} (trained on, not held out)"
    prefix = "val_" if set_name == "validation" else ""
    if fit_calibration and len(np.unique(labels)) == 2:
        temperature = calibration.fit_temperature(labels, scores)
        calibrated = calibration.apply_temperature(scores, temperature)
        m["calibration"] = calibration.write(
            run_dir,
            temperature,
            set_name,
            int(labels.size),
            calibration_metrics(labels, scores),
            calibration_metrics(labels, calibrated),
        )
        plot_reliability(
            labels,
            {"as trained": scores, f"temperature {temperature:.3f}": calibrated},
            run_dir / "reliability.png",
            f"{name}: {shown} reliability, before and after scaling",
        )
    else:
        plot_reliability(labels, {name: scores}, run_dir / "reliability.png", f"{name}: {shown} reliability")
    atomic_write_text(run_dir / calibration.METRICS_FILE, json.dumps(m, indent=2) + "\n")
    at = m["at_threshold"]
    text = f"{name}: {shown}, threshold 0.5\n\n" + classification_report_text(labels, scores)
    for key in ("youden", "f1"):
        if key in at:
            text += (
                f"\n{name}: {shown}, {key} threshold {at[key]['threshold']:.4f} "
                f"({m['thresholds_source']})\n\n" + classification_report_text(labels, scores, at[key]["threshold"])
            )
    atomic_write_text(run_dir / "classification_report.txt", text)
    write_predictions(run_dir / f"{prefix}predictions.csv", ids, labels, scores)
    plot_confusion_matrix(
        m["confusion_matrix"], run_dir / "confusion_matrix.png", f"{name}: {shown} confusion matrix (threshold 0.5)"
    )
    plot_roc_curves({name: (labels, scores)}, run_dir / "roc_curve.png", f"{name}: {shown} ROC")
    plot_precision_recall(labels, scores, run_dir / "precision_recall.png", f"{name}: {shown} precision-recall")
    if history_csv is not None and epath.Path(history_csv).exists():
        plot_learning_curves(
            read_history(history_csv), run_dir / "learning_curves.png", f"{name}: learning curves", phase_starts
        )
    if images_for is not None:
        picks = explain.pick_examples(ids, labels, scores, k=gallery_size)
        wanted = sorted({ids[i] for index in picks.values() for i in index})
        images = images_for(wanted)
        rows = {
            f"most confident {kind}": [(ids[i], images[ids[i]], scores[i], None) for i in index]
            for kind, index in picks.items()
            if kind != "true positives"
        }
        plot_gallery(rows, run_dir / "error_gallery.png", f"{name}: {shown} errors (centre 32x32 outlined)")
        if gradcam is not None:
            rows = {}
            for kind, index in picks.items():
                chosen = index[: max(1, gallery_size * 3 // 4)]
                if not chosen:
                    continue
                heat = gradcam(np.stack([images[ids[i]] for i in chosen]).astype(np.float32))
                rows[kind] = [(ids[i], images[ids[i]], scores[i], h) for i, h in zip(chosen, heat)]
            plot_gallery(rows, run_dir / "gradcam_gallery.png", f"{name}: Grad-CAM on {shown} ({gradcam.layer_name})")
    return m


def write_tensorboard(log_dir, labels, scores, step: int, figures=(), examples=None, tag: str = "validation") -> bool:
    """PR curve, the report's figures (PNG files) and example patches as TensorBoard summaries in `log_dir`.

    Returns False (and writes nothing) when the tensorboard package is missing.
    """
    try:
        from tensorboard.plugins.pr_curve import summary as pr_summary
    except ImportError:
        return False
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        pb = pr_summary.pb(
            f"{tag}/pr_curve",
            np.asarray(labels).astype(bool).ravel(),
            np.asarray(scores, np.float32).ravel(),
            num_thresholds=201,
        )
        tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=step)
        for path in figures:
            if epath.Path(path).exists():
                image = tf.io.decode_png(epath.Path(path).read_bytes(), channels=3)
                tf.summary.image(f"{tag}/{epath.Path(path).stem}", image[None], step=step)
        if examples is not None and len(examples):
            tf.summary.image(f"{tag}/example_patches", np.asarray(examples, np.uint8), step=step, max_outputs=8)
    writer.close()
    return True


def collect_images(batches, wanted) -> dict[str, np.ndarray]:
    """{id: uint8 image} for the `wanted` ids, from an iterator of {"image", "id"} batches (read once more)."""
    wanted, found = set(wanted), {}
    for batch in batches:
        for patch_id, image in zip(np.asarray(batch["id"]).tolist(), np.asarray(batch["image"])):
            key = patch_id.decode() if isinstance(patch_id, bytes) else str(patch_id)
            if key in wanted:
                found[key] = np.clip(image, 0, 255).astype(np.uint8)
        if len(found) == len(wanted):
            break
    missing = wanted - set(found)
    if missing:
        raise ValueError(f"{len(missing)} ids were not found when reading the images again, e.g. {sorted(missing)[:3]}")
    return found


# python -m trainer.evaluate: a run (or an ensemble of runs) on any labelled set.

USAGE = """Evaluate trained runs on a labelled set: the same metrics.json and figures as training writes.

    python -m trainer.evaluate --model_dir=runs/baseline --input_dir=SAMPLE/test --labels=SAMPLE/test_labels.csv \\
        --output_dir=runs/baseline/external --tta
    python -m trainer.evaluate --model_dir=runs/a --model_dir=runs/b --data_dir=TFDS_DIR --split=validation \\
        --output_dir=results/ensemble

Thresholds other than 0.5 are those chosen on the run's validation split (its metrics.json), never on
the set evaluated; an ensemble gets only 0.5. --calibrate applies each run's temperature
(calibration.json) before averaging. Galleries (errors; Grad-CAM for a single run) show the set's patches.
"""


def read_labels_csv(path: str) -> dict[str, int]:
    """id,label rows (labels 0 or 1); errors name the file and the row."""
    labels: dict[str, int] = {}
    try:
        f = epath.Path(path).open()
    except FileNotFoundError:
        raise errors.UsageError(f"--labels={path!r}: no such file") from None
    with f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or {"id", "label"} - {n.strip() for n in reader.fieldnames}:
            raise errors.UsageError(f"--labels={path!r}: expected a header with id and label, got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            if row["label"] not in ("0", "1"):
                raise errors.UsageError(f"--labels={path!r} line {line}: label {row['label']!r} is not 0 or 1")
            if row["id"] in labels:
                raise errors.UsageError(f"--labels={path!r} line {line}: id {row['id']!r} appears twice")
            labels[row["id"]] = int(row["label"])
    return labels


def _run_thresholds(model_dirs: list[str]) -> dict[str, float]:
    """One run's validation thresholds, to apply here; none for ensembles and for --refit runs."""
    from trainer import calibration

    if len(model_dirs) != 1:
        return {}
    try:
        return calibration.validation_thresholds(model_dirs[0])
    except calibration.NotHeldOut:
        return {}


def _trained_splits(model_dirs: list[str]) -> set[str]:
    """The splits the runs trained on (TrainConfig.train_splits of their config.json; train where it is missing)."""
    from trainer import config as config_lib

    splits = set()
    for d in model_dirs:
        path = epath.Path(d) / config_lib.CONFIG_FILE
        splits.update(config_lib.TrainConfig.from_json(path.read_text()).train_splits if path.exists() else ("train",))
    return splits


def evaluate_runs(
    model_dirs: list[str],
    output_dir: str,
    *,
    input_dir: str | None = None,
    labels_csv: str | None = None,
    data_dir: str | None = None,
    dataset: str = "pcam/full",
    split: str = "validation",
    tta: bool = False,
    calibrate: bool = False,
    batch_size: int = 256,
    seed: int = 0,
) -> dict:
    """Predicts the set with the runs (averaged), then writes the report into output_dir; returns its metrics."""
    from trainer import calibration, data, explain, inference, predict

    if (input_dir is None) == (data_dir is None):
        raise errors.UsageError("give either --input_dir with --labels, or --data_dir (with --split)")
    if input_dir is not None and not labels_csv:
        raise errors.UsageError("--input_dir needs --labels=CSV (id,label) for the patches in it")
    out = epath.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(str(out), os.W_OK):
        raise errors.UsageError(f"--output_dir={output_dir!r} is not writable")
    models = [inference.load_model(d) for d in model_dirs]
    temperatures = [calibration.read_temperature(d) for d in model_dirs] if calibrate else None
    if input_dir is not None:
        truth = read_labels_csv(labels_csv)
        files = predict.list_patch_files(input_dir)
        rejected: list = []
        ids, _, probs = inference.predict_batches(
            models, predict.read_folder(files, batch_size, rejected), tta=tta, temperatures=temperatures
        )
        if rejected:
            detail = "; ".join(f"{name}: {reason}" for name, reason, _ in rejected[:5])
            raise errors.UsageError(f"{len(rejected)} files in --input_dir={input_dir!r} could not be read ({detail})")
        unlabelled = sorted(set(ids) - set(truth))
        missing = sorted(set(truth) - set(ids))
        if unlabelled or missing:
            raise errors.UsageError(
                f"--input_dir and --labels disagree: {len(unlabelled)} files have no label "
                f"(e.g. {unlabelled[:3]}), {len(missing)} labels have no file (e.g. {missing[:3]})"
            )
        labels = np.array([truth[i] for i in ids])
        by_path = {p.stem: p for p in files}

        def images_for(wanted):
            from pcam_tfds.core import patches

            return {i: patches.read_patch(str(by_path[i])) for i in wanted}

        set_name = f"{input_dir} (labels {labels_csv})"
    else:
        builder = data.load_builder(data_dir, dataset)
        ds = data.eval_dataset(data.split_files(builder, split), batch_size, with_ids=True)
        ids, labels, probs = inference.predict_batches(
            models, ds.as_numpy_iterator(), tta=tta, temperatures=temperatures
        )
        if labels is None or (labels < 0).any():
            raise errors.UsageError(f"split {split!r} of {dataset} is unlabelled (label -1); evaluate a labelled split")

        def images_for(wanted):
            return collect_images(ds.as_numpy_iterator(), wanted)

        set_name = f"{dataset}:{split} ({data_dir})"
    held_out = input_dir is not None or split not in _trained_splits(model_dirs)
    name = models[0].name if len(models) == 1 else f"ensemble of {len(models)}"
    gradcam = explain.GradCam(models[0]) if len(models) == 1 else None
    metrics = write_report(
        out,
        name,
        ids,
        labels,
        probs,
        seed=seed,
        set_name=set_name,
        thresholds=_run_thresholds(model_dirs),
        fit_calibration=False,
        images_for=images_for,
        gradcam=gradcam,
        held_out=held_out,
    )
    metrics.update({"model_dirs": list(model_dirs), "tta": tta, "calibrated": calibrate})
    atomic_write_text(out / calibration.METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    return metrics


def define_flags(flag_values) -> None:
    from absl import flags

    fv = flag_values
    flags.DEFINE_multi_string(
        "model_dir", None, "Trainer run folder; several = their ensemble (mean probability).", flag_values=fv
    )
    flags.DEFINE_string(
        "input_dir", None, "Folder of patch files (.tif, .png, .jpg) to evaluate; needs --labels.", flag_values=fv
    )
    flags.DEFINE_string("labels", None, "id,label CSV of the patches in --input_dir.", flag_values=fv)
    flags.DEFINE_string(
        "data_dir", None, "TFDS data dir holding a built pcam dataset (instead of --input_dir).", flag_values=fv
    )
    flags.DEFINE_string("dataset", "pcam/full", "TFDS NAME/CONFIG with --data_dir.", flag_values=fv)
    flags.DEFINE_string("split", "validation", "Labelled split to evaluate with --data_dir.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where metrics.json, predictions.csv and the figures go.", flag_values=fv)
    flags.DEFINE_bool("tta", False, "Average the 8 flips and 90-degree rotations.", flag_values=fv)
    flags.DEFINE_bool("calibrate", False, "Apply each run's fitted temperature (calibration.json).", flag_values=fv)
    flags.DEFINE_integer("batch_size", 256, "Patches per prediction batch.", lower_bound=1, flag_values=fv)
    flags.mark_flags_as_required(["model_dir", "output_dir"], flag_values=fv)


def _main(argv) -> int:
    from absl import flags

    f = flags.FLAGS
    errors.no_arguments(argv)
    m = evaluate_runs(
        f.model_dir,
        f.output_dir,
        input_dir=f.input_dir,
        labels_csv=f.labels,
        data_dir=f.data_dir,
        dataset=f.dataset,
        split=f.split,
        tta=f.tta,
        calibrate=f.calibrate,
        batch_size=f.batch_size,
    )
    lo, hi = m["roc_auc_ci95"]
    print(
        f"{m['model']} on {m['set']}: ROC AUC {m['roc_auc']:.4f} (95% CI {lo:.4f}-{hi:.4f}), "
        f"AP {m['average_precision']:.4f}, accuracy at 0.5 {m['accuracy']:.4f}; wrote {f.output_dir}/metrics.json"
    )
    return 0


def main() -> None:
    """The console script `pcam-evaluate` (and `python -m trainer.evaluate`)."""
    from absl import flags

    define_flags(flags.FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
