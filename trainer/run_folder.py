"""A run folder: the names of its files, and a lock so that one process owns it at a time.

    with RunLock(model_dir, "pcam-train ..."):      # a second trainer or tuner here is refused at once
        ...
    model_dir / METRICS_FILE                         # what the trainer and pcam-evaluate write, compare reads

The lock is pcam_tfds.core.folder_lock's (RUN_DIR/.lock, naming its holder; stale locks of dead processes
are taken over). It imports no Keras, so readers of a run folder (pcam-compare) stay light; the epoch log
that training writes into it is trainer.training.epoch_log.
"""

from __future__ import annotations

from pcam_tfds.core.folder_lock import LOCK_FILE, FolderBusy, FolderLock, atomic_path, atomic_write_text

# The trainer's names for them.
RunLock, RunFolderBusy = FolderLock, FolderBusy

# What training writes first and reads to resume. The trainer's own state lives in STATE_DIR (trainer.training.phases).
CONFIG_FILE = "config.json"  # the run's TrainConfig (trainer.config.restart), written before anything trains
DATASET_FILE = "dataset.json"  # what the run trains on: a restart on other data is refused
STATE_DIR = "state"  # STATE_FILE and the last epoch's weights: where a killed run resumes
STATE_FILE = "state.json"
BEST_WEIGHTS = "best.weights.h5"  # the best validation epoch's weights
MODEL_FILE = "model.keras"  # the finished model, what predict, evaluate, export and pcam-slide load

# The files of a run folder that its evaluation writes and the other commands read. An evaluation's
# --output_dir (pcam-evaluate) holds the same report, with PREDICTIONS instead of VAL_PREDICTIONS. These
# names are on disk in every finished run: changing one orphans existing run folders.
HISTORY_CSV = "training_log.csv"
METRICS_FILE = "metrics.json"
CALIBRATION_FILE = "calibration.json"
CLASSIFICATION_REPORT = "classification_report.txt"
VAL_PREDICTIONS = "val_predictions.csv"  # a trainer run's validation split
PREDICTIONS = "predictions.csv"  # the set that pcam-evaluate scored
PREDICTION_FILES = (VAL_PREDICTIONS, PREDICTIONS)  # either marks a folder that pcam-compare can read
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
ROC_CURVE_PNG = "roc_curve.png"
PRECISION_RECALL_PNG = "precision_recall.png"
RELIABILITY_PNG = "reliability.png"
LEARNING_CURVES_PNG = "learning_curves.png"
ERROR_GALLERY_PNG = "error_gallery.png"
GRADCAM_GALLERY_PNG = "gradcam_gallery.png"
EVALUATION_LOGS = "logs/evaluation"  # the evaluation's TensorBoard summaries

__all__ = [
    "BEST_WEIGHTS",
    "CALIBRATION_FILE",
    "CONFIG_FILE",
    "DATASET_FILE",
    "MODEL_FILE",
    "STATE_DIR",
    "STATE_FILE",
    "CLASSIFICATION_REPORT",
    "CONFUSION_MATRIX_PNG",
    "ERROR_GALLERY_PNG",
    "EVALUATION_LOGS",
    "GRADCAM_GALLERY_PNG",
    "HISTORY_CSV",
    "LEARNING_CURVES_PNG",
    "LOCK_FILE",
    "METRICS_FILE",
    "PRECISION_RECALL_PNG",
    "PREDICTIONS",
    "PREDICTION_FILES",
    "RELIABILITY_PNG",
    "ROC_CURVE_PNG",
    "VAL_PREDICTIONS",
    "RunFolderBusy",
    "RunLock",
    "atomic_path",
    "atomic_write_text",
]
