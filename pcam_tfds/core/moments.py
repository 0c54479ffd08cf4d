"""Exact per-channel mean and standard deviation of 8-bit patches, as the manifest records them per file.

    mean, std = channel_moments(pixels)                       # one array of any shape (..., channels)
    [(mean, std), ...] = channel_moments_batch([pixels, ...])  # PATCH_SHAPE patches MOMENT_BATCH at a time

The sums of x and x*x per channel are integers, taken in float32 matrix products sized so that every sum is
exact, so the moments are exactly rounded however flat the patch. Dataset statistics are channel_stats'.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from pcam_tfds.core.patches import PATCH_SHAPE

_MOMENT_BLOCK = 256  # pixels per row of the float32 block matrix
_MOMENT_ROWS = 256  # rows summed in float32 at a time: 256 * 255**2 < 2**24, so every column sum is exact


class _MomentBuffers(threading.local):
    """Per thread, the float32 matrices of `channel_moments` by (rows, row length, channels), allocated once:
    a fresh 220 kB array per patch would be mapped and faulted in by the allocator every time."""

    def __init__(self):
        self.by_shape: dict[tuple[int, int, int], tuple[np.ndarray, ...]] = {}

    def get(self, rows: int, width: int, channels: int) -> tuple[np.ndarray, ...]:
        bufs = self.by_shape.get((rows, width, channels))
        if bufs is None:
            stack = np.empty((2 * rows, width), np.float32)  # the rows of x, then of x*x
            ones = np.zeros((2, 2 * rows), np.float32)
            ones[0, :rows] = ones[1, rows:] = 1
            sel = np.zeros((width, channels))
            sel[np.arange(width), np.arange(width) % channels] = 1
            bufs = stack, ones, np.empty((2, width), np.float32), np.empty((2, width)), sel
            self.by_shape[(rows, width, channels)] = bufs
        return bufs


_MOMENT_BUFFERS = _MomentBuffers()


def channel_moments(pixels: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation of one 8-bit patch, exactly rounded.

    The sums of x and x*x per channel are integers, taken with two matrix products: the pixels laid out in
    rows of 256 (at most 256 rows at a time) are cast into a float32 matrix beside their squares, one
    float32 product with a block of ones gives the column sums of both (each below 2**24, so exact), and
    one float64 product with a 0/1 matrix gathers the columns of each channel (below 2**53, exact). The
    mean s/n and the variance (n*q - s*s)/n**2 are each one correctly rounded division of integers,
    however flat the patch. Dataset statistics are pcam_tfds.core.channel_stats'.
    """
    channels = pixels.shape[-1]
    flat = pixels.reshape(-1)
    n = flat.size // channels
    width = _MOMENT_BLOCK * channels
    whole = flat.size // width
    s, q = [0] * channels, [0] * channels
    for start in range(0, whole, _MOMENT_ROWS):
        rows = min(_MOMENT_ROWS, whole - start)
        stack, ones, sums, sums64, sel = _MOMENT_BUFFERS.get(rows, width, channels)
        x = stack[:rows]
        np.copyto(x, flat[start * width : (start + rows) * width].reshape(rows, width), casting="unsafe")
        np.multiply(x, x, out=stack[rows:])
        np.matmul(ones, stack, out=sums)
        np.copyto(sums64, sums)
        ps, pq = (sums64 @ sel).tolist()
        s, q = [a + int(b) for a, b in zip(s, ps)], [a + int(b) for a, b in zip(q, pq)]
    if whole * width < flat.size:  # the pixels past the last whole row
        tail = flat[whole * width :].reshape(-1, channels).astype(np.int64)
        s, q = _add(s, tail.sum(axis=0)), _add(q, (tail * tail).sum(axis=0))
    return [a / n for a in s], [math.sqrt((n * b - a * a) / (n * n)) for a, b in zip(s, q)]


MOMENT_BATCH = 8  # patches per call: fewer numpy calls per patch, the float32 stack (1.8 MB) still in cache
# A patch as rows of _MOMENT_BLOCK pixels: 36 rows of 768 values, all summed at once (36 * 255**2 < 2**24).
_PATCH_ROWS, _PATCH_WIDTH = PATCH_SHAPE[0] * PATCH_SHAPE[1] // _MOMENT_BLOCK, _MOMENT_BLOCK * PATCH_SHAPE[2]
assert _PATCH_ROWS * _MOMENT_BLOCK == PATCH_SHAPE[0] * PATCH_SHAPE[1] and _PATCH_ROWS <= _MOMENT_ROWS


class _BatchBuffers(threading.local):
    """Per thread, the matrices of `channel_moments_batch` for up to MOMENT_BATCH patches."""

    def __init__(self):
        rows, width, channels = _PATCH_ROWS, _PATCH_WIDTH, PATCH_SHAPE[2]
        self.stack = np.empty((MOMENT_BATCH, 2 * rows, width), np.float32)  # per patch: x, then x*x
        self.sums = np.empty((MOMENT_BATCH, 2, width), np.float32)
        self.sums64 = np.empty((MOMENT_BATCH, 2, width))
        self.ones = np.zeros((2, 2 * rows), np.float32)
        self.ones[0, :rows] = self.ones[1, rows:] = 1
        self.sel = np.zeros((width, channels))
        self.sel[np.arange(width), np.arange(width) % channels] = 1


_BATCH_BUFFERS = _BatchBuffers()


def channel_moments_batch(batch: list[np.ndarray]) -> list[tuple[list[float], list[float]]]:
    """`channel_moments` of each array of BATCH, the same values. PATCH_SHAPE uint8 arrays (valid patches) go
    MOMENT_BATCH at a time through the same products as in `channel_moments`, with one numpy call of each
    for the group instead of one per patch; any other array on its own."""
    out: list = [None] * len(batch)
    whole = [i for i, p in enumerate(batch) if p.shape == PATCH_SHAPE and p.dtype == np.uint8]
    for i in set(range(len(batch))) - set(whole):
        out[i] = channel_moments(batch[i])
    b, rows, n = _BATCH_BUFFERS, _PATCH_ROWS, PATCH_SHAPE[0] * PATCH_SHAPE[1]
    for start in range(0, len(whole), MOMENT_BATCH):
        group = whole[start : start + MOMENT_BATCH]
        k = len(group)
        for j, i in enumerate(group):
            np.copyto(b.stack[j, :rows], batch[i].reshape(rows, _PATCH_WIDTH), casting="unsafe")
        np.multiply(b.stack[:k, :rows], b.stack[:k, :rows], out=b.stack[:k, rows:])
        np.matmul(b.ones, b.stack[:k], out=b.sums[:k])
        np.copyto(b.sums64[:k], b.sums[:k])
        for i, (s, q) in zip(group, (b.sums64[:k] @ b.sel).tolist()):
            s, q = [int(v) for v in s], [int(v) for v in q]
            out[i] = ([a / n for a in s], [math.sqrt((n * y - a * a) / (n * n)) for a, y in zip(s, q)])
    return out


def _add(totals: list[int], sums: np.ndarray) -> list[int]:
    return [t + int(v) for t, v in zip(totals, sums.tolist())]
