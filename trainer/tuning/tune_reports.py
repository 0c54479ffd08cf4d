"""The reports of a search in TUNER_DIR: trials.json, trials.md and best_hyperparameters.json.

    records = write_reports(tuner, config)     # after every trial of a standalone search, and at its end

trials.json holds every trial the oracle knows (hyperparameters, metrics, score, and its run_info.json)
and the search's settings; trials.md ranks them, best first; best_hyperparameters.json is the flat file
`python -m trainer --model=tuned --hparams=...` reads.
"""

from __future__ import annotations

import json
from typing import Any

import keras_tuner
from absl import logging
from etils import epath

from pcam_tfds.core.folder_lock import atomic_write_text
from trainer.config import hparams
from trainer.tuning import tune_config, tuners

TRIALS_JSON = "trials.json"
TRIALS_MD = "trials.md"
BEST_HPARAMS = "best_hyperparameters.json"


def _clean(value):
    # 12 significant digits drop binary noise (0.6000000000000001) and keep every value that was meant.
    return float(f"{value:.12g}") if isinstance(value, float) else value


def best_hparams(trial, batch_size: int) -> dict[str, Any]:
    """The flat {name: value} file `python -m trainer --model=tuned --hparams=...` reads."""
    values = {k: _clean(trial.hyperparameters.values[k]) for k in hparams.KEYS if k in trial.hyperparameters.values}
    values["batch_size"] = batch_size  # the learning rate was found at this batch size
    return values


def trial_records(tuner: keras_tuner.Tuner) -> list[dict[str, Any]]:
    """Every trial the oracle knows, in id order, with its run_info.json when the trial has ended."""
    records = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        info_path = epath.Path(tuner.project_dir) / f"trial_{trial_id}" / tuners.RUN_INFO
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        metrics = {
            name: _clean(float(trial.metrics.get_last_value(name)))
            for name in trial.metrics.metrics
            if trial.metrics.get_last_value(name) is not None
        }
        records.append(
            {
                "trial_id": trial_id,
                "status": trial.status,
                "score": None if trial.score is None else _clean(float(trial.score)),
                "hyperparameters": {k: _clean(v) for k, v in trial.hyperparameters.values.items()},
                "metrics": metrics,
                **{k: v for k, v in info.items() if k != "status"},
                **({"message": trial.message.strip().splitlines()[-1]} if trial.message else {}),
            }
        )
    return records


def _markdown(records: list[dict], columns: list[str], best: dict | None) -> str:
    ranked = sorted(records, key=lambda r: (r["score"] is None, -(r["score"] or 0.0), r["trial_id"]))
    head = ["trial", *columns, tuners.OBJECTIVE.name, "best epoch", "epochs", "status", "seconds", "RSS MiB", "tuner"]
    lines = [f"# Trials, best {tuners.OBJECTIVE.name} first", ""]
    if best:
        lines += [
            f"Best: trial {best['trial_id']}, {tuners.OBJECTIVE.name} {best['score']:.4f} "
            f"(epoch {best.get('best_epoch', '?')} of {best.get('epochs', '?')}); `{BEST_HPARAMS}` holds its "
            "hyperparameters.",
            "",
        ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ranked:
        hps = [r["hyperparameters"].get(c, "") for c in columns]
        cells = [
            r["trial_id"],
            *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in hps),
            "" if r["score"] is None else f"{r['score']:.4f}",
            r.get("best_epoch", ""),
            r.get("epochs", ""),
            r["status"],
            r.get("seconds", ""),
            r.get("rss_mib", ""),
            r.get("tuner_id", ""),
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def write_reports(tuner: keras_tuner.Tuner, config: tune_config.TuneConfig) -> list[dict[str, Any]]:
    """trials.json, trials.md and (once a trial completed) best_hyperparameters.json in TUNER_DIR."""
    out = epath.Path(config.tuner_dir)
    records = trial_records(tuner)
    # Columns: the tuned names, then Hyperband's round bookkeeping (tuner/epochs ...) if any.
    tuned = [
        hp.name
        for hp in tuner.oracle.hyperparameters.space
        if not isinstance(hp, keras_tuner.engine.hyperparameters.Fixed)
    ]
    extra = sorted(
        {k for r in records for k in r["hyperparameters"] if k.startswith("tuner/") and k != "tuner/trial_id"}
    )
    best_trials = tuner.oracle.get_best_trials(1)
    best = next((r for r in records if best_trials and r["trial_id"] == best_trials[0].trial_id), None)
    summary = {
        "objective": {"name": tuners.OBJECTIVE.name, "direction": tuners.OBJECTIVE.direction},
        "tuner": config.tuner,
        "space": config.space,
        "best_trial_id": best and best["trial_id"],
        # Every setting that decides what a trial computes, the channel statistics' values included.
        "search": json.loads((out / tune_config.TUNE_CONFIG_FILE).read_text())
        if (out / tune_config.TUNE_CONFIG_FILE).exists()
        else None,
        "trials": records,
    }
    atomic_write_text(out / TRIALS_JSON, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / TRIALS_MD, _markdown(records, tuned + extra, best))
    if best_trials:
        atomic_write_text(
            out / BEST_HPARAMS, json.dumps(best_hparams(best_trials[0], config.trial.batch_size), indent=2) + "\n"
        )
    else:
        logging.warning("no trial has completed yet: no %s", out / BEST_HPARAMS)
    return records
