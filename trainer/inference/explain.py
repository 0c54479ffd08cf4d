"""Where a model looks: Grad-CAM heatmaps, drawn over the patches the report's galleries pick
(trainer.evaluation.report).

    cam = GradCam(model)                 # CNNs: the last conv block; transfer models: the base's last block
                                         # p4m: the last P4M map (its 8 orientations), so the heatmap turns with the image
    heatmaps = cam(images)               # (B, H, W) in 0..1, at image resolution

Grad-CAM (Selvaraju et al. 2017): the feature maps of the last spatial layer, weighted by the mean
gradient of the tumour logit over each map, summed, rectified and scaled to 0..1 per image. The logit
is computed from the input of the output layer, so a saturated sigmoid does not zero the gradients.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

OUTPUT_LAYER = "probability"  # every registered model's last Dense (trainer.models)


def _outer_output(layer: keras.layers.Layer):
    """The layer's output as a tensor of the model that calls it. A nested model's `.output` belongs to its own
    graph (the base of a transfer model), so the tensor is taken from its call in the outer graph."""
    nodes = getattr(layer, "_inbound_nodes", [])
    return nodes[-1].outputs[0] if nodes else layer.output


def last_spatial_layer(model: keras.Model) -> keras.layers.Layer:
    """The last top-level layer with a 4-D output (a conv block of the CNNs; the base model of transfer models)."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        output = _outer_output(layer)
        if output is not None and len(output.shape) == 4:
            return layer
    raise ValueError(f"model {model.name!r} has no layer with a 4-D output for Grad-CAM")


class GradCam:
    """Heatmaps of `model` (a registered model, 0..255 RGB in, one sigmoid out) for batches of images."""

    def __init__(self, model: keras.Model, layer: str | None = None):
        target = model.get_layer(layer) if layer else last_spatial_layer(model)
        head = model.get_layer(OUTPUT_LAYER)
        self.layer_name = target.name
        head_input = head._inbound_nodes[-1].arguments.args[0] if head._inbound_nodes else head.input
        self._features = keras.Model(model.inputs, [_outer_output(target), head_input])
        self._kernel, self._bias = head.kernel, head.bias

    def __call__(self, images) -> np.ndarray:
        images = tf.convert_to_tensor(images, tf.float32)
        with tf.GradientTape() as tape:
            maps, pre_output = self._features(images, training=False)
            tape.watch(maps)
            maps32 = tf.cast(maps, tf.float32)
            # Recomputed from maps32 so the tape sees the path maps -> logit in float32.
            logits = tf.cast(pre_output, tf.float32) @ tf.cast(self._kernel, tf.float32) + tf.cast(
                self._bias, tf.float32
            )
        grads = tf.cast(tape.gradient(logits, maps), tf.float32)
        weights = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * maps32, axis=-1))[..., None]
        cam = tf.image.resize(cam, tf.shape(images)[1:3], method="bilinear")[..., 0]
        peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
        return (cam / tf.maximum(peak, 1e-12)).numpy()
