"""Metrics of a tumour probability against 0/1 labels, in numpy alone: what metrics.json and compare report.

    m = compute_metrics(labels, scores, seed=0)         # the metrics.json record of a run or an evaluation
    test = delong_paired(labels, scores_a, scores_b)    # do two models' ROC AUCs on the same patches differ?
    fpr, tpr, thresholds = roc_curve(labels, scores)    # the curves behind the figures (trainer.evaluation.plots)

Labels are 0 (normal) and 1 (tumour), scores the tumour probability; a patch is called tumour when its score
is >= the threshold. The curves, average precision, log-loss and the classification report are scikit-learn's
(roc_curve, precision_recall_curve, average_precision_score, log_loss, classification_report), written again
here so that compare and every reader of a run's metrics need neither scikit-learn nor SciPy (importing this
module loads numpy only); tests/test_metrics.py checks each against scikit-learn on random scores with ties.
The ROC AUC is computed from counts of tied groups, not from the curve: one correctly rounded division, the
same number scikit-learn's trapezoids give to ~1e-15, and a bootstrap resample costs one bincount, no sort.
"""

from __future__ import annotations

import math

import numpy as np

CLASS_NAMES = ("normal", "tumour")
_Z95 = 1.959964  # the standard normal's 97.5% quantile


def _binary(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """labels as int64 0/1 and scores as float64, both 1-D of one non-empty length; ValueError naming what is wrong."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape or labels.size == 0:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal, non-empty 1-D arrays")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1; got {sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} scores are not finite (NaN or infinite)")
    return labels.astype(np.int64), scores


def _both_classes(labels: np.ndarray, what: str) -> None:
    if labels.min() == labels.max():
        raise ValueError(
            f"{what} needs both classes; all {labels.size} labels are {int(labels[0])} ({CLASS_NAMES[labels[0]]})"
        )


def _counts_at_thresholds(labels: np.ndarray, scores: np.ndarray):
    """(false positives, true positives, thresholds) at each distinct score, highest first: the counts of the
    patches with score >= that threshold (scikit-learn's _binary_clf_curve)."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(labels, dtype=np.float64)[last_of_each]
    fps = 1.0 + last_of_each - tps
    return fps, tps, scores[last_of_each]


def roc_curve(labels, scores, drop_intermediate: bool = True):
    """(false positive rate, true positive rate, thresholds), from (0, 0) at threshold +inf; as scikit-learn's.

    drop_intermediate drops the points on a straight line between their neighbours (they change neither the
    curve nor its area). A rate with no patches of its class is NaN, as in scikit-learn.
    """
    labels, scores = _binary(labels, scores)
    fps, tps, thresholds = _counts_at_thresholds(labels, scores)
    if drop_intermediate and fps.size > 2:
        corner = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        fps, tps, thresholds = fps[corner], tps[corner], thresholds[corner]
    fps, tps, thresholds = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def precision_recall_curve(labels, scores):
    """(precision, recall, thresholds) of the tumour class, recall decreasing to a last point (1, 0) that has no
    threshold; as scikit-learn's. With no tumour patches recall is 1 everywhere, as there."""
    labels, scores = _binary(labels, scores)
    fps, tps, thresholds = _counts_at_thresholds(labels, scores)
    called = tps + fps
    precision = np.divide(tps, called, out=np.zeros_like(tps), where=called != 0)
    recall = tps / tps[-1] if tps[-1] > 0 else np.ones_like(tps)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(labels, scores) -> float:
    """The precision-recall curve's step integral: sum over thresholds of (recall gained) x precision (scikit-learn's
    average_precision_score, which is not the trapezoid area)."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))  # max: a sum of zeros can be -0.0


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, group): the patches by ascending score, and for each of them, in that order, the index of its group
    of equal scores (0, 1, ...)."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    return order, np.r_[0, np.cumsum(ordered[1:] != ordered[:-1])]


def _auc_of_counts(group: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive scores above a negative) + P(equal) / 2, where positives[k] and negatives[k] count how often the
    k-th patch (in score order) is drawn as each; group as _tie_groups gives it."""
    pos, neg = np.bincount(group, positives), np.bincount(group, negatives)
    below = np.cumsum(neg) - neg  # negatives in the groups under each group
    return float(np.dot(pos, below + 0.5 * neg) / (pos.sum() * neg.sum()))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: the chance that a tumour patch scores above a normal one, ties counting half
    (Mann-Whitney U / (m n)). ValueError when the labels hold one class only: the area is then undefined."""
    labels, scores = _binary(labels, scores)
    _both_classes(labels, "ROC AUC")
    order, group = _tie_groups(scores)
    positive = labels[order].astype(np.float64)
    return _auc_of_counts(group, positive, 1.0 - positive)


def bootstrap_auc(labels, scores, seed: int, n: int = 1000, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval [low, high] of the ROC AUC over `n` resamples (with replacement) from `seed`.

    Resamples with one class only have no AUC and are skipped, so the interval of a tiny set comes from fewer
    resamples; [nan, nan] when every resample had one class (possible only for a handful of patches).
    ValueError when the labels themselves hold one class, or n or level is out of range.
    """
    labels, scores = _binary(labels, scores)
    _both_classes(labels, "a bootstrap interval of the ROC AUC")
    if n < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_auc: n={n} must be >= 1 and level={level} inside (0, 1)")
    rng = np.random.default_rng(seed)
    order, group = _tie_groups(scores)
    positive = labels[order].astype(np.float64)
    aucs = []
    for _ in range(n):
        drawn = np.bincount(rng.integers(0, labels.size, labels.size), minlength=labels.size)[order]
        pos, neg = drawn * positive, drawn * (1.0 - positive)
        if pos.any() and neg.any():
            aucs.append(_auc_of_counts(group, pos, neg))
    if not aucs:
        return [float("nan"), float("nan")]
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(aucs, tail)), float(np.percentile(aucs, 100 - tail))]


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x with ties given their mean rank (scipy.stats.rankdata's "average")."""
    order, group = _tie_groups(x)
    size = np.bincount(group)
    first = np.cumsum(size) - size  # 0-based rank of each group's first member
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = (first + (size - 1) / 2.0 + 1.0)[group]
    return ranks


def delong_paired(labels, scores_a, scores_b) -> dict:
    """DeLong's test of two correlated ROC AUCs on the same examples: the difference a - b, its 95% interval and
    the two-sided p-value (DeLong et al. 1988, with Sun & Xu's midrank computation)."""
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
        p = math.erfc(abs(diff) / sd / math.sqrt(2.0))  # 2 P(Z > |z|) for a standard normal Z
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "difference": diff,
        "difference_ci95": [diff - _Z95 * sd, diff + _Z95 * sd],
        "p_value": p,
        "num_examples": int(labels.size),
    }


