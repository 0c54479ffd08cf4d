"""pcam-slide (issues 24, 38): slide readers, windows/s against pcam-predict, memory on a 50,000 x 50,000 slide.

    python bench/bench_slide.py --part=readers --work_dir=/tmp/bench_slide
    python bench/bench_slide.py --part=throughput --work_dir=/tmp/bench_slide
    python bench/bench_slide.py --part=large --work_dir=/tmp/bench_slide
    python bench/bench_slide.py --part=large --work_dir=/tmp/bench_slide --padding=valid --inference=dense
    python bench/bench_slide.py --part=agreement --work_dir=/tmp/bench_slide --run=RUN_DIR --patches=KAGGLE/train

Slides are made here (trainer.slides.pyramid.write_pyramid) from synthetic patches (pcam_tfds.synthetic) tiled
at 10x with no gaps, upsampled to a 40x (0.243 um/px) level 0, levels 1, 4, 16 (and 64 for the large one).
The model is a random-init baseline (--padding=valid: the padding-free one): speed does not depend on the weights.
readers: the same level-1 regions (2112 x 2112, one pcam-slide tile) through OpenSlide and tifffile.
throughput: pcam-slide on a small slide, per window and dense (--inference=windows, dense), against
  pcam-predict on the same tissue windows written as 96x96 TIFF files, all in this process (each loads its
  model once), alternating, back to back.
agreement: a trained run's validation patches (RUN/val_predictions.csv, read from --patches) laid edge to
  edge on a slide; the heatmaps of --inference=windows and dense compared over every window, and the ROC AUC
  of each at the patch centres against the patches' labels (dense inference sees the neighbouring patches
  where a window alone sees zero padding: this measures what that costs on real tissue and a trained model).
large: pcam-slide (a subprocess, peak RSS over it sampled by bench/measure.py) on a 50,000 x 50,000 px
  level-0 slide (90% tissue), and on the small slide, time per window compared; with --compare_windows the
  large slide again with --inference=windows, and the two heatmaps compared window by window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

UP = 4


def texture(size: int, seed: int = 0) -> np.ndarray:
    """A 10x canvas of size x size pixels of synthetic patches side by side."""
    from pcam_tfds import synthetic

    n = -(-size // 96)
    canvas = np.empty((n * 96, n * 96, 3), np.uint8)
    for r in range(n):
        for c in range(n):
            canvas[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] = synthetic.draw_patch(seed, "train", r * n + c)[0]
    return canvas[:size, :size]


def make_slide(path: Path, level0: int, downsamples, white_share: float = 0.0, compression="zlib") -> None:
    """A level0 x level0 slide tiling one 10x texture; the left `white_share` of it is glass (white)."""
    from trainer.slides.pyramid import write_pyramid

    tex10 = texture(1152)
    levels = {}
    for ds in downsamples:
        # Level ds of the 4x-upsampled texture, one period of it: nearest up to 4, box average beyond.
        if ds <= UP:
            levels[ds] = np.repeat(np.repeat(tex10, UP // ds, 0), UP // ds, 1)
        else:
            f = ds // UP
            t = tex10.astype(np.float32).reshape(1152 // f, f, 1152 // f, f, 3).mean(axis=(1, 3))
            levels[ds] = (t + 0.5).astype(np.uint8)
    white_x = int(level0 * white_share)

    def tile_fn(ds, y, x, h, w):
        t = levels[ds]
        period = t.shape[0]
        block = t[np.ix_((y + np.arange(h)) % period, (x + np.arange(w)) % period)]
        glass = (x + np.arange(w)) * ds < white_x
        if glass.any():
            block = block.copy()
            block[:, glass] = 255
        return block

    write_pyramid(path, (level0, level0), 0.243, downsamples, tile_fn, tile=512, compression=compression)


def baseline_run(folder: Path, padding: str = "same") -> Path:
    import keras

    from trainer import models

    folder = folder.with_name(folder.name + ("" if padding == "same" else f"_{padding}"))
    if not (folder / "model.keras").exists():
        keras.utils.set_random_seed(0)
        folder.mkdir(parents=True, exist_ok=True)
        models.build("baseline", padding=padding).save(str(folder / "model.keras"))
    return folder


def bench_readers(work: Path, repeats: int) -> dict:
    from trainer.slides import reader as slide

    path = work / "readers.tif"
    if not path.exists():
        make_slide(path, 16384, (1, 4, 16))
    rng = np.random.default_rng(0)
    size = 2112
    regions = [(int(rng.integers(0, 4096 - size)), int(rng.integers(0, 4096 - size))) for _ in range(8)]
    result = {}
    for _ in range(repeats):
        for reader in ("openslide", "tifffile"):
            s = slide.open_slide(str(path), reader)
            start = time.perf_counter()
            for x, y in regions:
                s.read(1, x, y, size, size)
            seconds = time.perf_counter() - start
            s.close()
            mb = len(regions) * size * size * 3 / 1e6
            result.setdefault(reader, []).append(round(mb / seconds, 1))
    return {"MB_per_s": result, "regions": len(regions), "region": f"{size}x{size} level 1"}


def bench_throughput(work: Path, repeats: int, padding: str) -> dict:
    import tifffile

    from trainer.inference import predict
    from trainer.slides import command, geometry
    from trainer.slides import plan as slide

    run = baseline_run(work / "run", padding)
    path = work / "small.tif"
    if not path.exists():
        make_slide(path, 9216, (1, 4, 16))
    files = work / "windows"
    config = slide.SlideConfig(model_dirs=(str(run),), slide=str(path), output_dir=str(work / "out_small")).check()
    p = slide.plan(config)
    if not files.exists():
        files.mkdir()
        g = p.grid
        pixels = geometry.read_model_pixels(
            p.slide,
            p.level,
            g.scale,
            g.corner(0),
            g.corner(0),
            (g.cols - 1) * g.stride + 96,
            (g.rows - 1) * g.stride + 96,
        )
        for i, j in np.argwhere(p.tissue):
            window = pixels[i * g.stride : i * g.stride + 96, j * g.stride : j * g.stride + 96]
            tifffile.imwrite(files / f"w{i:04d}_{j:04d}.tif", window)
    p.slide.close()
    n_files = len(list(files.iterdir()))
    rows = []
    for rep in range(repeats):
        row = {}
        for mode in ("windows", "dense"):
            start = time.perf_counter()
            out = work / f"out_{mode}{rep}"
            summary = command.run(
                [f"--model_dir={run}", f"--slide={path}", f"--output_dir={out}", f"--inference={mode}"]
            )
            row[f"slide_{mode}_windows_per_s"] = round(summary["windows"] / (time.perf_counter() - start), 1)
        start = time.perf_counter()
        predict.run([f"--model_dir={run}", f"--input_dir={files}", f"--output={work / f'pred{rep}.csv'}"])
        row["predict_windows_per_s"] = round(n_files / (time.perf_counter() - start), 1)
        for mode in ("windows", "dense"):
            row[f"ratio_{mode}"] = round(row[f"slide_{mode}_windows_per_s"] / row["predict_windows_per_s"], 2)
        row.update(windows=summary["windows"], files=n_files)
        rows.append(row)
    return {"rows": rows, "load_average": os.getloadavg()}


def bench_agreement(work: Path, run: Path, patches: Path, side: int) -> dict:
    import csv

    from pcam_tfds.core.patches import read_patch
    from trainer.evaluation import metrics
    from trainer.slides import command as slide
    from trainer.slides.plan import DENSE_TOLERANCE
    from trainer.slides.pyramid import write_pyramid

    with open(run / "val_predictions.csv") as f:
        rows = list(csv.DictReader(f))[: side * side]
    side = int(len(rows) ** 0.5)
    rows = rows[: side * side]
    canvas = np.empty((side * 96, side * 96, 3), np.uint8)
    for n, row in enumerate(rows):
        r, c = divmod(n, side)
        canvas[r * 96 : (r + 1) * 96, c * 96 : (c + 1) * 96] = read_patch(str(patches / f"{row['id']}.tif"))
    level0 = np.repeat(np.repeat(canvas, UP, 0), UP, 1)

    def tile_fn(ds, y, x, h, w):
        block = level0[y * ds : (y + h) * ds, x * ds : (x + w) * ds].astype(np.float32)
        return (block.reshape(h, ds, w, ds, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)

    path = work / f"agreement_{side}.tif"
    write_pyramid(path, level0.shape[:2], 0.243, (1, 4, 16), tile_fn)
    labels = np.array([int(r["label"]) for r in rows])
    out, maps = {"patches": len(rows), "run": str(run)}, {}
    for mode in ("windows", "dense"):
        folder = work / f"agreement_{mode}"
        summary = slide.run(
            [f"--model_dir={run}", f"--slide={path}", f"--output_dir={folder}", f"--inference={mode}", "--min_tissue=0"]
        )
        maps[mode] = np.load(folder / "heatmap.npy")
        out[mode] = {"seconds": summary["seconds"], "windows": summary["windows"]}
    # Window 3a + 1 is centred on patch a (pitch 96, stride 32, the grid starting 32 early); patches without tissue have no prediction.
    centres = {mode: m[1::3, 1::3][:side, :side].ravel() for mode, m in maps.items()}
    scored = np.isfinite(centres["windows"]) & np.isfinite(centres["dense"])
    out["patches_scored"] = int(scored.sum())
    for mode, values in centres.items():
        out[mode]["centre_auc"] = round(metrics.compute_metrics(labels[scored], values[scored], seed=0)["roc_auc"], 4)
    diff = np.abs(maps["windows"] - maps["dense"])
    centre = diff[1::3, 1::3][:side, :side]
    out["abs_diff_all_windows"] = {"max": float(np.nanmax(diff)), "mean": float(np.nanmean(diff))}
    out["abs_diff_patch_centres"] = {"max": float(np.nanmax(centre)), "mean": float(np.nanmean(centre))}
    out["share_of_windows_over_tolerance"] = float(np.nanmean(diff > DENSE_TOLERANCE))
    return out


def bench_large(work: Path, size: int, inference: str, padding: str, compare_windows: bool) -> dict:
    import measure

    run = baseline_run(work / "run", padding)
    small, large = work / "small.tif", work / f"large_{size}.tif"
    if not small.exists():
        make_slide(small, 9216, (1, 4, 16))
    if not large.exists():
        start = time.perf_counter()
        make_slide(large, size, (1, 4, 16, 64), white_share=0.1, compression=None)
        print(f"wrote {large} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    out = {"model": run.name}
    arms = [("small", small, inference), ("large", large, inference)]
    if compare_windows:
        arms.append(("large_windows", large, "windows"))
    for name, path, mode in arms:
        folder = work / f"out_{name}_{run.name}_measured"
        cmd = [
            sys.executable,
            "-m",
            "trainer.slides",
            f"--model_dir={run}",
            f"--slide={path}",
            f"--output_dir={folder}",
            f"--inference={mode}",
        ]
        m = measure.run_measured(cmd)
        summary = json.loads((folder / "summary.json").read_text())
        out[name] = {
            "level0": summary["heatmap"]["shape"],
            "windows": summary["windows"],
            "heatmap_seconds": summary["seconds"],
            "inference": summary["inference"],
            "inference_reason": summary["inference_reason"],
            "ms_per_window": round(1000 * summary["seconds"] / max(summary["windows"], 1), 3),
            "wall_s": m["wall_s"],
            "peak_rss_mib": m["peak_rss_mib"],
        }
    out["ms_per_window_ratio_large_over_small"] = round(
        out["large"]["ms_per_window"] / out["small"]["ms_per_window"], 2
    )
    if compare_windows:
        a, b = (np.load(work / f"out_{n}_{run.name}_measured" / "heatmap.npy") for n in ("large", "large_windows"))
        same = np.isfinite(a) & np.isfinite(b)
        out["large_dense_vs_windows"] = {
            "same_windows": bool((np.isfinite(a) == np.isfinite(b)).all()),
            "max_abs_diff": float(np.abs(a[same] - b[same]).max()),
            "speedup": round(out["large_windows"]["heatmap_seconds"] / out["large"]["heatmap_seconds"], 2),
        }
    out["load_average"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["readers", "throughput", "large", "agreement"], required=True)
    parser.add_argument("--work_dir", default="/tmp/bench_slide")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=50_000, help="level-0 side of the large slide")
    parser.add_argument("--inference", default="auto", help="large: pcam-slide's --inference")
    parser.add_argument("--padding", default="same", choices=["same", "valid"], help="the random-init baseline's")
    parser.add_argument("--compare_windows", action="store_true", help="large: also per window, heatmaps compared")
    parser.add_argument("--run", help="agreement: a trained run folder (with val_predictions.csv)")
    parser.add_argument("--patches", help="agreement: the folder of the run's patches as <id>.tif")
    parser.add_argument("--side", type=int, default=40, help="agreement: patches per side of the slide")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.part == "readers":
        result = bench_readers(work, args.repeats)
    elif args.part == "throughput":
        result = bench_throughput(work, args.repeats, args.padding)
    elif args.part == "agreement":
        result = bench_agreement(work, Path(args.run), Path(args.patches), args.side)
    else:
        result = bench_large(work, args.size, args.inference, args.padding, args.compare_windows)
    import measure

    result["machine"] = measure.machine()
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
