"""Batched image augmentation for tf.data: `hed`, `dihedral`, `seed` (the notebook's) and `none`.

Where it runs, and why: in the tf.data pipeline on the host CPU, on whole batches (one vectorised op per
batch), beside the train step rather than inside it as model layers: prefetch overlaps the two, and the
saved model stays a pure function of the image. The seed notebook's Keras layers resample every pixel
(rotation, zoom), one reason `dihedral` is the default. Measurements: bench/RESULTS.md, "Trainer input
pipeline and where augmentation runs" and "Throughput: bfloat16 and the augmentations".

On a GPU host where the CPU cores cannot keep up, `--augment_on=device` (`on_device`) runs the same
functions inside the compiled train step instead: the host then only parses and ships uint8 batches.
Only the step that trains augments; validation, prediction and the saved model never do.

Functions take images of shape (batch, H, W, 3) (dihedral: any dtype; the jitter: float32 0..255) and a stateless seed
(shape [2] int tensor), so a run's augmentations are reproducible from its --seed.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Ruifrok & Johnston's stain vectors and the optical-density reference, shared with the EDA report.
from pcam_tfds.core.stains import OD_REFERENCE as _OD_REFERENCE
from pcam_tfds.core.stains import RGB_FROM_HED as _RGB_FROM_HED
from trainer.config.choices import AUGMENTATIONS


def _per_image(seed, batch: int, salt: int) -> tf.Tensor:
    """(batch,) uniform [0, 1) numbers drawn from `seed` and `salt`."""
    return tf.random.stateless_uniform([batch], seed=tf.stack([seed[0], seed[1] + salt]))


def dihedral(images: tf.Tensor, seed) -> tf.Tensor:
    """A random element of the dihedral group D4 per image: the 8 flips and 90-degree rotations.

    They map the centre 32x32 onto itself, so the label holds. Needs square images with a static size;
    any dtype (the pipeline runs it on uint8, before the cast: 4x less memory to move). One gather
    with a per-image pixel permutation, not selects between flipped and transposed copies.
    """
    size, channels = images.shape[1], images.shape[3]
    if size is None or size != images.shape[2]:
        raise ValueError(f"dihedral needs square images of static size, got shape {images.shape}")
    batch = tf.shape(images)[0]
    grid = tf.reshape(tf.range(size * size), [1, size, size, 1])
    permutations = tf.reshape(tf.stack(all_dihedral(grid)), [8, size * size])  # pixel source index per view
    choice = tf.random.stateless_uniform([batch], seed=tf.stack([seed[0], seed[1] + 0]), maxval=8, dtype=tf.int32)
    flat = tf.reshape(images, [batch, size * size, channels])
    out = tf.gather(flat, tf.gather(permutations, choice), batch_dims=1)
    return tf.reshape(out, tf.shape(images))


def all_dihedral(images: tf.Tensor) -> list[tf.Tensor]:
    """The 8 dihedral transforms of a batch (identity first), for test-time augmentation."""
    out = []
    for transpose in (False, True):
        x = tf.transpose(images, [0, 2, 1, 3]) if transpose else images
        for flip_h in (False, True):
            y = tf.reverse(x, axis=[2]) if flip_h else x
            out.extend([y, tf.reverse(y, axis=[1])])
    return out


# RGB -> YIQ: Y is luma, (I, Q) the chroma plane; a rotation there shifts hue, a scaling changes saturation.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def colour_matrices(saturation_factor: tf.Tensor, hue_turns: tf.Tensor) -> tf.Tensor:
    """(B, 3, 3) RGB -> RGB matrices that scale saturation and rotate hue by `hue_turns` of a full turn."""
    to_yiq = tf.constant(_RGB_TO_YIQ, tf.float32)
    angle = 2.0 * np.pi * hue_turns
    c, s = tf.cos(angle) * saturation_factor, tf.sin(angle) * saturation_factor
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    in_yiq = tf.reshape(tf.stack([one, zero, zero, zero, c, -s, zero, s, c], axis=-1), [-1, 3, 3])
    return tf.linalg.inv(to_yiq)[None] @ in_yiq @ to_yiq[None]


def stain_jitter(
    images: tf.Tensor,
    seed,
    brightness: float = 0.1,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.04,
) -> tf.Tensor:
    """Per-image brightness, contrast, saturation and hue jitter, imitating stain and scanner variation.

    brightness: added to 0..1 intensities, uniform in [-b, b]; contrast and saturation: factors in
    [1-c, 1+c]; hue: shift in [-h, h] of a full turn. H&E colour varies between labs mostly in hue
    and saturation, which is why both are jittered. Saturation and hue are one 3x3 matrix per image in
    YIQ space instead of an RGB -> HSV -> RGB round trip, too slow on a CPU host.
    """
    batch = tf.shape(images)[0]

    def sym(salt, scale):  # per image, uniform in [-scale, scale]
        return (2.0 * _per_image(seed, batch, salt) - 1.0) * scale

    x = tf.einsum("bhwc,bdc->bhwd", images / 255.0, colour_matrices(1.0 + sym(13, saturation), sym(12, hue)))
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * tf.reshape(1.0 + sym(11, contrast), [-1, 1, 1, 1]) + mean
    x = x + tf.reshape(sym(10, brightness), [-1, 1, 1, 1])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def hed_matrices(scale: tf.Tensor, shift: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-image optical-density maps for the stain jitter: od' = od @ A + b with A = M^-1 diag(scale) M, b = shift M.

    scale, shift: (B, 3) per stain. M maps stain amounts to optical density (rows of _RGB_FROM_HED).
    Separating the stains, scaling and shifting each, and mixing them again is one linear map in optical
    density, so the whole round trip costs one 3x3 product per pixel.
    """
    to_od = tf.constant(_RGB_FROM_HED, tf.float32)
    to_stains = tf.linalg.inv(to_od)
    matrices = to_stains[None] @ tf.linalg.diag(scale) @ to_od[None]  # (B, 3, 3)
    offsets = shift @ to_od  # (B, 3)
    return matrices, offsets