def confusion_matrix(labels, predicted) -> np.ndarray:
    """[[true negatives, false positives], [false negatives, true positives]]: rows the true label (normal,
    tumour), columns the predicted one."""
    labels, predicted = np.asarray(labels).astype(int).ravel(), np.asarray(predicted).astype(int).ravel()
    if labels.shape != predicted.shape or not np.isin(labels, (0, 1)).all() or not np.isin(predicted, (0, 1)).all():
        raise ValueError(f"labels {labels.shape} and predictions {predicted.shape} must be equal 1-D arrays of 0 and 1")
    return np.bincount(2 * labels + predicted, minlength=4).reshape(2, 2)


def threshold_metrics(labels, scores, threshold: float) -> dict:
    """Accuracy, tumour-class precision, recall (sensitivity) and F1, specificity and the confusion matrix at
    `threshold` (a patch is called tumour when its score is >= threshold)."""
    labels, scores = _binary(labels, scores)
    (tn, fp), (fn, tp) = confusion_matrix(labels, scores >= threshold)
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


def youden_threshold(labels, scores) -> float:
    """The threshold that maximises Youden's J = sensitivity + specificity - 1 (the highest one, on ties)."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))  # the first point's threshold is +inf: no patch called tumour


def f1_threshold(labels, scores) -> float:
    """The threshold that maximises the tumour class's F1 (the lowest one, on ties)."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])


def _bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """Each score's equal-width bin in [0, 1]; a score of exactly 1 falls in the last bin."""
    return np.minimum((scores * bins).astype(int), bins - 1)


def reliability_bins(labels, scores, bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean probability, tumour rate, share of patches) of each of `bins` equal-width bins that holds patches."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    index = _bin_index(scores, bins)
    count = np.bincount(index, minlength=bins)
    used = count > 0
    mean_score = np.bincount(index, scores, minlength=bins)[used] / count[used]
    rate = np.bincount(index, labels, minlength=bins)[used] / count[used]
    return mean_score, rate, count[used] / scores.size


def expected_calibration_error(labels, scores, bins: int = 15) -> float:
    """ECE of the tumour probability: sum over `bins` equal-width bins of (share of patches) x |tumour rate -
    mean probability|. A score of exactly 1 falls in the last bin."""
    mean_score, rate, share = reliability_bins(labels, scores, bins)
    return float(np.sum(share * np.abs(rate - mean_score)))


def log_loss(labels, probs) -> float:
    """Mean binary cross-entropy, the probabilities clipped to [eps, 1 - eps] of float64 (scikit-learn's log_loss)."""
    labels, probs = _binary(labels, probs)
    eps = np.finfo(np.float64).eps
    probs = np.clip(probs, eps, 1 - eps)
    return float(-np.mean(np.where(labels == 1, np.log(probs), np.log1p(-probs))))


