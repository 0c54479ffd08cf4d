"""Dense inference: a model's convolutional part run once over a whole slide region, not once per window.

    dense = DenseModel.of(model, patch=96, stride=32)      # NotDense(reason) where the model does not allow it
    predict = make_dense_fn([dense], stride=32, tta=False)
    probs = predict(region)                                 # (H, W, 3) 0..255 -> (rows, cols) window probabilities

A model qualifies when it is a chain of local, translation-equivariant layers (convolutions, pooling,
activations, pixel-wise scaling, batch norm at inference; SPATIAL_LAYERS) that shrinks its input by a
factor D, then GlobalAveragePooling2D, then any head. The window of the region at (i * stride, j * stride)
then maps to a (patch/D)^2 block of the region's feature map starting at (i * stride/D, j * stride/D), so
an average pool of that size and step stands for the global pooling of every window at once, and the head
runs on each pooled vector. Windows at stride 32 overlap by two thirds, so each pixel is convolved once
instead of up to nine times.

It is not exact: a window's own convolutions see zero padding at its edges, where the region has the
neighbouring pixels, so the outermost cells of each window's feature map differ (for the baseline, the
ring of 44 of the 144 cells that global pooling averages). trainer.slide therefore measures the
difference on each slide before it uses this (--inference=auto), and its tests pin the coordinates with
a model whose 1x1 convolutions have no padding, where dense and windowed inference agree to rounding.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

# Layers that act on each position with a fixed, local neighbourhood; by class name, so that checking a
# model imports none of the project's custom layers.
SPATIAL_LAYERS = frozenset(
    {
        "Activation",
        "AveragePooling2D",
        "BatchNormalization",
        "Conv2D",
        "Dropout",
        "GroupBatchNormalization",
        "LeakyReLU",
        "MaxPooling2D",
        "Normalization",
        "P4MConv",
        "P4MLift",
        "ReLU",
        "Rescaling",
        "SpatialDropout2D",
    }
)


class NotDense(ValueError):
    """The model cannot run densely; the message says why (a fact about the model, not a user's mistake)."""


@dataclasses.dataclass(frozen=True)
class DenseModel:
    """A model split for dense inference: `spatial` (any H, W) -> features, `head` (pooled vector) -> probability."""

    spatial: keras.Model
    head: keras.Model
    reduction: int  # D: the spatial part's output is 1/D of its input on each side
    patch: int

    @classmethod
    def of(cls, model: keras.Model, patch: int, stride: int) -> DenseModel:
        """Splits `model` at its GlobalAveragePooling2D; NotDense naming the layer or number that prevents it."""
        layers = model.layers
        gaps = [i for i, layer in enumerate(layers) if type(layer).__name__ == "GlobalAveragePooling2D"]
        if len(gaps) != 1:
            raise NotDense(f"{model.name}: {len(gaps)} GlobalAveragePooling2D layers, dense inference needs one")
        gap = gaps[0]
        prefix = layers[1:gap]
        previous = layers[0].output
        for layer in prefix:
            kind = type(layer).__name__
            if kind not in SPATIAL_LAYERS:
                raise NotDense(
                    f"{model.name}: layer {layer.name!r} ({kind}) is not a local, translation-equivariant layer"
                )
            if layer.input is not previous:
                raise NotDense(f"{model.name}: layer {layer.name!r} does not take the previous layer's output alone")
            previous = layer.output
        if layers[gap].input is not previous:
            raise NotDense(f"{model.name}: the global pooling does not follow the convolutional chain")
        image = keras.Input(shape=(None, None, model.input_shape[-1]), name="region")
        x = image
        for layer in prefix:
            x = layer(x)
        spatial = keras.Model(image, x, name=f"{model.name}_spatial")
        head = keras.Model(layers[gap].output, model.output, name=f"{model.name}_head")
        side = spatial.compute_output_shape((1, patch, patch, model.input_shape[-1]))[1]
        if not side or patch % side:
            raise NotDense(f"{model.name}: its {patch}x{patch} input becomes {side}x{side} features, not 1/D of it")
        reduction = patch // side
        if stride % reduction:
            raise NotDense(f"stride {stride} is not a multiple of {model.name}'s reduction {reduction}")
        larger = patch + stride
        if spatial.compute_output_shape((1, larger, larger, model.input_shape[-1]))[1] * reduction != larger:
            raise NotDense(f"{model.name}: a {larger}-pixel region does not shrink by exactly {reduction}")
        return cls(spatial, head, reduction, patch)

    def windows(self, region: tf.Tensor, stride: int) -> tf.Tensor:
        """(H, W, 3) float32 -> (rows, cols) float32: the probability of each window of `region` at `stride`."""
        features = tf.cast(self.spatial(region[None], training=False), tf.float32)
        cells, step = self.patch // self.reduction, stride // self.reduction
        # The mean of each window's cells: GlobalAveragePooling2D of that window's own feature map.
        pooled = tf.nn.avg_pool2d(features, cells, step, "VALID")[0]
        rows, cols = tf.shape(pooled)[0], tf.shape(pooled)[1]
        probs = self.head(tf.reshape(pooled, [-1, pooled.shape[-1]]), training=False)
        return tf.reshape(tf.cast(probs, tf.float32), [rows, cols])


def transform(region: tf.Tensor, g: int) -> tf.Tensor:
    """Dihedral element g = 4 m + r on an (H, W, C) region: mirror its width if m, then rotate r quarter turns
    (trainer.models.gconv.transform, in TensorFlow)."""
    m, r = divmod(g, 4)
    return tf.image.rot90(tf.reverse(region, axis=[1]) if m else region, r)


def untransform(a: tf.Tensor, g: int) -> tf.Tensor:
    """The inverse of `transform(., g)` on a 2-D map."""
    m, r = divmod(g, 4)
    a = tf.image.rot90(a[..., None], (4 - r) % 4)[..., 0]
    return tf.reverse(a, axis=[1]) if m else a


def make_dense_fn(models: list[DenseModel], stride: int, tta: bool):
    """A tf.function region (H, W, 3) float32 0..255 -> (rows, cols) mean probability over the models (and,
    with tta, over the 8 flips and rotations of the region, each map turned back onto the region's grid)."""
    if not models:
        raise ValueError("make_dense_fn: no models given")
    elements = range(8) if tta else range(1)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def predict(region):
        total = 0.0
        for model in models:
            for g in elements:
                total += untransform(model.windows(transform(region, g), stride), g)
        return total / float(len(models) * len(elements))

    return predict
