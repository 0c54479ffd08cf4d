"""pcam-evaluate: finished runs (several: their ensemble) on any labelled set, with the same report as training
writes (trainer.evaluation.report) into --output_dir.

    pcam-evaluate --model_dir=runs/baseline --input_dir=SAMPLE/test --labels=SAMPLE/test_labels.csv \\
        --output_dir=runs/baseline/external
    pcam-evaluate --model_dir=runs/baseline --data_dir=TFDS_DIR --split=validation --output_dir=eval/baseline
    pcam-evaluate --model_dir=runs/a --model_dir=runs/b --data_dir=TFDS_DIR --split=validation \\
        --output_dir=results/ensemble
    python -m trainer.inference.evaluate ...     # the same command

Thresholds other than 0.5 are those chosen on the run's validation split (its metrics.json), never on
the set evaluated; an ensemble gets only 0.5. --calibrate applies each run's temperature
(calibration.json) before averaging. Galleries (errors; Grad-CAM for a single run) show the set's patches.
The predictions go to OUTPUT_DIR/predictions.csv, whatever the set (a run folder's own validation
predictions are val_predictions.csv).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from etils import epath

from trainer import errors, run_folder
from trainer.config import cli, options
from trainer.config.options import option

# The seed of the bootstrap intervals of the metrics (the training's report uses the run's own seed).
BOOTSTRAP_SEED = 0


def _run_thresholds(model_dirs: tuple[str, ...]) -> dict[str, float]:
    """One run's validation thresholds, to apply here; none for ensembles and for --refit runs."""
    from trainer.inference import calibration

    if len(model_dirs) != 1:
        return {}
    try:
        return calibration.validation_thresholds(model_dirs[0])
    except calibration.NotHeldOut:
        return {}


def _trained_splits(model_dirs: tuple[str, ...]) -> set[str]:
    """The splits the runs trained on (TrainConfig.train_splits of their config.json; train where it is missing)."""
    from trainer.config import train_config

    splits = set()
    for d in model_dirs:
        path = epath.Path(d) / run_folder.CONFIG_FILE
        splits.update(
            train_config.TrainConfig.from_json(path.read_text()).train_splits if path.exists() else ("train",)
        )
    return splits


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """What one evaluation does: the runs (several: their ensemble), the labelled set (a folder with its labels
    CSV, or a split of a built dataset) and how to predict it; each field is also the pcam-evaluate flag of its
    name (--model_dir for model_dirs, --labels for labels_csv), and `check` rejects impossible combinations."""

    model_dirs: tuple[str, ...] = options.model_dirs()
    output_dir: str = options.output_dir("metrics.json, predictions.csv and the figures")
    input_dir: str | None = options.input_dir()
    labels_csv: str | None = option(None, "id,label CSV of the patches in --input_dir.", flag_name="labels")
    data_dir: str | None = options.data_dir()
    dataset: str = options.dataset()
    split: str = options.split("validation")
    tta: bool = options.tta()
    calibrate: bool = options.calibrate()
    batch_size: int = options.prediction_batch_size()

    def check(self) -> EvaluateConfig:
        """Raises UsageError naming the flag of an impossible combination; returns self."""
        if not self.model_dirs:
            raise errors.UsageError("--model_dir: give at least one trainer run folder")
        if (self.input_dir is None) == (self.data_dir is None):
            raise errors.UsageError("give either --input_dir with --labels, or --data_dir (with --split)")
        if self.input_dir is not None and not self.labels_csv:
            raise errors.UsageError("--input_dir needs --labels=CSV (id,label) for the patches in it")
        if self.batch_size <= 0:
            raise errors.UsageError(f"--batch_size={self.batch_size} must be > 0")
        return self


