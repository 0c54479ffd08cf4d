"""What resnet50 and densenet169 share: ImageNet preprocessing inside the model, loading the base with
clear errors, a new head, and the seed notebook's freeze / partial-unfreeze schedule.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable

import keras

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import errors

BASE_LAYER = "base"
# Waiting longer than this for a weights download means there is no usable network; fail instead of hanging.
DOWNLOAD_TIMEOUT_S = 60


class WeightsUnavailableError(errors.UsageError, RuntimeError):
    """ImageNet weights could not be loaded (typically: no internet and nothing in the Keras cache)."""


@keras.saving.register_keras_serializable(package="pcam")
class ImagenetPreprocess(keras.layers.Layer):
    """`keras.applications.imagenet_utils.preprocess_input` as a layer, so saved models take 0..255 RGB.

    mode "caffe" (ResNet50): RGB -> BGR, minus the ImageNet channel means; mode "torch" (DenseNet):
    scaled to 0..1, minus mean, divided by std per channel.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "torch"):
            raise ValueError(f"mode={mode!r}: choose caffe or torch")
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = keras.ops.flip(x, axis=-1)  # RGB -> BGR
            mean = keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=self.compute_dtype)
            return x - mean
        mean = keras.ops.convert_to_tensor([0.485, 0.456, 0.406], dtype=self.compute_dtype)
        std = keras.ops.convert_to_tensor([0.229, 0.224, 0.225], dtype=self.compute_dtype)
        return (x / 255.0 - mean) / std

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def load_base(application: Callable, name: str, input_shape, weights: str | None) -> keras.Model:
    """`application(include_top=False, ...)` with weights "imagenet", None or a path to a .h5 file.

    Keras looks for ImageNet weights in its cache ($KERAS_HOME/models, default ~/.keras/models) and
    downloads them only when missing; without internet that download fails, and this says what to do.
    """
    file_name = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    if weights not in (None, "imagenet") and not os.path.exists(weights):
        raise ValueError(f"weights={weights!r}: no such file; choose 'imagenet', None or a path to {file_name}")
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return application(include_top=False, weights=weights, input_shape=tuple(input_shape), name=BASE_LAYER)
    except Exception as e:  # keras.utils.get_file raises a bare Exception("URL fetch failure ...")
        if weights != "imagenet":
            raise
        keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
        raise WeightsUnavailableError(
            f"could not load the ImageNet weights of {name} ({type(e).__name__}: {e}). Keras downloads them "
            f"into {os.path.join(keras_home, 'models', file_name)} on first use, which needs internet. "
            f"Copy {file_name} there from a machine that has it (keras.applications downloads it), or pass "
            f"--weights=/path/to/{file_name}, or --weights=none to train from scratch."
        ) from e


def transfer_model(
    application: Callable,
    name: str,
    preprocess_mode: str,
    input_shape=PATCH_SHAPE,
    weights: str | None = "imagenet",
    dropout: float = 0.5,
) -> keras.Model:
    """Preprocessing, the application's convolutional base (frozen), global average pooling, dropout, sigmoid.

    A pretrained base is called with training=False, so its BatchNormalization layers keep their ImageNet
    statistics even after unfreezing (keras-io's fine-tuning guide; updating them on small batches of
    a different domain wrecks what was learnt). A base trained from scratch updates them.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = ImagenetPreprocess(preprocess_mode, name="preprocess")(inputs)
    base = load_base(application, name, input_shape, weights)
    base.trainable = False
    # Pretrained: batch norm keeps its ImageNet statistics. From scratch (weights None) there are none to
    # keep, so batch norm runs as usual (batch statistics in training, moving averages at inference).
    x = base(x, training=False) if weights is not None else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name=name)


def freeze_base(model: keras.Model) -> None:
    """Phase 1: only the new head trains."""
    model.get_layer(BASE_LAYER).trainable = False


def unfreeze_base(model: keras.Model, num_layers: int | None, train_batch_norm: bool = False) -> int:
    """Phase 2: the last `num_layers` layers of the base train (all when None); BatchNormalization stays frozen
    unless `train_batch_norm` (a base trained from scratch, which has no pretrained statistics to keep).

    Returns the number of base layers that hold trainable weights afterwards.
    """
    base = model.get_layer(BASE_LAYER)
    base.trainable = True
    layers = base.layers
    first = 0 if num_layers is None else max(len(layers) - num_layers, 0)
    for i, layer in enumerate(layers):
        layer.trainable = i >= first and (train_batch_norm or not isinstance(layer, keras.layers.BatchNormalization))
    return sum(1 for layer in layers if layer.trainable and layer.trainable_weights)
