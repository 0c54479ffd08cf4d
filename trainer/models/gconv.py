"""P4M group convolutions (Cohen & Welling 2016) as Keras 3 layers: the 8 rotations and mirrors of the plane.

    x = P4MLift(8, 3)(images)           # (B, H, W, 3) -> (B, H, W, 8 * 8): 8 filters, each in 8 orientations
    x = P4MConv(16, 3)(x)               # (B, H, W, 8 * 8) -> (B, H, W, 16 * 8)
    x = GroupPool("max")(GlobalAveragePooling2D()(x))   # (B, 16 * 8) -> (B, 16): invariant

A P4M feature map keeps, for each of its C channels, one plane per group element g, laid out as channel
`c * 8 + g`. Each layer is one ordinary `conv2d` whose kernel is the learned filter expanded into its 8
transformed copies (the kernel transformation of the paper): the lifting layer rotates and mirrors the
filter; the group-to-group layer also permutes the filter's input orientations by g^-1, so that
transforming the input by h maps output plane g to plane h^-1 g, transformed by h:
`layer(T_h x)[..., c, g] == T_h(layer(x))[..., c, ELEMENTS.product[ELEMENTS.inverse[h]][g]]`
(tests/test_p4m.py checks it). The bias is one number per channel, shared by its 8 planes.

Exactness on a pixel grid needs the transforms to map the grid onto itself: odd kernels with stride 1 and
'same' padding (symmetric) or none ('valid'), 2x2 max-pooling on even-sized maps (the windows of
96 -> 48 -> 24 -> 12, or without padding 94 -> 92 -> 46 -> 44 -> 22 -> 20 -> 10, map onto windows) and
global pooling. Group elements g = (r, m) act on an
array's two spatial axes as rot90^r(mirror^m(a)), index g = 4 m + r.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

ORDER = 8  # |P4M|: 4 rotations x (identity, mirror)


def transform(a: np.ndarray, g: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Group element g = 4 m + r applied to a's spatial `axes`: mirror (reverse the second axis) if m, then
    rotate by r quarter turns (np.rot90's direction)."""
    m, r = divmod(g, 4)
    if m:
        a = np.flip(a, axis=axes[1])
    return np.rot90(a, r, axes=axes)


def _cayley() -> tuple[np.ndarray, np.ndarray]:
    """(product, inverse) with transform(a, product[a][b]) == transform(transform(a, b), a), from the action."""
    probe = np.arange(9).reshape(3, 3)  # no symmetry, so each element has its own image
    images = [transform(probe, g) for g in range(ORDER)]
    product = np.zeros((ORDER, ORDER), np.int32)
    for a in range(ORDER):
        for b in range(ORDER):
            composed = transform(images[b], a)
            product[a, b] = next(c for c in range(ORDER) if np.array_equal(images[c], composed))
    inverse = np.array([int(np.flatnonzero(product[a] == 0)[0]) for a in range(ORDER)], np.int32)
    return product, inverse


PRODUCT, INVERSE = _cayley()


def _spatial_index(k: int) -> np.ndarray:
    """(8, k*k): for each g, the flat source position of each position of the transformed k x k filter."""
    grid = np.arange(k * k).reshape(k, k)
    return np.stack([transform(grid, g).ravel() for g in range(ORDER)])


def _check_kernel(kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size={kernel_size}: P4M layers need an odd kernel (a centre pixel) to be exact")


class _P4MBase(keras.layers.Layer):
    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        use_bias: bool = True,
        kernel_initializer="he_normal",
        padding: str = "same",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_kernel(kernel_size)
        if padding not in ("same", "valid"):
            raise ValueError(f"padding={padding!r}: choose same or valid")
        self.padding = padding
        if filters < 1:
            raise ValueError(f"filters={filters}: need at least one group channel")
        self.filters = filters
        self.kernel_size = kernel_size
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _conv(self, inputs, kernel):
        kernel = ops.cast(kernel, self.compute_dtype)
        y = ops.conv(inputs, kernel, strides=1, padding=self.padding)
        if self.use_bias:
            # One bias per channel, shared by its 8 planes (channel c * 8 + g), so it commutes with the group.
            y = y + ops.repeat(ops.cast(self.bias, self.compute_dtype), ORDER)
        return y

    def _add_bias(self):
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def compute_output_shape(self, input_shape):
        if self.padding == "same":
            return (*input_shape[:-1], self.filters * ORDER)
        shrink = self.kernel_size - 1
        batch, height, width = input_shape[:3]
        return (
            batch,
            None if height is None else height - shrink,
            None if width is None else width - shrink,
            self.filters * ORDER,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "use_bias": self.use_bias,
            "padding": self.padding,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="pcam")
class P4MLift(_P4MBase):
    """Image (B, H, W, Cin) -> P4M map (B, H, W, filters * 8): each filter correlated in its 8 orientations."""

    def build(self, input_shape):
        k, cin = self.kernel_size, int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, cin, self.filters), initializer=self.kernel_initializer
        )
        self._add_bias()
        self._index = _spatial_index(k)

    def expanded_kernel(self):
        """(k, k, Cin, filters * 8): output channel c * 8 + g is filter c transformed by g."""
        k, cin = self.kernel_size, self.kernel.shape[2]
        flat = ops.reshape(self.kernel, (k * k, cin, self.filters))
        copies = ops.take(flat, self._index.ravel(), axis=0)  # (8 * k * k, Cin, C): g-major
        copies = ops.reshape(copies, (ORDER, k, k, cin, self.filters))
        return ops.reshape(ops.transpose(copies, (1, 2, 3, 4, 0)), (k, k, cin, self.filters * ORDER))

    def call(self, inputs):
        return self._conv(inputs, self.expanded_kernel())