def evaluate_runs(config: EvaluateConfig) -> dict:
    """Predicts the set with the runs (averaged), then writes the report into output_dir; returns its metrics."""
    from trainer.evaluation import report
    from trainer.inference import calibration, explain, probabilities

    c = config.check()
    out = epath.Path(c.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(str(out), os.W_OK):
        raise errors.UsageError(f"--output_dir={c.output_dir!r} is not writable")
    models = [probabilities.load_model(d) for d in c.model_dirs]
    temperatures = [calibration.read_temperature(d) for d in c.model_dirs] if c.calibrate else None
    if c.input_dir is not None:
        ids, labels, probs, images_for = _predict_folder(
            models, c.input_dir, c.labels_csv, c.batch_size, c.tta, temperatures
        )
        set_name = f"{c.input_dir} (labels {c.labels_csv})"
    else:
        ids, labels, probs, images_for = _predict_split(
            models, c.data_dir, c.dataset, c.split, c.batch_size, c.tta, temperatures
        )
        set_name = f"{c.dataset}:{c.split} ({c.data_dir})"
    held_out = c.input_dir is not None or c.split not in _trained_splits(c.model_dirs)
    return report.write_report(
        out,
        models[0].name if len(models) == 1 else f"ensemble of {len(models)}",
        report.ScoredSet(set_name, ids, labels, probs, held_out=held_out),
        predictions_file=run_folder.PREDICTIONS,
        seed=BOOTSTRAP_SEED,
        thresholds=_run_thresholds(c.model_dirs),
        images_for=images_for,
        gradcam=explain.GradCam(models[0]) if len(models) == 1 else None,
        record={"model_dirs": list(c.model_dirs), "tta": c.tta, "calibrated": c.calibrate},
    )


def _predict_folder(models, input_dir: str, labels_csv: str, batch_size: int, tta: bool, temperatures):
    """(ids, labels, probabilities, images_for) of a folder of patch files labelled by an id,label CSV; every file
    must be readable and labelled, and every label must have its file."""
    from pcam_tfds.core import patches
    from trainer.evaluation import files as files_lib
    from trainer.inference import patch_folder, probabilities

    truth = files_lib.read_labels_csv(labels_csv)
    files = patch_folder.list_patch_files(input_dir)
    rejected: list = []
    ids, _, probs = probabilities.predict_batches(
        models, patch_folder.read_folder(files, batch_size, rejected), tta=tta, temperatures=temperatures
    )
    if rejected:
        detail = "; ".join(f"{name}: {reason}" for name, reason, _ in rejected[:5])
        raise errors.UsageError(f"{len(rejected)} files in --input_dir={input_dir!r} could not be read ({detail})")
    unlabelled = sorted(set(ids) - set(truth))
    missing = sorted(set(truth) - set(ids))
    if unlabelled or missing:
        raise errors.UsageError(
            f"--input_dir and --labels disagree: {len(unlabelled)} files have no label "
            f"(e.g. {unlabelled[:3]}), {len(missing)} labels have no file (e.g. {missing[:3]})"
        )
    by_id = {p.stem: p for p in files}

    def images_for(wanted):
        return {i: patches.read_patch(str(by_id[i])) for i in wanted}

    return ids, np.array([truth[i] for i in ids]), probs, images_for


def _predict_split(models, data_dir: str, dataset: str, split: str, batch_size: int, tta: bool, temperatures):
    """(ids, labels, probabilities, images_for) of a labelled split of a built TFDS dataset."""
    from trainer import data
    from trainer.evaluation import report
    from trainer.inference import probabilities

    builder = data.load_builder(data_dir, dataset)
    ds = data.eval_dataset(data.split_files(builder, split), batch_size, with_ids=True)
    ids, labels, probs = probabilities.predict_batches(
        models, ds.as_numpy_iterator(), tta=tta, temperatures=temperatures
    )
    if labels is None or (labels < 0).any():
        raise errors.UsageError(f"split {split!r} of {dataset} is unlabelled (label -1); evaluate a labelled split")

    def images_for(wanted):
        return report.collect_images(ds.as_numpy_iterator(), wanted)

    return ids, labels, probs, images_for


def define_flags(flag_values) -> None:
    cli.define(flag_values, EvaluateConfig)


def _main(argv) -> int:
    from absl import flags

    config = cli.make(flags.FLAGS, EvaluateConfig, argv[1:])
    m = evaluate_runs(config)
    lo, hi = m["roc_auc_ci95"]
    print(
        f"{m['model']} on {m['set']}: ROC AUC {m['roc_auc']:.4f} (95% CI {lo:.4f}-{hi:.4f}), "
        f"AP {m['average_precision']:.4f}, accuracy at 0.5 {m['accuracy']:.4f}; wrote "
        f"{config.output_dir}/{run_folder.METRICS_FILE}"
    )
    return 0


def main() -> None:
    """The console script `pcam-evaluate` (and `python -m trainer.inference.evaluate`)."""
    from absl import flags

    define_flags(flags.FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    main()
