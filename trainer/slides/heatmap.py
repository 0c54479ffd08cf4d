"""The heatmap of a plan: tissue windows predicted tile by tile, per window or densely, resumable."""

from __future__ import annotations

import concurrent.futures
import json
import time

import numpy as np
from etils import epath

from trainer.slides.geometry import read_model_pixels
from trainer.slides.plan import Plan

PARTIAL_DIR = ".partial"
SAVE_EVERY = 5.0  # seconds between checkpoints of the heatmap
DENSE_CHECK = 256  # windows spread over the slide predicted both ways by --inference=auto
DENSE_BLOCK = 32  # windows per side of one dense region: 1,088 model pixels, ~150 MB for the baseline's conv1


def _tile_pixels(p: Plan, tile: tuple[int, int]) -> tuple[np.ndarray, int, int]:
    """(model pixels of the tile, its window rows, its window cols)."""
    g, t = p.grid, p.tile_windows
    r, c = tile
    nr, nc = min(t, g.rows - r), min(t, g.cols - c)
    w, h = (nc - 1) * g.stride + g.patch, (nr - 1) * g.stride + g.patch
    pixels = read_model_pixels(p.slide, p.level, g.scale, g.corner(c), g.corner(r), w, h)
    return pixels, nr, nc


def _window_probs(p: Plan, predict, pixels: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((n, 2) window (row, col) in the tile, (n,) probabilities) of the tile's tissue windows, one by one in
    batches through `predict` (trainer.inference.probabilities.make_predict_fn: what pcam-predict computes for a file)."""
    import tensorflow as tf

    g = p.grid
    where = np.argwhere(tissue)
    view = np.lib.stride_tricks.sliding_window_view(pixels, (g.patch, g.patch, 3))[:: g.stride, :: g.stride, 0]
    probs = [np.zeros([0], np.float32)]
    for b in range(0, len(where), p.config.batch_size):
        rows, cols = where[b : b + p.config.batch_size].T
        probs.append(predict(tf.constant(view[rows, cols], tf.float32)).numpy())
    return where, np.clip(np.concatenate(probs), 0.0, 1.0)


def _dense_probs(p: Plan, predict, pixels: np.ndarray, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same as _window_probs through `predict` (trainer.slides.dense.make_dense_fn), one region of at most
    DENSE_BLOCK x DENSE_BLOCK windows at a time, each cropped to the bounding box of its tissue windows."""
    import tensorflow as tf

    g = p.grid
    wheres, probs = [np.zeros((0, 2), np.int64)], [np.zeros([0], np.float32)]
    for br in range(0, tissue.shape[0], DENSE_BLOCK):
        for bc in range(0, tissue.shape[1], DENSE_BLOCK):
            block = tissue[br : br + DENSE_BLOCK, bc : bc + DENSE_BLOCK]
            if not block.any():
                continue
            rows, cols = np.flatnonzero(block.any(1)), np.flatnonzero(block.any(0))
            r0, r1, c0, c1 = br + rows[0], br + rows[-1] + 1, bc + cols[0], bc + cols[-1] + 1
            region = pixels[
                r0 * g.stride : (r1 - 1) * g.stride + g.patch, c0 * g.stride : (c1 - 1) * g.stride + g.patch
            ]
            grid = predict(tf.constant(region, tf.float32)).numpy()
            where = np.argwhere(tissue[r0:r1, c0:c1])
            wheres.append(where + np.array([r0, c0]))
            probs.append(grid[where[:, 0], where[:, 1]])
    return np.concatenate(wheres), np.clip(np.concatenate(probs), 0.0, 1.0)


def dense_check(p: Plan, windows_fn, dense_fn) -> dict:
    """Up to DENSE_CHECK tissue windows spread evenly over the slide, each predicted alone (as pcam-predict
    would) and densely amid its neighbours (the region of the 3x3 windows around it, which holds what its
    feature map sees beyond its edges): the numbers --inference=auto decides on, kept in summary.json."""
    import tensorflow as tf

    g = p.grid
    where = np.argwhere(p.tissue)
    pick = where[np.unique(np.linspace(0, len(where) - 1, min(DENSE_CHECK, len(where))).round().astype(int))]
    alone, amid = [], []
    for i, j in pick.tolist():
        r0, c0 = max(i - 1, 0), max(j - 1, 0)
        r1, c1 = min(i + 2, g.rows), min(j + 2, g.cols)
        w, h = (c1 - c0 - 1) * g.stride + g.patch, (r1 - r0 - 1) * g.stride + g.patch
        region = read_model_pixels(p.slide, p.level, g.scale, g.corner(c0), g.corner(r0), w, h)
        amid.append(float(dense_fn(tf.constant(region, tf.float32))[i - r0, j - c0]))
        y, x = (i - r0) * g.stride, (j - c0) * g.stride
        alone.append(region[y : y + g.patch, x : x + g.patch])
    exact = [
        windows_fn(tf.constant(np.stack(alone[b : b + p.config.batch_size]), tf.float32)).numpy()
        for b in range(0, len(alone), p.config.batch_size)
    ]
    diff = np.abs(np.clip(np.array(amid), 0.0, 1.0) - np.clip(np.concatenate(exact), 0.0, 1.0))
    return {
        "windows": int(len(pick)),
        "max_abs_diff": round(float(diff.max()), 6),
        "mean_abs_diff": round(float(diff.mean()), 6),
        "tolerance": p.config.dense_tolerance,
        "exact": all(d.exact for d in p.dense),  # no layer pads (--padding=valid): equal by construction
    }


class Checkpoint:
    """OUT/.partial/{heatmap.npy, state.json}: the heatmap so far, how many tiles it holds, and how it was
    computed (the inference mode --inference=auto chose, kept so that a continued run computes the same way)."""

    def __init__(self, out: epath.Path, identity: dict):
        self.folder = out / PARTIAL_DIR
        self.identity = identity

    def load(self, shape) -> tuple[np.ndarray, int, dict | None, str]:
        fresh = np.full(shape, np.nan, np.float32)
        state_path, heat_path = self.folder / "state.json", self.folder / "heatmap.npy"
        if not state_path.exists() or not heat_path.exists():
            return fresh, 0, None, ""
        try:
            state = json.loads(state_path.read_text())
            heatmap = np.load(str(heat_path))
        except (OSError, ValueError):
            return fresh, 0, None, "the saved progress is unreadable: starting over"
        if state.get("identity") != self.identity or heatmap.shape != tuple(shape):
            return fresh, 0, None, "the saved progress is of another slide or other settings: starting over"
        done = int(state["tiles_done"])
        return heatmap.astype(np.float32), done, state.get("inference"), f"continuing after tile {done}"

    def save(self, heatmap: np.ndarray, tiles_done: int, inference: dict | None) -> None:
        from pcam_tfds.core.folder_lock import atomic_path, atomic_write_text

        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / "heatmap.npy", suffix=".npy") as tmp:
            np.save(str(tmp), heatmap)
        state = {"identity": self.identity, "tiles_done": tiles_done, "inference": inference}
        atomic_write_text(self.folder / "state.json", json.dumps(state))

    def remove(self) -> None:
        for name in ("state.json", "heatmap.npy"):
            path = self.folder / name
            if path.exists():
                path.unlink()
        if self.folder.exists():
            self.folder.rmdir()


