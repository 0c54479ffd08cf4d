"""Batched image augmentation for tf.data: `dihedral` (the default), `seed` (the notebook's) and `none`.

Where it runs, and why: in the tf.data pipeline on the host CPU, on whole batches, not as layers in
the model. On a GPU host the pipeline runs on CPU cores in parallel with the accelerator's step
(prefetch overlaps them), so augmentation costs no step time as long as the CPU keeps up, and the
saved model stays a pure function of the image (no augmentation layers to skip at inference).
Batched ops replace per-image calls: one vectorised op over 64 images instead of 64 small ones.
Measured on this 2-core CPU with the baseline (bench/bench_trainer_input.py, see the trainer report):
the dihedral+jitter pipeline alone delivers several thousand images/s, well above what the
baseline trains at here, so it is not the bottleneck.

Every function takes float32 images in 0..255 of shape (batch, H, W, 3) and a stateless seed
(shape [2] int tensor), so a run's augmentations are reproducible from its --seed.
"""

from __future__ import annotations

import keras
import tensorflow as tf

AUGMENTATIONS = ("dihedral", "seed", "none")


def _per_image(seed, batch: int, salt: int) -> tf.Tensor:
    """(batch,) uniform [0, 1) numbers drawn from `seed` and `salt`."""
    return tf.random.stateless_uniform([batch], seed=tf.stack([seed[0], seed[1] + salt]))


def dihedral(images: tf.Tensor, seed) -> tf.Tensor:
    """A random element of the dihedral group D4 per image: the 8 flips and 90-degree rotations.

    They map the centre 32x32 onto itself, so the label holds. Needs square images.
    """
    batch = tf.shape(images)[0]
    mask = lambda u: tf.reshape(u < 0.5, [-1, 1, 1, 1])
    x = tf.where(mask(_per_image(seed, batch, 0)), tf.reverse(images, axis=[2]), images)
    x = tf.where(mask(_per_image(seed, batch, 1)), tf.reverse(x, axis=[1]), x)
    # Transposing H and W composes with the two flips to give all 8 elements.
    return tf.where(mask(_per_image(seed, batch, 2)), tf.transpose(x, [0, 2, 1, 3]), x)


def all_dihedral(images: tf.Tensor) -> list[tf.Tensor]:
    """The 8 dihedral transforms of a batch (identity first), for test-time augmentation."""
    out = []
    for transpose in (False, True):
        x = tf.transpose(images, [0, 2, 1, 3]) if transpose else images
        for flip_h in (False, True):
            y = tf.reverse(x, axis=[2]) if flip_h else x
            out.extend([y, tf.reverse(y, axis=[1])])
    return out


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
    [1-c, 1+c]; hue: shift in [-h, h] of the hue circle. H&E colour varies between labs mostly in hue
    and saturation, which is why both are jittered.
    """
    batch = tf.shape(images)[0]
    u = lambda salt: tf.reshape(_per_image(seed, batch, salt), [-1, 1, 1, 1])
    x = images / 255.0
    x = x + (2.0 * u(10) - 1.0) * brightness
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * (1.0 + (2.0 * u(11) - 1.0) * contrast) + mean
    hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 1.0))
    h = tf.math.floormod(hsv[..., 0:1] + (2.0 * u(12) - 1.0) * hue, 1.0)
    s = tf.clip_by_value(hsv[..., 1:2] * (1.0 + (2.0 * u(13) - 1.0) * saturation), 0.0, 1.0)
    x = tf.image.hsv_to_rgb(tf.concat([h, s, hsv[..., 2:3]], axis=-1))
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
    """A function (images, stateless_seed) -> images for `name`, or None for "none"."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augmentation {name!r} is unknown; choose one of {', '.join(AUGMENTATIONS)}")
    if name == "none":
        return None
    if name == "dihedral":
        return lambda images, s: stain_jitter(dihedral(images, s), s)
    layers = seed_layers(seed)
    return lambda images, s: layers(images, training=True)
