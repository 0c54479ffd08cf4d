"""Temperature scaling: one number T, fitted on the validation split, that makes probabilities honest.

    temperature = fit_temperature(val_labels, val_probs)        # T > 1 softens an over-confident model
    calibrated = apply_temperature(test_probs, temperature)     # sigmoid(logit(p) / T)

Dividing the logit by T > 0 keeps the order of the scores, so ROC AUC (what Kaggle scores) is
unchanged; only the probabilities move (Guo et al. 2017). The trainer fits T after training and stores
it in RUN_DIR/calibration.json (`fit_and_write`); `trainer.inference.predict --calibrate` and `trainer.inference.evaluate
--calibrate` apply it.

The run's other choices made on validation, its Youden and F1 thresholds (RUN_DIR/metrics.json), are
read here too, by `validation_thresholds`, for `trainer.inference.predict --hard_labels` and `trainer.inference.evaluate`.
"""

from __future__ import annotations

import json

import numpy as np
from etils import epath
from scipy import optimize

from pcam_tfds.core.folder_lock import atomic_write_text
from trainer import errors, run_folder
from trainer.evaluation import metrics

_EPS = 1e-7


def logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit(probs) / temperature))


def _nll(labels: np.ndarray, logits: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + exp(-z)) for y = 1 and log(1 + exp(z)) for y = 0, without overflow.
    return float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -z, z))))


def fit_temperature(labels: np.ndarray, probs: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the log-loss of sigmoid(logit(probs) / T) on these labels."""
    labels = np.asarray(labels).astype(int).ravel()
    logits = logit(probs).ravel()
    if labels.shape != logits.shape or labels.size == 0:
        raise ValueError(f"labels {labels.shape} and probabilities {logits.shape} must be equal, non-empty")
    if len(np.unique(labels)) < 2:
        raise ValueError("fitting a temperature needs both labels among the examples")
    result = optimize.minimize_scalar(
        lambda log_t: _nll(labels, logits, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def write(model_dir, temperature: float, fitted_on: str, num_examples: int, before: dict, after: dict) -> dict:
    record = {
        "temperature": temperature,
        "fitted_on": fitted_on,
        "num_examples": num_examples,
        "before": before,
        "after": after,
    }
    path = epath.Path(model_dir) / run_folder.CALIBRATION_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")  # over an earlier finish of a resumed run
    return record


def fit_and_write(model_dir, labels, probs, fitted_on: str = "validation") -> dict | None:
    """Fits the temperature on these examples and writes RUN_DIR/calibration.json; returns its record, with the
    Brier score, ECE and log-loss before and after. None, and nothing written, when the labels hold one class:
    no temperature can be fitted there."""
    labels = np.asarray(labels).astype(int).ravel()
    if len(np.unique(labels)) < 2:
        return None
    temperature = fit_temperature(labels, probs)
    return write(
        model_dir,
        temperature,
        fitted_on,
        int(labels.size),
        metrics.calibration_metrics(labels, probs),
        metrics.calibration_metrics(labels, apply_temperature(probs, temperature)),
    )


def read_temperature(model_dir) -> float:
    """RUN_DIR's fitted temperature; a clear error for runs trained before calibration existed."""
    path = epath.Path(model_dir) / run_folder.CALIBRATION_FILE
    if not path.exists():
        raise errors.MissingInput(
            f"{path} does not exist: this run has no fitted temperature (runs fit one on validation when "
            "they finish; older runs, and --refit runs, which trained on validation, do not)"
        )
    return float(json.loads(path.read_text())["temperature"])


class NotHeldOut(errors.UsageError):
    """The run trained on its validation split (--refit): what it chose there is biased."""


def validation_thresholds(model_dir) -> dict[str, float]:
    """RUN_DIR's Youden and F1 thresholds, chosen on its validation split (metrics.json "at_threshold").

    {} where the run recorded none (no metrics.json: it has not finished; older runs). NotHeldOut for a
    --refit run: its validation patches were training patches, so thresholds chosen on them flatter it.
    """
    path = epath.Path(model_dir) / run_folder.METRICS_FILE
    if not path.exists():
        return {}
    metrics = json.loads(path.read_text())
    if not metrics.get("held_out", True):
        raise NotHeldOut(
            f"{model_dir} is a --refit run: its thresholds were chosen on validation patches it trained on"
        )
    at = metrics.get("at_threshold", {})
    return {name: float(at[name]["threshold"]) for name in ("youden", "f1") if name in at}