def compute_heatmap(
    p: Plan, checkpoint: Checkpoint | None = None, emit=None, after_tile=None
) -> tuple[np.ndarray, dict]:
    """(heatmap, how it was computed) for plan `p`, tile by tile, the next tile read while this one is
    predicted; saved to `checkpoint` every SAVE_EVERY seconds; `after_tile(n)` (tests) is called after tile n
    is saved.

    How: {"mode": "windows" | "dense", "reason": ..., "check": dense_check's numbers or None}. With
    --inference=auto and models that allow it, DENSE_CHECK windows spread over the slide are predicted both
    ways first; dense inference is used if none of them moved by more than --dense_tolerance.
    """
    from pcam_tfds.core.progress import Progress, print_line
    from trainer.inference import probabilities

    emit = emit or print_line
    g = p.grid
    heatmap, start, how, note = (
        checkpoint.load((g.rows, g.cols))
        if checkpoint
        else (np.full((g.rows, g.cols), np.nan, np.float32), 0, None, "")
    )
    if note:
        emit(f"pcam-slide: {note}")
    tiles = p.tiles()
    total = int(p.tissue.sum())
    done_before = int(np.isfinite(heatmap).sum())
    windows_fn = probabilities.make_predict_fn(p.models, p.config.tta)
    dense_fn = None
    if p.dense:
        from trainer.slides.dense import make_dense_fn

        dense_fn = make_dense_fn(p.dense, g.stride, p.config.tta)
    if how is None:
        if p.config.inference == "windows":
            how = {"mode": "windows", "reason": "--inference=windows", "check": None}
        elif not p.dense:
            how = {"mode": "windows", "reason": p.dense_note, "check": None}
        elif p.config.inference == "dense":
            how = {"mode": "dense", "reason": "--inference=dense", "check": None}
        elif p.tissue.any():
            check = dense_check(p, windows_fn, dense_fn)
            agrees = check["max_abs_diff"] <= p.config.dense_tolerance
            how = {
                "mode": "dense" if agrees else "windows",
                "reason": f"--inference=auto: {check['windows']} windows differ by at most {check['max_abs_diff']:.4f} "
                f"(mean {check['mean_abs_diff']:.4f}) between dense and per-window inference, "
                f"{'within' if agrees else 'over'} --dense_tolerance={p.config.dense_tolerance}",
                "check": check,
            }
            emit(f"pcam-slide: {how['reason']}: {how['mode']} inference")
    progress = Progress("pcam-slide", total=total - done_before, unit="windows", emit=emit)
    done, last_save = 0, time.monotonic()
    todo = [t for t in tiles[start:] if p.tissue[t[0] : t[0] + p.tile_windows, t[1] : t[1] + p.tile_windows].any()]
    skipped = {t: i for i, t in enumerate(tiles)}  # tile -> index, for the checkpoint count
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_tile_pixels, p, todo[0]) if todo else None
        for n, tile in enumerate(todo):
            pixels, nr, nc = pending.result()
            pending = pool.submit(_tile_pixels, p, todo[n + 1]) if n + 1 < len(todo) else None
            r, c = tile
            tissue = p.tissue[r : r + nr, c : c + nc]
            if how["mode"] == "dense":
                where, probs = _dense_probs(p, dense_fn, pixels, tissue)
            else:
                where, probs = _window_probs(p, windows_fn, pixels, tissue)
            heatmap[where[:, 0] + r, where[:, 1] + c] = probs
            done += len(probs)
            progress.update(done)
            if checkpoint and (time.monotonic() - last_save >= SAVE_EVERY or after_tile or n + 1 == len(todo)):
                checkpoint.save(heatmap, skipped[tile] + 1, how)
                last_save = time.monotonic()
            if after_tile:
                after_tile(n)
    progress.finish(done)
    return heatmap, how or {"mode": "windows", "reason": "no tissue: nothing predicted", "check": None}
