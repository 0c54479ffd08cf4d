"""A Hyperband search against the seed notebook's configuration, each given the same CPU budget.

    python bench/bench_tuning_budget.py --data_dir=TFDS_DIR --work_dir=/tmp/hb_bench [--cpu_minutes=60]
    python bench/bench_tuning_budget.py --work_dir=/tmp/hb_bench --report_only   # summarise finished runs

Both run at once, each pinned to its own core (taskset; Linux), each stopped by --max_cpu_minutes:
- hyperband: `python -m trainer.tuning.tune --tuner=hyperband --space=wide --epochs=9` (max 9 epochs a model),
- seed: `python -m trainer --model=tuned --learning_rate=1e-3 --dropout=0.4` (the notebook's tuning
  result: the seed CNN 32-64-128, dense 128, Adam) for up to 200 epochs, early-stopping patience 5.
An "epoch" is --steps_per_epoch batches of 64 in both (default 100: 6,400 patches), so both report
validation AUC on the whole validation split equally often. Prints the Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys

import measure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(a) -> dict[str, list[str]]:
    py = sys.executable
    common = [
        f"--data_dir={a.data_dir}",
        f"--steps_per_epoch={a.steps_per_epoch}",
        f"--max_cpu_minutes={a.cpu_minutes}",
        "--verbose=2",
    ]
    return {
        "hyperband": [
            "taskset",
            "-c",
            "0",
            py,
            "-m",
            "trainer.tuning.tune",
            f"--tuner_dir={a.work_dir}/hyperband",
            "--tuner=hyperband",
            "--space=wide",
            "--epochs=9",
            "--hyperband_factor=3",
            *common,
        ],
        "seed": [
            "taskset",
            "-c",
            "1",
            py,
            "-m",
            "trainer",
            "--model=tuned",
            "--learning_rate=1e-3",
            "--dropout=0.4",
            f"--model_dir={a.work_dir}/seed",
            "--epochs=200",
            "--early_stopping_patience=5",
            *common,
        ],
    }


def hyperband_summary(tuner_dir: str) -> dict:
    with open(os.path.join(tuner_dir, "trials.json")) as f:
        trials = [t for t in json.load(f)["trials"] if t["status"] == "COMPLETED"]
    # Hyperband continues a promoted model from its checkpoint: a trial trains epochs - initial_epoch.
    epochs = sum(t.get("epochs", 0) - int(t["hyperparameters"].get("tuner/initial_epoch", 0)) for t in trials)
    best = max(trials, key=lambda t: t["score"])
    hps = {k: v for k, v in best["hyperparameters"].items() if not k.startswith("tuner/")}
    return {
        "trials": len(trials),
        "epochs": epochs,
        "best_val_auc": best["score"],
        "best": hps,
        "best_trial": best["trial_id"],
        "best_epoch": best.get("best_epoch"),
        "max_rss_mib": max(t.get("rss_mib", 0) for t in trials),
    }


def seed_summary(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "training_log.csv")) as f:
        rows = list(csv.DictReader(f))
    aucs = [float(r["val_auc"]) for r in rows]
    best = max(range(len(aucs)), key=aucs.__getitem__)
    metrics = {}
    if os.path.exists(os.path.join(run_dir, "metrics.json")):
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
    return {
        "epochs": len(rows),
        "best_val_auc": aucs[best],
        "best_epoch": best + 1,
        "exact_auc": metrics.get("roc_auc"),
        "ci95": metrics.get("roc_auc_ci95"),
    }


def report(work_dir: str, runs: dict | None = None) -> None:
    hb, seed = hyperband_summary(f"{work_dir}/hyperband"), seed_summary(f"{work_dir}/seed")
    runs = runs or {}
    print("| arm | CPU s | wall s | models trained | epochs (all models) | best val_auc (Keras, epoch) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, s, models in (("hyperband", hb, hb["trials"]), ("seed config", seed, 1)):
        r = runs.get(name.split()[0], {})
        print(
            f"| {name} | {r.get('cpu_s', '')} | {r.get('wall_s', '')} | {models} | {s['epochs']} | "
            f"{s['best_val_auc']:.4f} (epoch {s['best_epoch']}) |"
        )
    print(
        f"\nhyperband best (trial {hb['best_trial']}): {json.dumps(hb['best'])}; largest RSS after a trial "
        f"{hb['max_rss_mib']} MiB"
    )
    if seed["exact_auc"] is not None:
        print(
            f"seed config, best weights, exact ROC AUC on validation (metrics.json): {seed['exact_auc']:.4f} "
            f"[{seed['ci95'][0]:.4f}, {seed['ci95'][1]:.4f}]"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", help="TFDS data dir holding pcam/full")
    ap.add_argument("--work_dir", required=True)
    ap.add_argument("--cpu_minutes", type=float, default=60.0)
    ap.add_argument("--steps_per_epoch", type=int, default=100)
    ap.add_argument("--report_only", action="store_true")
    a = ap.parse_args(argv)
    if a.report_only:
        return report(a.work_dir)
    if not a.data_dir:
        ap.error("--data_dir is required unless --report_only")
    shutil.rmtree(a.work_dir, ignore_errors=True)
    os.makedirs(a.work_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1"}
    procs = {}
    for name, cmd in commands(a).items():
        print(" ".join(cmd), flush=True)
        log = open(os.path.join(a.work_dir, f"{name}.log"), "w")  # noqa: SIM115 (closed with the process)
        procs[name] = (
            subprocess.Popen(
                ["/usr/bin/time", "-f", "%e %U %S %M", "-o", f"{a.work_dir}/{name}.time", *cmd],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            ),
            log,
        )
    runs = {}
    for name, (proc, log) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name} failed; see {a.work_dir}/{name}.log")
        log.close()
        wall, user, system, _ = open(f"{a.work_dir}/{name}.time").read().split()
        runs[name] = {"wall_s": round(float(wall)), "cpu_s": round(float(user) + float(system))}
    print(measure.machine())
    report(a.work_dir, runs)


if __name__ == "__main__":
    main()
