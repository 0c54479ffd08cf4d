"""Kaggle submission: a tumour probability for every test patch, from one run or an ensemble.

    pcam-predict --model_dir=runs/baseline --data_dir=TFDS_DIR --output=submission.csv
    pcam-predict --model_dir runs/resnet50 runs/densenet169 --tta \\
        --input_dir=KAGGLE_DIR/test --output=submission.csv
    python -m trainer.inference.predict ...      # the same command

Writes `id,label` with label = the probability (Kaggle scores ROC AUC, so probabilities beat 0/1);
--calibrate applies each run's fitted temperature, --hard_labels=youden|f1|T writes 0/1 labels. The
output folder is checked before anything is predicted.
Several run folders (--model_dir repeated, or more folders after it) average their probabilities;
--tta also averages the 8 flips/90-degree rotations.
Input is the test split of a built TFDS dataset (--data_dir, --dataset, --split) or a folder of patch
files (--input_dir: .tif/.tiff/.png/.jpg/.jpeg). An unreadable file fails the run with its name and
reason and exit status 1, no submission written; with --allow_rejected the rest is predicted and the bad files are listed in
OUTPUT.rejected.csv (the exit status is then 0, and the count is printed). A user's mistake (a bad flag,
a missing folder) is one line and exit status 2 (trainer.errors).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys

from absl import flags
from etils import epath

from trainer import errors, run_folder
from trainer.config import cli, options
from trainer.config.options import option
from trainer.inference import patch_folder

HARD_LABEL_NAMES = ("youden", "f1")


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """What one prediction run does; each field is also the pcam-predict flag of its name (--model_dir for
    model_dirs), and `check` rejects impossible combinations."""

    model_dirs: tuple[str, ...] = options.model_dirs()
    output: str = option(help="Submission CSV to write (id,label).", required=True)
    data_dir: str | None = options.data_dir()
    input_dir: str | None = options.input_dir()
    dataset: str = options.dataset()
    split: str = options.split("test")
    batch_size: int = options.prediction_batch_size()
    tta: bool = options.tta()
    calibrate: bool = options.calibrate()
    hard_labels: str | None = option(
        None,
        "youden|f1|T: write 0/1 labels instead of probabilities, at the run's validation Youden or F1 threshold, "
        "or at a number T (Kaggle scores AUC: probabilities are the default and score better).",
    )
    allow_rejected: bool = option(False, "Predict the readable files and list unreadable ones in OUTPUT.rejected.csv.")

    def check(self) -> PredictConfig:
        """Raises ValueError naming the flag of an impossible combination; returns self."""
        if not self.model_dirs:
            raise errors.UsageError("--model_dir: give at least one trainer run folder")
        if (self.data_dir is None) == (self.input_dir is None):
            raise errors.UsageError("give exactly one of --data_dir (a built TFDS dataset) and --input_dir (a folder)")
        if self.batch_size <= 0:
            raise errors.UsageError(f"--batch_size={self.batch_size} must be > 0")
        if self.hard_labels is not None and self.hard_labels not in HARD_LABEL_NAMES:
            try:
                value = float(self.hard_labels)
            except ValueError:
                value = -1.0
            if not 0.0 <= value <= 1.0:
                raise errors.UsageError(f"--hard_labels={self.hard_labels!r}: choose youden, f1 or a number in [0, 1]")
        if self.hard_labels in HARD_LABEL_NAMES and len(self.model_dirs) != 1:
            raise errors.UsageError(
                f"--hard_labels={self.hard_labels} uses one run's validation threshold; an ensemble of "
                f"{len(self.model_dirs)} runs has none: give a number"
            )
        return self


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command's flags, on `flag_values` (flags.FLAGS for the command, a fresh FlagValues in `run`)."""
    cli.define(flag_values, PredictConfig)


def config_from_flags(flag_values: flags.FlagValues, args: list[str]) -> PredictConfig:
    """The checked PredictConfig of parsed flags; `args` are the run folders listed after the flags."""
    return cli.make(flag_values, PredictConfig, args).check()


def hard_label_threshold(choice: str, model_dir: str, calibrated: bool) -> float:
    """The threshold for --hard_labels: a number, or the run's validation Youden/F1 threshold (metrics.json).

    Calibrated probabilities move, so a named threshold is mapped through the same temperature.
    """
    if choice not in ("youden", "f1"):
        return float(choice)
    from trainer.inference import calibration

    try:
        thresholds = calibration.validation_thresholds(model_dir)
    except calibration.NotHeldOut as e:
        raise errors.UsageError(
            f"{e}; give --hard_labels a number (e.g. the {choice} threshold of the run the recipe was chosen with)"
        ) from None
    if choice not in thresholds:
        raise errors.UsageError(
            f"{epath.Path(model_dir) / run_folder.METRICS_FILE} has no {choice} threshold "
            "(runs record one when they finish; older runs do not)"
        )
    threshold = thresholds[choice]
    if calibrated:
        threshold = float(calibration.apply_temperature([threshold], calibration.read_temperature(model_dir))[0])
    return threshold


