"""Dense inference: a model's convolutional part run once over a whole slide region, not once per window.

    dense = DenseModel.of(model, patch=96, stride=32)      # NotDense(reason) where the model does not allow it
    predict = make_dense_fn([dense], stride=32, tta=False)
    probs = predict(region)                                 # (H, W, 3) 0..255 -> (rows, cols) window probabilities

A model qualifies when it is an optional centre crop, then a chain of local, translation-equivariant layers
(convolutions, pooling, activations, pixel-wise scaling, batch norm at inference; SPATIAL_LAYERS) whose
strides multiply to D, then GlobalAveragePooling2D, then any head. The window of the region at
(i * stride, j * stride) then maps to a block of the region's feature map starting at (i * stride/D,
j * stride/D), as large as one window's own map, so an average pool of that size and step stands for the
global pooling of every window at once, and the head runs on each pooled vector. Windows at stride 32 overlap
by two thirds, so each pixel is convolved once instead of up to nine times.

It is exact (`DenseModel.exact`) when no layer pads (--padding=valid): a window's map then depends on its own
pixels alone, and the region's map holds it unchanged (the ScanNet design). With 'same' padding a window's
own convolutions see zeros at its edges where the region has the neighbouring pixels, so the outermost cells
differ; trainer.slides.heatmap measures that difference on each slide before it uses dense inference.
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
    reduction: int  # D: the product of the spatial layers' strides
    patch: int
    cells: int = 0  # a window's own feature map is cells x cells
    margin: int = 0  # the centre crop's margin: pixels the model drops on each side of a window
    exact: bool = False  # no layer pads: dense inference equals per-window inference to float error

    @classmethod
    def of(cls, model: keras.Model, patch: int, stride: int) -> DenseModel:
        """Splits `model` at its GlobalAveragePooling2D; NotDense naming the layer or number that prevents it."""
        layers = model.layers
        gaps = [i for i, layer in enumerate(layers) if type(layer).__name__ == "GlobalAveragePooling2D"]
        if len(gaps) != 1:
            raise NotDense(f"{model.name}: {len(gaps)} GlobalAveragePooling2D layers, dense inference needs one")
        gap = gaps[0]
        prefix = layers[1:gap]
        crop = prefix[0] if prefix and type(prefix[0]).__name__ == "Cropping2D" else None
        margin = 0
        if crop is not None:
            (top, bottom), (left, right) = crop.cropping
            if len({top, bottom, left, right}) != 1:
                raise NotDense(f"{model.name}: its crop {crop.cropping} is not a centre crop with equal margins")
            margin = top
        chain = prefix[1:] if crop is not None else prefix
        previous = (crop if crop is not None else layers[0]).output
        for layer in chain:
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
        channels = model.input_shape[-1]
        image = keras.Input(shape=(None, None, channels), name="region")
        x = image
        for layer in chain:
            x = layer(x)
        spatial = keras.Model(image, x, name=f"{model.name}_spatial")
        head = keras.Model(layers[gap].output, model.output, name=f"{model.name}_head")
        seen = patch - 2 * margin  # what the chain sees of one window

        def side(n: int) -> int:
            return spatial.compute_output_shape((1, n, n, channels))[1] or 0

        reduction = 1
        for layer in chain:
            strides = getattr(layer, "strides", 1)
            reduction *= int(strides[0] if isinstance(strides, (tuple, list)) else strides)
        cells = side(seen)
        if cells <= 0:
            raise NotDense(f"{model.name}: its {seen}x{seen} input leaves no features")
        if stride % reduction:
            raise NotDense(f"stride {stride} is not a multiple of {model.name}'s reduction {reduction}")
        step = stride // reduction
        if side(seen + stride) != cells + step or side(seen + 2 * stride) != cells + 2 * step:
            raise NotDense(
                f"{model.name}: a region one stride larger than a window does not grow its map by {step} cells"
            )
        exact = not any(_pads(layer) for layer in chain)
        return cls(spatial, head, reduction, patch, cells, margin, exact)

    def windows(self, region: tf.Tensor, stride: int) -> tf.Tensor:
        """(H, W, 3) float32 -> (rows, cols) float32: the probability of each window of `region` at `stride`."""
        if self.margin:
            region = region[self.margin : -self.margin, self.margin : -self.margin]
        features = tf.cast(self.spatial(region[None], training=False), tf.float32)
        cells, step = self.cells, stride // self.reduction
        # The mean of each window's cells: GlobalAveragePooling2D of that window's own feature map.
        pooled = tf.nn.avg_pool2d(features, cells, step, "VALID")[0]
        rows, cols = tf.shape(pooled)[0], tf.shape(pooled)[1]
        probs = self.head(tf.reshape(pooled, [-1, pooled.shape[-1]]), training=False)
        return tf.reshape(tf.cast(probs, tf.float32), [rows, cols])


def _pads(layer) -> bool:
    """Whether `layer` pads its input: 'same' padding with a kernel or pool larger than one pixel."""
    if getattr(layer, "padding", "valid") != "same":
        return False
    size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None) or 1
    return max(size if isinstance(size, (tuple, list)) else (size,)) > 1


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
