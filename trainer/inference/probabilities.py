"""Probabilities from one or several trained models, optionally with 8-fold test-time augmentation.

Shared by training (validation predictions for metrics.json) and trainer.inference.predict (submissions).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from trainer import augment, errors, run_folder, saved_layers
from trainer import models as registry


def load_model(model_dir: str) -> keras.Model:
    """RUN_DIR/model.keras, uncompiled (inference needs no optimizer)."""
    saved_layers.register()  # the project's layers the model may hold (P4M, stain normalisation, ImageNet preprocessing)
    path = f"{model_dir.rstrip('/')}/{run_folder.MODEL_FILE}"
    if not tf.io.gfile.exists(path):
        raise errors.MissingInput(f"{path} does not exist: is {model_dir!r} a finished trainer run folder?")
    return keras.models.load_model(path, compile=False)


def scale_probabilities(p: tf.Tensor, temperature: float) -> tf.Tensor:
    """sigmoid(logit(p) / T) in TensorFlow: trainer.inference.calibration.apply_temperature inside a graph."""
    p = tf.clip_by_value(p, 1e-7, 1.0 - 1e-7)
    return tf.sigmoid((tf.math.log(p) - tf.math.log1p(-p)) / temperature)


def make_predict_fn(models: Sequence[keras.Model], tta: bool, temperatures: Sequence[float] | None = None):
    """A tf.function images (B, H, W, 3) float32 0..255 -> mean probability (B,) over models (and the 8 TTA views).

    temperatures: one per model; each model's probabilities become sigmoid(logit(p) / T) before averaging
    (trainer.inference.calibration).
    """
    if not models:
        raise ValueError("make_predict_fn: no models given")
    if temperatures is not None and len(temperatures) != len(models):
        raise ValueError(f"{len(temperatures)} temperatures for {len(models)} models")

    @tf.function(reduce_retracing=True)
    def predict(images):
        views = augment.all_dihedral(images) if tta else [images]
        total = 0.0
        for m, model in enumerate(models):
            for view in views:
                p = tf.cast(tf.reshape(model(view, training=False), [-1]), tf.float32)
                if temperatures is not None:
                    p = scale_probabilities(p, temperatures[m])
                total += p
        return total / float(len(models) * len(views))

    return predict


def predict_batches(
    models: Sequence[keras.Model],
    batches: Iterable[dict],
    tta: bool = False,
    temperatures: Sequence[float] | None = None,
):
    """Runs over {"image", "id"[, "label"]} batches; returns (ids as str, labels or None, probabilities).

    With tta, models that are all invariant by construction (trainer.models.invariant: their model name is a
    registered invariant model) are run once: the 8 views would give the same answer.
    """
    if tta and all(registry.invariant(m.name) for m in models):
        names = ", ".join(sorted({m.name for m in models}))
        print(f"--tta: {names} is invariant to the 8 flips and rotations, so TTA is one pass", file=sys.stderr)
        tta = False
    predict = make_predict_fn(models, tta, temperatures)
    ids, labels, probs = [], [], []
    for batch in batches:
        probs.append(predict(tf.cast(batch["image"], tf.float32)).numpy())
        ids.extend(i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(batch["id"]).tolist())
        if "label" in batch:
            labels.append(np.asarray(batch["label"]).ravel())
    probs_arr = np.concatenate(probs) if probs else np.zeros([0], np.float32)
    labels_arr = np.concatenate(labels) if labels else None
    return ids, labels_arr, np.clip(probs_arr, 0.0, 1.0)
