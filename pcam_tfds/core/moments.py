"""Exact per-channel mean and standard deviation of 8-bit patches, as the manifest records them per file.

    mean_std = patch_moments(rows)            # (K, 6): K patches given as the rows of a (K, 27,648) uint8 array
    mean_std = moments_at(buffer, offsets)    # (K, 6): K patches anywhere in the rows of a buffer (batch_read's)

The sums of x and x*x per channel are integers, taken in float32 matrix products sized so that every sum is
exact (or by the native kernel, _kernel.c, in integers: `from_sums`), so the moments are exactly rounded
however flat the patch. Dataset statistics are channel_stats'.
"""

from __future__ import annotations

import threading

import numpy as np

from pcam_tfds.core.patches import PATCH_BYTES, PATCH_SHAPE

_MOMENT_BLOCK = 256  # pixels per row of the float32 block matrix


# A patch as rows of _MOMENT_BLOCK pixels: 36 rows of 768 values, all summed at once (36 * 255**2 < 2**24).
_PATCH_ROWS, _PATCH_WIDTH = PATCH_SHAPE[0] * PATCH_SHAPE[1] // _MOMENT_BLOCK, _MOMENT_BLOCK * PATCH_SHAPE[2]
assert _PATCH_ROWS * _MOMENT_BLOCK == PATCH_SHAPE[0] * PATCH_SHAPE[1] and _PATCH_ROWS * 255**2 < 2**24
_PATCH_GROUP = 64  # patches per set of numpy calls (their float32 copy: 7 MB)


class _PatchBuffers(threading.local):
    """Per thread, the float32 copy of up to _PATCH_GROUP patches that `patch_moments` sums."""

    def __init__(self):
        self.x = np.empty((_PATCH_GROUP, _PATCH_ROWS, _PATCH_WIDTH), np.float32)
        self.ones = np.ones(_PATCH_ROWS, np.float32)
        self.sel = np.zeros((_PATCH_WIDTH, PATCH_SHAPE[2]))  # gathers the columns of each channel
        self.sel[np.arange(_PATCH_WIDTH), np.arange(_PATCH_WIDTH) % PATCH_SHAPE[2]] = 1


_PATCH_BUFFERS = _PatchBuffers()


def moments_at(buffer: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The moments of the patches whose PATCH_BYTES pixel bytes start at OFFSETS (int64) in the flat bytes of
    BUFFER (a C-contiguous 2-D uint8 array whose rows hold a patch each, anywhere in the row): a (K, 6) float64
    array as `patch_moments` gives it, NaN in the rows of a negative offset. (Where the native kernel is built,
    batch_read takes the integer sums there instead, and `from_sums` makes the moments.)"""
    k, channels = len(offsets), PATCH_SHAPE[2]
    out = np.full((k, 2 * channels), np.nan)
    at = np.flatnonzero(offsets >= 0)
    if not len(at):
        return out
    # numpy: the patches that start at the same place in their rows of BUFFER (k, row bytes) are one strided view
    rows, cols = np.divmod(offsets[at], buffer.strides[0])
    for col in np.unique(cols).tolist():
        these = at[cols == col]
        where = rows[cols == col]
        pixels = buffer[where[0] : where[-1] + 1, col : col + PATCH_BYTES]  # a view when the rows follow each other
        if len(where) != len(pixels):
            pixels = buffer[where, col : col + PATCH_BYTES]
        out[these] = patch_moments(pixels)
    return out


def from_sums(sums: np.ndarray) -> np.ndarray:
    """(K, 6) means then standard deviations from (K, 6) int64 sums: of x per channel, then of x*x."""
    n, s, q = PATCH_SHAPE[0] * PATCH_SHAPE[1], sums[:, : PATCH_SHAPE[2]], sums[:, PATCH_SHAPE[2] :]
    return np.concatenate([s / n, np.sqrt((n * q - s * s) / (n * n))], axis=1)


def patch_moments(pixels: np.ndarray) -> np.ndarray:
    """The moments of K patches given as a (K, 27,648) uint8 array (rows of a patch's bytes; the rows may be
    strided): a (K, 6) float64 array of the mean of r, g, b, then their (population) standard deviations,
    each exactly rounded.

    The sums of x and x*x per channel are integers, _PATCH_GROUP patches per numpy call: the column sums of
    x and x*x of each patch's 36 rows of 768 values (below 2**24 in float32), the columns of each channel
    then gathered by a float64 product (below 2**53), and mean and variance each one correctly rounded
    division. (A float64 product gathers faster than numpy's sum with a float64 accumulator.)
    """
    k, channels = len(pixels), PATCH_SHAPE[2]
    sums = np.empty((k, 2 * channels))  # of x per channel, then of x*x
    b = _PATCH_BUFFERS
    for start in range(0, k, _PATCH_GROUP):
        part = pixels[start : start + _PATCH_GROUP]
        m = len(part)
        x = b.x[:m]
        np.copyto(x.reshape(m, -1), part, casting="unsafe")
        sums[start : start + m, :channels] = (b.ones @ x).astype(np.float64) @ b.sel
        np.multiply(x, x, out=x)
        sums[start : start + m, channels:] = (b.ones @ x).astype(np.float64) @ b.sel
    return from_sums(sums.astype(np.int64))
