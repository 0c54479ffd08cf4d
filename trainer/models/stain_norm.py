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
        # The 3x3 colour matrices run as 1x1 convolutions and the statistics as means over (batch, pixels, 3):
        # on CPU both are several times faster than a broadcast matmul and moments over two middle axes.
        ops = keras.ops
        shape = ops.shape(images)
        lms = ops.conv(ops.cast(images, "float32") + 1.0, _kernel(stains.LMS_FROM_RGB))
        lab = ops.reshape(ops.conv(ops.log(lms), _kernel(stains.LAB_FROM_LOG_LMS, 1 / np.log(10.0))), (shape[0], -1, 3))
        m = ops.mean(lab, axis=1, keepdims=True)
        s = ops.sqrt(ops.mean(ops.square(lab - m), axis=1, keepdims=True))
        lab = (lab - m) * (_constant(self.std) / ops.maximum(s, stains.REINHARD_MIN_STD)) + _constant(self.mean)
        lms = ops.exp(ops.conv(ops.reshape(lab, shape), _kernel(stains.LOG_LMS_FROM_LAB, np.log(10.0))))
        return ops.clip(ops.conv(lms, _kernel(stains.RGB_FROM_LMS)) - 1.0, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


def _constant(values):
    return keras.ops.convert_to_tensor(np.asarray(values, dtype=np.float32))


def _kernel(matrix: np.ndarray, scale: float = 1.0):
    """y = matrix @ x at every pixel, as the kernel of a 1x1 convolution (height, width, in, out)."""
    return _constant((np.asarray(matrix).T * scale).reshape(1, 1, 3, 3))