def rgb_to_od(images: tf.Tensor) -> tf.Tensor:
    """0..255 RGB -> optical density -log((v + 1) / 256)."""
    return -tf.math.log((images + 1.0) / _OD_REFERENCE)


def od_to_rgb(od: tf.Tensor) -> tf.Tensor:
    """The inverse of rgb_to_od (not clipped)."""
    return _OD_REFERENCE * tf.exp(-od) - 1.0


def rgb_to_hed(images: tf.Tensor) -> tf.Tensor:
    """0..255 RGB -> stain amounts (haematoxylin, eosin, DAB) in optical-density units; not clipped, so it inverts."""
    return rgb_to_od(images) @ tf.linalg.inv(tf.constant(_RGB_FROM_HED, tf.float32))


def hed_to_rgb(stains: tf.Tensor) -> tf.Tensor:
    """The inverse of rgb_to_hed (not clipped)."""
    return od_to_rgb(stains @ tf.constant(_RGB_FROM_HED, tf.float32))


def hed_jitter(
    images: tf.Tensor, seed, scale: float = 0.2, shift: float = 0.05, brightness: float = 0.1, contrast: float = 0.2
) -> tf.Tensor:
    """H&E stain augmentation (Tellez et al. 2019): per image and stain, amount * U[1-scale, 1+scale] + U[-shift, shift].

    images: uint8 or float32 0..255 (B, H, W, 3); returns float32 0..255. The stains come from colour
    deconvolution in optical density (Ruifrok & Johnston's vectors); `shift` is in optical-density
    units (skimage.color.rgb2hed divides these by -log(1e-6) = 13.8, so shift 0.05 here is 0.0036 there).
    Then the brightness and contrast jitter of `stain_jitter`, which model the scanner rather than the
    stain. At scale = shift = brightness = contrast = 0 it returns its input (up to float rounding).
    """
    batch = tf.shape(images)[0]

    def sym(salt, amount, shape):
        u = tf.random.stateless_uniform(shape, seed=tf.stack([seed[0], seed[1] + salt]))
        return (2.0 * u - 1.0) * amount

    matrices, offsets = hed_matrices(1.0 + sym(20, scale, [batch, 3]), sym(21, shift, [batch, 3]))
    od = tf.einsum("bhwc,bcd->bhwd", rgb_to_od(tf.cast(images, tf.float32)), matrices) + offsets[:, None, None, :]
    x = od_to_rgb(od) / 255.0
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * tf.reshape(1.0 + sym(22, contrast, [batch]), [-1, 1, 1, 1]) + mean
    x = x + tf.reshape(sym(23, brightness, [batch]), [-1, 1, 1, 1])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def seed_layers(seed: int) -> keras.Sequential:
    """The seed notebook's augmentation: horizontal flip, rotation 0.1, zoom 0.1, contrast 0.1.

    float32 on purpose: under a mixed_float16 global policy these layers would otherwise emit float16.
    """
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed, dtype="float32"),
            keras.layers.RandomRotation(0.1, seed=seed + 1, dtype="float32"),
            keras.layers.RandomZoom(0.1, seed=seed + 2, dtype="float32"),
            keras.layers.RandomContrast(0.1, seed=seed + 3, value_range=(0, 255), dtype="float32"),
        ],
        name="seed_augmentation",
    )


