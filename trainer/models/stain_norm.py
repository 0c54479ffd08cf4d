"""Reinhard colour normalisation as a Keras layer, so a saved model normalises the images it is given.

    x = ReinhardNormalization(name="stain_norm")(images)    # (B, 96, 96, 3) 0..255 -> 0..255, float32

`--stain_norm=reinhard` puts it first in the CNNs (baseline, tuned): every patch, in training, validation,
prediction and in an exported SavedModel alike, has its per-channel mean and standard deviation in
Reinhard et al. 2001's l-alpha-beta space moved to one target (the average of real PCam training patches,
`pcam_tfds.core.stains.REINHARD_TARGET_*`), which takes out the colour differences between slides and
labs before the network sees them. The matrices are the numpy reference's (`stains.reinhard`), which
the tests compare this layer against. It computes in float32 under mixed precision (logs and exps of
pixel values lose too much in bfloat16).
"""

from __future__ import annotations

import keras
import numpy as np

from pcam_tfds.core import stains


@keras.saving.register_keras_serializable(package="pcam")
class ReinhardNormalization(keras.layers.Layer):
    """0..255 RGB images (B, H, W, 3) -> the same images with each one's l-alpha-beta statistics set to
    (mean, std); float32 0..255 (clipped)."""

    def __init__(self, mean=stains.REINHARD_TARGET_MEAN, std=stains.REINHARD_TARGET_STD, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"ReinhardNormalization: mean {mean!r} and std {std!r} need 3 values each, std > 0")
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)

    def call(self, images):
        ops = keras.ops
        lms = ops.matmul(ops.cast(images, "float32") + 1.0, _constant(stains.LMS_FROM_RGB.T))
        lab = ops.matmul(ops.log(lms) / np.log(10.0), _constant(stains.LAB_FROM_LOG_LMS.T))
        m = ops.mean(lab, axis=(1, 2), keepdims=True)
        s = ops.maximum(ops.std(lab, axis=(1, 2), keepdims=True), stains.REINHARD_MIN_STD)
        lab = (lab - m) / s * _constant(self.std) + _constant(self.mean)
        lms = ops.power(10.0, ops.matmul(lab, _constant(stains.LOG_LMS_FROM_LAB.T)))
        rgb = ops.matmul(lms, _constant(stains.RGB_FROM_LMS.T)) - 1.0
        return ops.clip(rgb, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


def _constant(values) -> keras.KerasTensor:
    return keras.ops.convert_to_tensor(np.asarray(values, dtype=np.float32))
