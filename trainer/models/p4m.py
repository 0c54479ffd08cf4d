"""`p4m`: the baseline's three conv blocks as P4M group convolutions, exactly invariant to the 8 rotations
and mirrors (a P4M G-CNN as in Veeling et al. 2018, on the baseline's scale; layers in trainer.models.gconv).

    model = models.build("p4m")                  # width matched by FLOPs to the baseline: 4/8/16 channels x 8
    model = models.build("p4m", filters=(32, 64, 128, 256))   # a fourth block: 4/8/16/32 channels x 8
    model = models.build("p4m_params")           # width matched by parameters: 11/23/45 channels x 8

A P4M layer with C channels holds 8C planes, so it costs what a plain layer of 8C channels costs while
learning about 1/8 of the parameters: group widths (4, 8, 16) cost the baseline's (32, 64, 128) convolutions,
and (11, 23, 45) hold about its convolution parameters at 8x its FLOPs. After the last block the planes are
averaged over space, then over each channel's 8 orientations both the mean and the max are kept (invariant),
then come the baseline's Dense 128, dropout and sigmoid.

`filters` (pcam-train's --filters, and the width the tuner samples with `pcam-tune --model=p4m`) counts the
feature planes of each block, as for a plain CNN, so equal --filters cost about equal convolution FLOPs in
either model: 32,64,128 (the default) is 4/8/16 group channels. Each must be a multiple of 8.
"""

from __future__ import annotations

import keras

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer.models.cnn import centre_crop
from trainer.models.gconv import ORDER, GroupBatchNormalization, GroupPool, P4MConv, P4MLift

FLOP_MATCHED = (4, 8, 16)  # x 8 planes = the baseline's 32/64/128 channels
WIDTH_MULTIPLE = ORDER  # --filters counts planes: each block's width is its group channels x 8
PARAM_MATCHED = (11, 23, 45)  # about the baseline's 93k convolution weights
INVARIANT = True  # the output is the same for the 8 rotations and mirrors of an input: TTA has nothing to average


def pools_exactly(side: int, blocks: int, padding: str = "same", kernel_size: int = 3) -> bool:
    """Whether a side x side input stays exactly invariant through `blocks` conv + 2x2 max-pool blocks: every map
    even before its pooling (else the pooling drops a row on one side only), none empty."""
    for _ in range(blocks):
        side -= 0 if padding == "same" else kernel_size - 1
        if side <= 0 or side % 2:
            return False
        side //= 2
    return True


def exact_sides(blocks: int, padding: str = "same", up_to: int = PATCH_SHAPE[0], kernel_size: int = 3) -> list[int]:
    """The input sides up to `up_to` that `pools_exactly`, largest first (for error messages)."""
    return [n for n in range(up_to, 0, -1) if pools_exactly(n, blocks, padding, kernel_size)]


def p4m(
    input_shape: tuple[int, int, int] = PATCH_SHAPE,
    filters: tuple[int, ...] = FLOP_MATCHED,
    dense: int = 128,
    dropout: float = 0.1,
    batch_norm: bool = False,
    kernel_size: int = 3,
    name: str = "p4m",
    crop: int = 0,
    padding: str = "same",
) -> keras.Model:
    """P4M conv blocks (group conv 3x3 [+ group batch norm] + ReLU + 2x2 max-pool), then invariant pooling and the
    baseline's head. Takes 0..255 pixels. Needs square inputs whose side stays even through every pooling
    (96 -> 48 -> 24 -> 12), else a pooling window would not map onto a window under a quarter turn. `crop` > 0:
    the network sees the centre crop x crop pixels (`cnn.centre_crop`), which must then meet that rule.
    `padding="valid"` pads nowhere (exact dense slide inference); each valid 3x3 conv takes 2 pixels, so the
    input side must then be 6 more than a multiple of 8 for three blocks: crop=94 (`pools_exactly`)."""
    inputs = x = keras.Input(shape=input_shape, name="image")
    x = centre_crop(x, crop)
    height, width = x.shape[1], x.shape[2]
    if height != width or not pools_exactly(height, len(filters), padding, kernel_size):
        shown = (
            f"the centre crop {height}x{width} of input_shape={input_shape}" if crop else f"input_shape={input_shape}"
        )
        sides = exact_sides(len(filters), padding, max(height, width), kernel_size)[:3]
        raise ValueError(
            f"{shown}: p4m with padding={padding!r} and {len(filters)} blocks stays exactly invariant only on square "
            f"inputs that are even before every pooling (sides {', '.join(map(str, sides))}, ...; a centre crop gives one)"
        )
    x = keras.layers.Rescaling(1.0 / 255, name="rescale")(x)
    for i, channels in enumerate(filters):
        layer = P4MLift if i == 0 else P4MConv
        x = layer(channels, kernel_size, use_bias=not batch_norm, padding=padding, name=f"conv{i + 1}")(x)
        if batch_norm:
            x = GroupBatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Concatenate(name="group_pool")(
        [GroupPool("mean", name="group_mean")(x), GroupPool("max", name="group_max")(x)]
    )
    x = keras.layers.Dense(dense, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name=name)


def build(
    input_shape: tuple[int, int, int] = PATCH_SHAPE,
    filters: tuple[int, ...] = tuple(c * ORDER for c in FLOP_MATCHED),
    dense: int = 128,
    dropout: float = 0.1,
    batch_norm: bool = False,
    crop: int = 0,
    padding: str = "same",
) -> keras.Model:
    """The P4M model with `filters` feature planes per block (filters / 8 group channels); the default,
    32,64,128, is matched by FLOPs to the baseline (the same cost per image)."""
    odd = [f for f in filters if f % ORDER or f <= 0]
    if odd:
        raise ValueError(
            f"filters={tuple(filters)}: p4m widths count feature planes, {ORDER} per group channel, so each must be "
            f"a positive multiple of {ORDER} ({odd} is not)"
        )
    return p4m(
        input_shape,
        tuple(f // ORDER for f in filters),
        dense,
        dropout,
        batch_norm,
        name="p4m",
        crop=crop,
        padding=padding,
    )
