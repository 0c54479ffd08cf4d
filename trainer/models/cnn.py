"""The seed notebook's small CNN family as one plain function.

`baseline`, `tuned` and the tuning HyperModel all call `cnn`, so they differ only in arguments.
"""

from __future__ import annotations

import keras

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer.config.choices import PADDINGS, STAIN_NORMS


def cnn(
    input_shape: tuple[int, int, int] = PATCH_SHAPE,
    filters: tuple[int, ...] = (32, 64, 128),
    dense: int = 128,
    dropout: float = 0.5,
    batch_norm: bool = False,
    kernel_size: int = 3,
    name: str = "cnn",
    channel_stats: tuple[list[float], list[float]] | None = None,
    stain_norm: str = "none",
    crop: int = 0,
    padding: str = "same",
) -> keras.Model:
    """Conv blocks (conv 3x3 + ReLU [+ batch norm] + 2x2 max-pool), global average pooling, a dense layer,
    dropout and one sigmoid unit. Takes 0..255 pixels and scales them itself, so callers feed raw images:
    by 1/255, or, given `channel_stats` (per-channel mean and std on the 0..255 scale, as
    `pcam_tfds.core.channel_stats.load_channel_stats` returns them), to zero mean and unit variance per channel.
    `stain_norm="reinhard"` first normalises each patch's colour (trainer.models.stain_norm). `crop` > 0 keeps
    only the centre crop x crop pixels (`centre_crop`, the first layer). `padding="valid"`: no layer pads, so a
    window's output depends on its own pixels alone and dense inference over a slide region equals per-window
    inference (trainer.slides.dense); 96 -> 94 -> 47 -> 45 -> 22 -> 20 -> 10 for three blocks.

    The output layer computes in float32 so its probabilities stay exact under mixed precision.
    """
    if not filters:
        raise ValueError(f"filters={filters!r}: need at least one conv block")
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}: choose one of {', '.join(PADDINGS)}")
    if stain_norm not in STAIN_NORMS:
        raise ValueError(f"stain_norm={stain_norm!r}: choose one of {', '.join(STAIN_NORMS)}")
    inputs = x = keras.Input(shape=input_shape, name="image")
    x = centre_crop(x, crop)
    if stain_norm == "reinhard":
        from trainer.models.stain_norm import ReinhardNormalization

        x = ReinhardNormalization(name="stain_norm")(x)
    if channel_stats is None:
        x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    else:
        mean, std = channel_stats
        x = keras.layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize")(x)
    for i, width in enumerate(filters):
        # Batch norm makes the conv bias redundant.
        x = keras.layers.Conv2D(width, kernel_size, padding=padding, use_bias=not batch_norm, name=f"conv{i + 1}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(dense, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name=name)


def centre_crop(x, crop: int):
    """The model's first layer for `crop` > 0 (--crop): the centre crop x crop pixels of each (H, W) image, where a
    PCam label is decided (tumour in the centre 32x32), with equal margins so that a flip or quarter turn of the
    image turns the crop in place (the P4M models stay exactly invariant). 0 keeps the whole image."""
    if not crop:
        return x
    height, width = x.shape[1], x.shape[2]
    if not 0 < crop <= min(height, width) or (height - crop) % 2 or (width - crop) % 2:
        raise ValueError(
            f"crop={crop}: a centre crop of a {height}x{width} image must fit in it and leave equal margins "
            f"(an even number of pixels less than each side, e.g. {height - 32})"
        )
    return keras.layers.Cropping2D(((height - crop) // 2, (width - crop) // 2), name="centre_crop")(x)