def calibration_metrics(labels, scores) -> dict:
    """Brier score, 15-bin ECE and log-loss (the probabilities clipped to [1e-7, 1 - 1e-7])."""
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    return {
        "brier": float(np.mean((scores - labels) ** 2)),
        "ece": expected_calibration_error(labels, scores),
        "log_loss": log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7)),
    }


def classification_report(labels, predicted) -> dict:
    """scikit-learn's classification_report(output_dict=True, zero_division=0) of 0/1 predictions: precision,
    recall, f1-score and support of each class (CLASS_NAMES), then accuracy, macro avg and weighted avg."""
    labels, predicted = np.asarray(labels).astype(int).ravel(), np.asarray(predicted).astype(int).ravel()
    matrix = confusion_matrix(labels, predicted)
    true, called, hits = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    rows = {}
    for c, name in enumerate(CLASS_NAMES):
        rows[name] = {
            "precision": float(hits[c] / called[c]) if called[c] else 0.0,
            "recall": float(hits[c] / true[c]) if true[c] else 0.0,
            "f1-score": float(2 * hits[c] / (true[c] + called[c])) if true[c] + called[c] else 0.0,
            "support": float(true[c]),
        }
    per_class = np.array([[rows[name][k] for k in ("precision", "recall", "f1-score")] for name in CLASS_NAMES])
    total = float(true.sum())
    return {
        **rows,
        "accuracy": float(hits.sum() / total),
        "macro avg": {
            **dict(zip(("precision", "recall", "f1-score"), per_class.mean(axis=0).tolist())),
            "support": total,
        },
        "weighted avg": {
            **dict(zip(("precision", "recall", "f1-score"), np.average(per_class, axis=0, weights=true).tolist())),
            "support": total,
        },
    }


def classification_report_text(labels, scores, threshold: float = 0.5) -> str:
    """The report at `threshold` as scikit-learn prints it (digits=4), for classification_report.txt."""
    labels, scores = _binary(labels, scores)
    report = classification_report(labels, (scores >= threshold).astype(int))
    width = len("weighted avg")  # scikit-learn's: the longest row heading
    text = " " * (width + 1) + "".join(f" {h:>9}" for h in ("precision", "recall", "f1-score", "support")) + "\n\n"
    for name in (*CLASS_NAMES, "accuracy", "macro avg", "weighted avg"):
        if name == "accuracy":  # one number, under f1-score, and the support
            total = int(report["macro avg"]["support"])
            text += f"\n{name:>{width}} " + f" {'':>9}" * 2 + f" {report[name]:>9.4f} {total:>9}\n"
        else:
            r = report[name]
            values = "".join(f" {r[k]:>9.4f}" for k in ("precision", "recall", "f1-score"))
            text += f"{name:>{width}} {values} {int(r['support']):>9}\n"
    return text


def compute_metrics(
    labels,
    scores,
    threshold: float = 0.5,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
) -> dict:
    """ROC AUC (+ bootstrap 95% interval), average precision, calibration, and metrics at several thresholds.

    `thresholds` ({name: value}) are applied as given, e.g. those chosen on a run's validation split when
    scoring another set; None chooses them here: Youden's J and the best F1 on these labels, which is
    right only for the split the thresholds are chosen on (validation). The top-level accuracy,
    per_class and confusion_matrix are at `threshold` (0.5). With one class only, the AUCs, their interval
    and the chosen thresholds are NaN or absent: they are undefined, the rest is not.
    """
    labels, scores = _binary(labels, scores)
    predicted = (scores >= threshold).astype(int)
    both = labels.min() != labels.max()
    report = classification_report(labels, predicted)
    if thresholds is None:
        chosen = {"youden": youden_threshold(labels, scores), "f1": f1_threshold(labels, scores)} if both else {}
        source = "chosen on these examples"
    else:
        chosen, source = dict(thresholds), "given (chosen on the run's validation split)"
    return {
        "num_examples": int(labels.size),
        "num_positive": int(labels.sum()),
        "roc_auc": roc_auc(labels, scores) if both else float("nan"),
        "roc_auc_ci95": bootstrap_auc(labels, scores, seed) if both else [float("nan"), float("nan")],
        "average_precision": average_precision(labels, scores) if both else float("nan"),
        **calibration_metrics(labels, scores),
        "accuracy": report["accuracy"],
        "threshold": threshold,
        "per_class": {
            name: {k: report[name][k] for k in ("precision", "recall", "f1-score", "support")} for name in CLASS_NAMES
        },
        # Rows: true label (normal, tumour); columns: predicted label.
        "confusion_matrix": confusion_matrix(labels, predicted).tolist(),
        "thresholds_source": source,
        "at_threshold": {
            name: threshold_metrics(labels, scores, t) for name, t in {"0.5": threshold, **chosen}.items()
        },
    }
