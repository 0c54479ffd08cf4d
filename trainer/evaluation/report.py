"""The report of a model (or an ensemble) on a labelled set, written into a folder: metrics.json,
classification_report.txt, the predictions, the figures and galleries; and its TensorBoard summaries.

    scored = ScoredSet("validation", ids, labels, probs)
    metrics = write_report(model_dir, "baseline", scored, predictions_file=run_folder.VAL_PREDICTIONS, seed=0,
                           calibration=record, images_for=..., gradcam=explain.GradCam(model))

The trainer writes it for the validation split into the run folder (trainer.training.loop.finish), pcam-evaluate for
any labelled set into --output_dir (trainer.inference.evaluate). The file names are trainer.run_folder's. Fitting the
temperature is the trainer's (trainer.inference.calibration.fit_and_write); this module only draws and records it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text
from trainer import run_folder
from trainer.evaluation import files, metrics, plots
from trainer.inference import calibration as calibration_lib

GALLERY_SIZE = 8  # patches per gallery row: enough to see a pattern, small enough to read each one


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredSet:
    """Labelled patches and the tumour probability given to each: what one report is about.

    name: which patches these are, as metrics.json ("set") and every title say it. held_out: False when the
    model trained on them (`--refit`); recorded and said in every title, since such metrics flatter the model.
    """

    name: str
    ids: Sequence[str]
    labels: np.ndarray
    scores: np.ndarray
    held_out: bool = True

    def __post_init__(self):
        labels = np.asarray(self.labels).astype(int).ravel()
        scores = np.asarray(self.scores, dtype=np.float64).ravel()
        if not len(self.ids) == labels.size == scores.size:
            raise ValueError(f"{self.name}: {len(self.ids)} ids, {labels.size} labels and {scores.size} scores")
        object.__setattr__(self, "ids", list(self.ids))
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "scores", scores)

    @property
    def shown(self) -> str:
        return self.name if self.held_out else f"{self.name} (trained on, not held out)"


def write_report(
    out_dir,
    model_name: str,
    scored: ScoredSet,
    *,
    predictions_file: str,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
    calibration: dict | None = None,
    images_for: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
    gradcam=None,
    record: dict | None = None,
) -> dict:
    """Writes the report of `scored` into out_dir and returns metrics.json's contents; metrics.json is written
    once, last, so a folder that has it holds the whole report.

    predictions_file: the predictions' file name in out_dir (run_folder.VAL_PREDICTIONS in a run folder,
    run_folder.PREDICTIONS in an evaluation's). seed: the bootstrap's. thresholds: {name: value} chosen on
    the run's validation split, applied here instead of choosing them on these patches (None chooses them:
    only right for validation). calibration: the record of calibration.json, fitted on these patches; it goes
    into metrics.json and the reliability diagram shows the probabilities before and after the temperature.
    images_for(ids) -> {id: uint8 image}: with it, an error gallery (the most confident false positives and
    negatives) and, given a `gradcam` (trainer.inference.explain.GradCam), a Grad-CAM gallery over true positives and
    both kinds of error. record: more fields for metrics.json (what was evaluated, and how).
    """
    out = epath.Path(out_dir)
    name, shown, labels, scores = model_name, scored.shown, scored.labels, scored.scores
    m = metrics.compute_metrics(labels, scores, seed=seed, thresholds=thresholds)
    m.update({"model": name, "set": scored.name, "held_out": scored.held_out})
    if calibration is not None:
        m["calibration"] = calibration
        temperature = calibration["temperature"]
        curves = {
            "as trained": scores,
            f"temperature {temperature:.3f}": calibration_lib.apply_temperature(scores, temperature),
        }
        reliability_title = f"{name}: {shown} reliability, before and after scaling"
    else:
        curves, reliability_title = {name: scores}, f"{name}: {shown} reliability"
    m.update(record or {})
    files.write_predictions(out / predictions_file, scored.ids, labels, scores)
    atomic_write_text(out / run_folder.CLASSIFICATION_REPORT, _report_text(name, shown, m, labels, scores))
    plots.plot_reliability(labels, curves, out / run_folder.RELIABILITY_PNG, reliability_title)
    plots.plot_confusion_matrix(
        m["confusion_matrix"],
        out / run_folder.CONFUSION_MATRIX_PNG,
        f"{name}: {shown} confusion matrix (threshold 0.5)",
    )
    plots.plot_roc_curves({name: (labels, scores)}, out / run_folder.ROC_CURVE_PNG, f"{name}: {shown} ROC")
    plots.plot_precision_recall(
        labels, scores, out / run_folder.PRECISION_RECALL_PNG, f"{name}: {shown} precision-recall"
    )
    if images_for is not None:
        _write_galleries(out, name, scored, images_for, gradcam)
    atomic_write_text(out / run_folder.METRICS_FILE, json.dumps(m, indent=2) + "\n")
    return m


def _report_text(name: str, shown: str, m: dict, labels: np.ndarray, scores: np.ndarray) -> str:
    """classification_report.txt: the report at 0.5, then at the Youden and F1 thresholds where there are any."""
    text = f"{name}: {shown}, threshold 0.5\n\n" + metrics.classification_report_text(labels, scores)
    at = m["at_threshold"]
    for key in ("youden", "f1"):
        if key in at:
            text += (
                f"\n{name}: {shown}, {key} threshold {at[key]['threshold']:.4f} ({m['thresholds_source']})\n\n"
                + metrics.classification_report_text(labels, scores, at[key]["threshold"])
            )
    return text


def pick_examples(ids, labels, probs, threshold: float = 0.5, k: int = GALLERY_SIZE) -> dict[str, list[int]]:
    """Indices of the k most confident false positives and false negatives, and of the k most confident true
    positives (for Grad-CAM), at `threshold`."""
    labels = np.asarray(labels).astype(int).ravel()
    probs = np.asarray(probs, dtype=np.float64).ravel()
    predicted = probs >= threshold

    def top(mask, key):
        index = np.flatnonzero(mask)
        return index[np.argsort(key[index], kind="stable")][:k].tolist()

    return {
        "false positives": top(predicted & (labels == 0), -probs),  # highest probability first
        "false negatives": top(~predicted & (labels == 1), probs),  # lowest first
        "true positives": top(predicted & (labels == 1), -probs),
    }


def _write_galleries(out: epath.Path, name: str, scored: ScoredSet, images_for, gradcam) -> None:
    ids, scores = scored.ids, scored.scores
    picks = pick_examples(ids, scored.labels, scores)
    images = images_for(sorted({ids[i] for index in picks.values() for i in index}))
    rows = {
        f"most confident {kind}": [(ids[i], images[ids[i]], scores[i], None) for i in index]
        for kind, index in picks.items()
        if kind != "true positives"
    }
    plots.plot_gallery(
        rows, out / run_folder.ERROR_GALLERY_PNG, f"{name}: {scored.shown} errors (centre 32x32 outlined)"
    )
    if gradcam is None:
        return
    rows = {}
    for kind, index in picks.items():
        chosen = index[: max(1, GALLERY_SIZE * 3 // 4)]  # Grad-CAM costs a gradient per patch: fewer per row
        if not chosen:
            continue
        heat = gradcam(np.stack([images[ids[i]] for i in chosen]).astype(np.float32))
        rows[kind] = [(ids[i], images[ids[i]], scores[i], h) for i, h in zip(chosen, heat)]
    plots.plot_gallery(
        rows, out / run_folder.GRADCAM_GALLERY_PNG, f"{name}: Grad-CAM on {scored.shown} ({gradcam.layer_name})"
    )


def write_learning_curves(out_dir, model_name: str, history_csv, phase_starts: tuple[int, ...] = ()) -> None:
    """learning_curves.png from a run's epoch log; nothing when the run has none (it trained no epoch)."""
    if epath.Path(history_csv).exists():
        plots.plot_learning_curves(
            files.read_history(history_csv),
            epath.Path(out_dir) / run_folder.LEARNING_CURVES_PNG,
            f"{model_name}: learning curves",
            phase_starts,
        )


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


def collect_images(batches: Iterable[dict], wanted) -> dict[str, np.ndarray]:
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