def make_augment_fn(name: str, seed: int):
    """A function (uint8 images, stateless_seed) -> 0..255 images for `name`: float32, or for "none" the
    images as they came (uint8 stays uint8: the model casts it on the device)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation {name!r} is unknown; choose one of {', '.join(AUGMENTATIONS)}")
    if name == "none":
        return lambda images, s: images
    if name == "dihedral":
        return lambda images, s: stain_jitter(tf.cast(dihedral(images, s), tf.float32), s)
    if name == "hed":
        return lambda images, s: hed_jitter(dihedral(images, s), s)
    layers = seed_layers(seed)
    return lambda images, s: layers(tf.cast(images, tf.float32), training=True)


# Seeds of the step t on the device are (seed, t * _STEP_STRIDE): the functions above add salts below 64
# to the second word, so the draws of different steps never share a stream.
_STEP_STRIDE = 64


class DeviceAugmentation:
    """Mixin for a keras.Model: `train_step` augments its batch on the device before the usual step.

    The same augmentation functions as the host pipeline, so the same distribution of transforms. Each
    step's stateless seed is (the run's seed salted with the replica, the optimizer's step), so the draws
    are reproducible from --seed, differ between steps and replicas, and continue where a resumed run
    stopped. `test_step` and `predict_step` are Keras' own: evaluation never augments.
    """

    augment_name: str = "none"
    augment_seed: int = 0

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        step = tf.cast(self.optimizer.iterations, tf.int64) * _STEP_STRIDE
        seed = tf.stack([tf.cast(self.augment_seed + 7919 * replica, tf.int64), step])
        x = make_augment_fn(self.augment_name, self.augment_seed)(x, seed)
        return super().train_step((x, y) if sample_weight is None else (x, y, sample_weight))


def on_device(model: keras.Model, name: str, seed: int) -> keras.Model:
    """`model`, whose train step now applies augmentation `name` (not "seed": its layers keep state) itself."""
    if name == "seed":
        raise ValueError("augmentation 'seed' uses Keras random layers; on the device choose dihedral, hed or none")
    make_augment_fn(name, seed)  # checks the name
    if not isinstance(model, DeviceAugmentation):
        model.__class__ = type(f"DeviceAugmented{type(model).__name__}", (DeviceAugmentation, type(model)), {})
    model.augment_name, model.augment_seed = name, seed
    return model
