"""Kaggle submission: a tumour probability for every test patch, from one run or an ensemble.

    python -m trainer.predict --model_dir=runs/baseline --data_dir=TFDS_DIR --output=submission.csv
    python -m trainer.predict --model_dir runs/resnet50 runs/densenet169 --tta \\
        --input_dir=KAGGLE_DIR/test --output=submission.csv

Writes `id,label` with label = the probability (Kaggle scores ROC AUC, so probabilities beat 0/1);
--calibrate applies each run's fitted temperature, --hard_labels=youden|f1|T writes 0/1 labels. The
output folder is checked before anything is predicted.
Several run folders average their probabilities; --tta also averages the 8 flips/90-degree rotations.
Input is the test split of a built TFDS dataset (--data_dir, --dataset, --split) or a folder of patch
files (--input_dir: .tif/.tiff/.png/.jpg/.jpeg). An unreadable file stops the run with its name and
reason and exit status 1; with --allow_rejected the rest is predicted and the bad files are listed in
OUTPUT.rejected.csv (the exit status is then 0, and the count is printed).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import numpy as np
from etils import epath

from pcam_tfds.core.layout import IMAGE_EXTENSIONS


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m trainer.predict", description=__doc__.split("\n\n")[0])
    p.add_argument("--model_dir", nargs="+", action="extend", required=True, help="one or more trainer run folders")
    p.add_argument("run_dirs", nargs="*", help="more run folders (same as further --model_dir values)")
    p.add_argument("--output", required=True, help="submission CSV to write (id,label)")
    p.add_argument("--tta", action="store_true", help="average over the 8 flips/90-degree rotations")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data_dir", help="TFDS data dir holding the built dataset")
    source.add_argument("--input_dir", help="folder of patch files (Kaggle's test/)")
    p.add_argument("--dataset", default="pcam/full", help="TFDS NAME/CONFIG with --data_dir (default pcam/full)")
    p.add_argument("--split", default="test", help="split to predict with --data_dir (default test)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="apply each run's fitted temperature (calibration.json) before averaging",
    )
    p.add_argument(
        "--hard_labels",
        metavar="youden|f1|0.5|T",
        help="write 0/1 labels instead of probabilities, at the run's validation Youden or F1 threshold, "
        "or at a number T (Kaggle scores AUC: probabilities are the default and score better)",
    )
    p.add_argument(
        "--allow_rejected",
        action="store_true",
        help="predict the readable files and list unreadable ones in OUTPUT.rejected.csv",
    )
    args = p.parse_args(argv)
    args.model_dir = list(args.model_dir) + list(args.run_dirs)
    if args.batch_size <= 0:
        p.error(f"--batch_size={args.batch_size} must be > 0")
    if args.hard_labels is not None and args.hard_labels not in ("youden", "f1"):
        try:
            value = float(args.hard_labels)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            p.error(f"--hard_labels={args.hard_labels!r}: choose youden, f1 or a number in [0, 1]")
    if args.hard_labels in ("youden", "f1") and len(args.model_dir) != 1:
        p.error(
            f"--hard_labels={args.hard_labels} uses one run's validation threshold; an ensemble of "
            f"{len(args.model_dir)} runs has none: give a number"
        )
    return args


def hard_label_threshold(choice: str, run_dir: str, calibrated: bool) -> float:
    """The threshold for --hard_labels: a number, or the run's validation Youden/F1 threshold (metrics.json).

    Calibrated probabilities move, so a named threshold is mapped through the same temperature.
    """
    if choice not in ("youden", "f1"):
        return float(choice)
    import json

    from trainer import calibration

    path = epath.Path(run_dir) / "metrics.json"
    at = json.loads(path.read_text()).get("at_threshold", {}) if path.exists() else {}
    if choice not in at:
        raise ValueError(f"{path} has no {choice} threshold (runs record one when they finish; older runs do not)")
    threshold = at[choice]["threshold"]
    if calibrated:
        threshold = float(calibration.apply_temperature([threshold], calibration.read_temperature(run_dir))[0])
    return threshold


def check_writable(path: str) -> None:
    """Fails before any prediction when the submission cannot be written (a missing folder, no permission)."""
    folder = epath.Path(path).parent
    if not folder.is_dir():
        raise ValueError(f"--output={path!r}: the folder {str(folder)!r} does not exist")
    if not os.access(str(folder), os.W_OK):
        raise ValueError(f"--output={path!r}: the folder {str(folder)!r} is not writable")


def list_patch_files(input_dir: str) -> list[epath.Path]:
    """Every file in `input_dir`, sorted; files with other suffixes are returned too, so they get rejected loudly."""
    root = epath.Path(input_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--input_dir={input_dir!r} is not a folder")
    return sorted(p for p in root.iterdir() if not p.is_dir() and not p.name.startswith("."))


def read_folder(files: list[epath.Path], batch_size: int, rejected: list):
    """Yields {"image": uint8 (B, 96, 96, 3), "id"} batches; appends (file, reason, detail) of bad files to `rejected`.

    Lazy, so a 57k-file test folder is never held in memory at once.
    """
    from pcam_tfds.core import patches

    images, ids = [], []
    for path in files:
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            rejected.append((str(path), "unsupported_suffix", f"expected one of {', '.join(IMAGE_EXTENSIONS)}"))
            continue
        try:
            images.append(patches.read_patch(str(path)))
        except patches.PatchError as e:
            rejected.append((str(path), e.reason, e.detail))
            continue
        except OSError as e:
            rejected.append((str(path), "unreadable", str(e)))
            continue
        ids.append(path.stem)
        if len(images) == batch_size:
            yield {"image": np.stack(images), "id": np.asarray(ids)}
            images, ids = [], []
    if images:
        yield {"image": np.stack(images), "id": np.asarray(ids)}


def write_submission(path: str, ids, probs, threshold: float | None = None) -> None:
    """id,label rows: probabilities, or 0/1 at `threshold`; written to a temporary file, then renamed."""
    from pcam_tfds.folder_lock import atomic_path

    with atomic_path(path) as tmp, tmp.open("w") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        for i, p in zip(ids, probs):
            writer.writerow([i, int(p >= threshold) if threshold is not None else f"{float(p):.6f}"])


def main(argv=None) -> int:
    args = parse_args(argv)
    from trainer import calibration, data, inference

    try:
        check_writable(args.output)
        threshold = (
            hard_label_threshold(args.hard_labels, args.model_dir[0], args.calibrate)
            if args.hard_labels is not None
            else None
        )
        temperatures = [calibration.read_temperature(d) for d in args.model_dir] if args.calibrate else None
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rejected = []
    try:
        models = [inference.load_model(d) for d in args.model_dir]
        if args.input_dir:
            batches = read_folder(list_patch_files(args.input_dir), args.batch_size, rejected)
        else:
            builder = data.load_builder(args.data_dir, args.dataset)
            ds = data.eval_dataset(data.split_files(builder, args.split), args.batch_size, with_ids=True)
            batches = ds.as_numpy_iterator()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ids, _, probs = inference.predict_batches(models, batches, tta=args.tta, temperatures=temperatures)
    if rejected and not args.allow_rejected:
        for name, reason, detail in rejected:
            print(f"error: {name}: {reason}: {detail}", file=sys.stderr)
        print(
            f"error: {len(rejected)} unreadable input files; nothing written "
            "(--allow_rejected predicts the rest and lists them)",
            file=sys.stderr,
        )
        return 1
    if not ids:
        print("error: no patches to predict", file=sys.stderr)
        return 1
    write_submission(args.output, ids, probs, threshold)
    what = "predictions" if threshold is None else f"0/1 labels (threshold {threshold:.4f})"
    print(
        f"wrote {len(ids)} {what} from {len(models)} model(s){' with TTA' if args.tta else ''}"
        f"{', calibrated' if args.calibrate else ''} to {args.output}"
    )
    if rejected:
        rejected_path = f"{args.output}.rejected.csv"
        with epath.Path(rejected_path).open("w") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "reason", "detail"])
            writer.writerows(rejected)
        print(f"warning: {len(rejected)} unreadable files listed in {rejected_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