def check_writable(path: str) -> None:
    """Fails before any prediction when the submission cannot be written (a missing folder, no permission)."""
    folder = epath.Path(path).parent
    if not folder.is_dir():
        raise errors.UsageError(f"--output={path!r}: the folder {str(folder)!r} does not exist")
    if not os.access(str(folder), os.W_OK):
        raise errors.UsageError(f"--output={path!r}: the folder {str(folder)!r} is not writable")


def write_submission(path: str, ids, probs, threshold: float | None = None) -> None:
    """id,label rows: probabilities, or 0/1 at `threshold`; written to a temporary file, then renamed."""
    from pcam_tfds.core.folder_lock import atomic_path

    with atomic_path(path) as tmp, tmp.open("w") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        for i, p in zip(ids, probs):
            writer.writerow([i, int(p >= threshold) if threshold is not None else f"{float(p):.6f}"])


@dataclasses.dataclass
class _Inputs:
    models: list
    batches: object  # an iterator of {"image", "id"} batches
    threshold: float | None
    temperatures: list[float] | None
    rejected: list  # (file, reason, detail), filled while `batches` is read


def prepare(config: PredictConfig) -> _Inputs:
    """Checks the output folder, reads the runs and opens the input; ValueError or FileNotFoundError for a user's
    mistake, before anything is predicted."""
    from trainer import data
    from trainer.inference import calibration, probabilities

    check_writable(config.output)
    threshold = (
        hard_label_threshold(config.hard_labels, config.model_dirs[0], config.calibrate)
        if config.hard_labels is not None
        else None
    )
    temperatures = [calibration.read_temperature(d) for d in config.model_dirs] if config.calibrate else None
    rejected = []
    models = [probabilities.load_model(d) for d in config.model_dirs]
    if config.input_dir:
        batches = patch_folder.read_folder(patch_folder.list_patch_files(config.input_dir), config.batch_size, rejected)
    else:
        builder = data.load_builder(config.data_dir, config.dataset)
        ds = data.eval_dataset(data.split_files(builder, config.split), config.batch_size, with_ids=True)
        batches = ds.as_numpy_iterator()
    return _Inputs(models, batches, threshold, temperatures, rejected)


def predict(config: PredictConfig, inputs: _Inputs | None = None) -> int:
    """Writes the submission of `config`; returns the exit status (1: unreadable inputs without --allow_rejected).

    inputs: `prepare(config)`, when the caller has already called it.
    """
    from trainer.inference import probabilities

    inputs = inputs or prepare(config)
    models, threshold, rejected = inputs.models, inputs.threshold, inputs.rejected
    ids, _, probs = probabilities.predict_batches(
        models, inputs.batches, tta=config.tta, temperatures=inputs.temperatures
    )
    if rejected and not config.allow_rejected:
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
    write_submission(config.output, ids, probs, threshold)
    what = "predictions" if threshold is None else f"0/1 labels (threshold {threshold:.4f})"
    print(
        f"wrote {len(ids)} {what} from {len(models)} model(s){' with TTA' if config.tta else ''}"
        f"{', calibrated' if config.calibrate else ''} to {config.output}"
    )
    if rejected:
        rejected_path = f"{config.output}.rejected.csv"
        from pcam_tfds.core.folder_lock import atomic_path

        with atomic_path(rejected_path) as tmp, tmp.open("w") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "reason", "detail"])
            writer.writerows(rejected)
        print(f"warning: {len(rejected)} unreadable files listed in {rejected_path}", file=sys.stderr)
    return 0


def run(argv: list[str]) -> int:
    """The command in this process, on its own FlagValues (tests); flag errors raise flags.Error, the rest as `predict`."""
    fv = flags.FlagValues()
    define_flags(fv)
    args = fv(["pcam-predict", *argv])[1:]
    return predict(config_from_flags(fv, args))


def _main(argv: list[str]) -> int:
    config = config_from_flags(flags.FLAGS, argv[1:])
    return predict(config, prepare(config))


def main() -> None:
    """The console script `pcam-predict` (and `python -m trainer.inference.predict`)."""
    define_flags(flags.FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