@keras.saving.register_keras_serializable(package="pcam")
class P4MConv(_P4MBase):
    """P4M map (B, H, W, Cin * 8) -> P4M map (B, H, W, filters * 8), a group correlation on P4M.

    Output plane g uses the filter transformed by g with its input orientations g' read from g^-1 g'.
    """

    def build(self, input_shape):
        k = self.kernel_size
        if input_shape[-1] % ORDER:
            raise ValueError(f"P4MConv input has {input_shape[-1]} channels, not a multiple of {ORDER} (a P4M map)")
        self.in_filters = int(input_shape[-1]) // ORDER
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, self.in_filters, ORDER, self.filters), initializer=self.kernel_initializer
        )
        self._add_bias()
        # For each g, the source (position, orientation) of each (position, orientation) of the expanded filter.
        spatial = _spatial_index(k)  # (8, k*k)
        self._index = np.stack(
            [(spatial[g][:, None] * ORDER + PRODUCT[INVERSE[g]][None, :]).ravel() for g in range(ORDER)]
        )  # (8, k*k*8)

    def expanded_kernel(self):
        """(k, k, Cin * 8, filters * 8): input channel c' * 8 + g', output channel c * 8 + g."""
        k, cin, c = self.kernel_size, self.in_filters, self.filters
        flat = ops.reshape(ops.transpose(self.kernel, (0, 1, 3, 2, 4)), (k * k * ORDER, cin, c))
        copies = ops.take(flat, self._index.ravel(), axis=0)  # (8 * k*k*8, Cin, C)
        copies = ops.reshape(copies, (ORDER, k, k, ORDER, cin, c))  # (g, u, v, g', c', c)
        return ops.reshape(ops.transpose(copies, (1, 2, 4, 3, 5, 0)), (k, k, cin * ORDER, c * ORDER))

    def call(self, inputs):
        return self._conv(inputs, self.expanded_kernel())


@keras.saving.register_keras_serializable(package="pcam")
class GroupBatchNormalization(keras.layers.BatchNormalization):
    """Batch norm of a P4M map whose statistics, scale and shift are shared by the 8 planes of each channel
    (per-plane statistics would differ between orientations and break the equivariance).

    The same arithmetic as Keras' BatchNormalization over the map folded to (B, H, W * 8, C), without the
    fold: the moments are taken per plane in the map's own layout (float32), pooled over each channel's 8
    planes (equal counts, so the pooled mean of E[x] and E[x^2] is the channel's), and the normalization is
    applied as one scale and shift per plane in the compute dtype, saving two transposes of the whole map and
    its float32 copy (bench/RESULTS.md).
    """

    def __init__(self, **kwargs):
        kwargs.pop("axis", None)
        for option in ("renorm", "synchronized"):
            if kwargs.get(option):
                raise ValueError(f"GroupBatchNormalization does not support {option}=True")
        super().__init__(axis=-1, **kwargs)

    def build(self, input_shape):
        if input_shape[-1] % ORDER:
            raise ValueError(f"GroupBatchNormalization input has {input_shape[-1]} channels, not a multiple of {ORDER}")
        super().build((*input_shape[:-1], input_shape[-1] // ORDER))
        # BatchNormalization.build pins the channel axis to C; the layer itself takes C * 8.
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: int(input_shape[-1])})

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError("GroupBatchNormalization does not take a mask")
        c = inputs.shape[-1] // ORDER
        if training and self.trainable:
            x = ops.cast(inputs, "float32")
            # Channel c's moments are the means over its 8 planes of each plane's moments (c * 8 + g layout).
            mean = ops.mean(ops.reshape(ops.mean(x, axis=(0, 1, 2)), (c, ORDER)), axis=-1)
            square = ops.mean(ops.reshape(ops.mean(ops.square(x), axis=(0, 1, 2)), (c, ORDER)), axis=-1)
            # E[x^2] - E[x]^2 with the gradient through both terms: the gradient of tf.nn.moments' variance.
            variance = ops.maximum(square - ops.square(mean), 0.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            mean = ops.cast(self.moving_mean, "float32")
            variance = ops.cast(self.moving_variance, "float32")
        scale = ops.rsqrt(variance + self.epsilon)
        if self.scale:
            scale = scale * ops.cast(self.gamma, "float32")
        shift = -mean * scale
        if self.center:
            shift = shift + ops.cast(self.beta, "float32")
        scale = ops.cast(ops.repeat(scale, ORDER), self.compute_dtype)
        shift = ops.cast(ops.repeat(shift, ORDER), self.compute_dtype)
        return ops.cast(inputs, self.compute_dtype) * scale + shift

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.pop("axis", None)
        return config


@keras.saving.register_keras_serializable(package="pcam")
class GroupPool(keras.layers.Layer):
    """(..., C * 8) -> (..., C): the mean or max over each channel's 8 planes, invariant to their permutation."""

    def __init__(self, mode: str = "max", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("max", "mean"):
            raise ValueError(f"GroupPool mode={mode!r}: choose max or mean")
        self.mode = mode

    def call(self, inputs):
        c = inputs.shape[-1] // ORDER
        x = ops.reshape(inputs, (-1, *inputs.shape[1:-1], c, ORDER))
        return ops.max(x, axis=-1) if self.mode == "max" else ops.mean(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // ORDER)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
