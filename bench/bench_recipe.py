"""Training recipes under one CPU budget, scored on the internal validation split and on unseen slides.

    python bench/bench_recipe.py --data_dir=TFDS_DIR --labels=../shared/data/pcam_sample/test_labels.csv \\
        --work_dir=/tmp/recipe --cpu_minutes=30 --core=0 --arm=default -- --model=baseline
    python bench/bench_recipe.py ... --arm=constant --core=1 -- --model=baseline --schedule=constant --ema=0
    python bench/bench_recipe.py --work_dir=/tmp/recipe --labels=... --ensemble=default,hed   # an ensemble's score
    python bench/bench_recipe.py --work_dir=/tmp/recipe --labels=... --best_ensemble=120      # chosen on validation
    python bench/bench_recipe.py --work_dir=/tmp/recipe --report                              # the Markdown table

One arm: `python -m trainer <flags after --> --max_cpu_minutes=N` pinned to one core (taskset, so two
arms can run side by side without sharing a core), then `trainer.inference.predict` on the dataset's `test`
split with and without --tta, scored against --labels (the external set's id,label CSV: the sample's
`test/` comes from slides that are not in its `train/`). The external labels are only read here, after
training: nothing is chosen on them. Writes WORK_DIR/ARM/bench.json; --report prints every arm.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def read_probs(path: str) -> dict[str, float]:
    with open(path) as f:
        return {row["id"]: float(row["label"]) for row in csv.DictReader(f)}


def score(probs: dict[str, float], labels: dict[str, int], seed: int = 0) -> dict:
    """ROC AUC with a bootstrap 95% interval over the labelled ids (every one must have a prediction)."""
    from trainer.evaluation import metrics

    missing = sorted(set(labels) - set(probs))
    if missing:
        raise SystemExit(f"{len(missing)} labelled ids have no prediction, e.g. {missing[:3]}")
    ids = sorted(labels)
    y = np.array([labels[i] for i in ids])
    p = np.array([probs[i] for i in ids])
    m = metrics.compute_metrics(y, p, seed=seed)
    return {"auc": round(m["roc_auc"], 4), "ci95": [round(v, 4) for v in m["roc_auc_ci95"]], "n": len(ids)}


def read_val_predictions(path: str) -> dict[str, tuple[int, float]]:
    """id -> (label, probability) from a run's val_predictions.csv."""
    with open(path) as f:
        return {row["id"]: (int(row["label"]), float(row["probability"])) for row in csv.DictReader(f)}


def read_labels(path: str) -> dict[str, int]:
    with open(path) as f:
        return {row["id"]: int(row["label"]) for row in csv.DictReader(f)}


def run_arm(a, trainer_flags: list[str]) -> dict:
    run_dir = os.path.join(a.work_dir, a.arm)
    os.makedirs(run_dir, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    pin = ["taskset", "-c", str(a.core)] if a.core is not None else []
    train = [
        *pin,
        sys.executable,
        "-m",
        "trainer",
        f"--data_dir={a.data_dir}",
        f"--model_dir={run_dir}/run",
        f"--max_cpu_minutes={a.cpu_minutes}",
        "--verbose=2",
        *trainer_flags,
    ]
    timing = os.path.join(run_dir, "train.time")
    with open(os.path.join(run_dir, "train.log"), "w") as log:
        print(" ".join(train), file=log, flush=True)
        subprocess.run(
            ["/usr/bin/time", "-f", "%e %U %S", "-o", timing, *train],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            check=True,
        )
    wall, user, system = open(timing).read().split()[-3:]
    result = {
        "arm": a.arm,
        "flags": trainer_flags,
        "cpu_minutes": a.cpu_minutes,
        "train_wall_s": round(float(wall)),
        "train_cpu_s": round(float(user) + float(system)),
    }
    with open(os.path.join(run_dir, "run", "metrics.json")) as f:
        metrics = json.load(f)
    result["val_auc"] = round(metrics["roc_auc"], 4)
    result["val_ci95"] = [round(v, 4) for v in metrics["roc_auc_ci95"]]
    result["val_held_out"] = metrics.get("held_out", True)  # False for --refit, which trained on validation
    with open(os.path.join(run_dir, "run", "training_log.csv")) as f:
        result["epochs"] = sum(1 for _ in csv.DictReader(f))
    labels = read_labels(a.labels)
    for tta in (False, True):
        out = os.path.join(run_dir, f"test{'_tta' if tta else ''}.csv")
        predict = [
            *pin,
            sys.executable,
            "-m",
            "trainer.inference.predict",
            f"--model_dir={run_dir}/run",
            f"--data_dir={a.data_dir}",
            f"--output={out}",
            *(["--tta"] if tta else []),
        ]
        subprocess.run(predict, cwd=REPO, env=env, check=True, capture_output=True)
        result["external_tta" if tta else "external"] = score(read_probs(out), labels)
    with open(os.path.join(run_dir, "bench.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def ensemble(a) -> dict:
    """The mean of the arms' saved predictions (probabilities), scored; costs no training."""
    arms = a.ensemble.split(",")
    labels = read_labels(a.labels)
    result = {"ensemble": arms}
    # The ensemble's validation AUC (the split the arms chose on) comes first: ensembles are chosen on it.
    val = [read_val_predictions(os.path.join(a.work_dir, arm, "run", "val_predictions.csv")) for arm in arms]
    val_labels = {i: label for i, (label, _) in val[0].items()}
    result["val_auc"] = score({i: float(np.mean([v[i][1] for v in val])) for i in val_labels}, val_labels)["auc"]
    for suffix, key in (("", "external"), ("_tta", "external_tta")):
        runs = [read_probs(os.path.join(a.work_dir, arm, f"test{suffix}.csv")) for arm in arms]
        mean = {i: float(np.mean([r[i] for r in runs])) for i in runs[0]}
        result[key] = score(mean, labels)
    benches = [json.load(open(os.path.join(a.work_dir, arm, "bench.json"))) for arm in arms]
    result["train_cpu_s"] = sum(b["train_cpu_s"] for b in benches)
    result["val_held_out"] = all(b.get("val_held_out", True) for b in benches)
    return result


def best_ensemble(a) -> dict:
    """Of every set of two or more finished arms (not --refit ones) whose CPU budgets (--cpu_minutes each was
    given) add up to at most --best_ensemble minutes, the one whose averaged validation predictions score the
    highest validation AUC; then that set, and only it, is scored on the external set. The choice never reads
    the external labels."""
    import itertools

    from trainer.evaluation import metrics

    pool = {}
    for arm in sorted(os.listdir(a.work_dir)):
        bench, val = (os.path.join(a.work_dir, arm, *p) for p in (("bench.json",), ("run", "val_predictions.csv")))
        if not (os.path.exists(bench) and os.path.exists(val)):
            continue
        result = json.load(open(bench))
        # A --refit arm trained on the validation split: its predictions there cannot choose an ensemble.
        if result.get("val_held_out", True):
            pool[arm] = (result["cpu_minutes"], read_val_predictions(val))
    ids = sorted(next(iter(pool.values()))[1])
    if any(sorted(v) != ids for _, v in pool.values()):
        raise SystemExit("the arms' val_predictions.csv cover different ids: not the same validation split")
    y = np.array([pool[next(iter(pool))][1][i][0] for i in ids])
    probs = {arm: np.array([v[i][1] for i in ids]) for arm, (_, v) in pool.items()}
    best, considered = (0.0, ()), 0
    for size in range(2, len(pool) + 1):
        for arms in itertools.combinations(sorted(pool), size):
            if sum(pool[arm][0] for arm in arms) > a.best_ensemble + 1e-9:
                continue
            considered += 1
            auc = metrics.roc_auc(y, np.mean([probs[arm] for arm in arms], axis=0))
            best = max(best, (auc, arms))
    if not considered:
        raise SystemExit(f"no two finished arms fit into {a.best_ensemble} CPU-minutes")
    a.ensemble = ",".join(best[1])
    result = ensemble(a)
    result.update(cpu_minutes=sum(pool[arm][0] for arm in best[1]), sets_considered=considered, pool=sorted(pool))
    return result


def report(work_dir: str) -> None:
    print("| arm | recipe flags | train CPU s | epochs | val AUC | external AUC [95% CI] | with TTA |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for arm in sorted(os.listdir(work_dir)):
        path = os.path.join(work_dir, arm, "bench.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        ext, tta = r["external"], r["external_tta"]
        print(
            f"| {arm} | `{' '.join(r['flags'])}` | {r['train_cpu_s']} | {r['epochs']} | {r['val_auc']:.4f}"
            f"{'' if r.get('val_held_out', True) else ' (not held out)'} | "
            f"{ext['auc']:.4f} [{ext['ci95'][0]:.4f}, {ext['ci95'][1]:.4f}] | "
            f"{tta['auc']:.4f} [{tta['ci95'][0]:.4f}, {tta['ci95'][1]:.4f}] |"
        )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    trainer_flags = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work_dir", required=True)
    p.add_argument("--data_dir", help="TFDS data dir with pcam/full built from the sample's Kaggle layout")
    p.add_argument("--labels", help="id,label CSV of the dataset's test split (the external set)")
    p.add_argument("--arm", help="name of this recipe (a folder under --work_dir)")
    p.add_argument("--cpu_minutes", type=float, default=30.0)
    p.add_argument("--core", type=int, help="pin to this CPU core (taskset)")
    p.add_argument("--ensemble", help="comma-separated finished arms to average")
    p.add_argument(
        "--best_ensemble", type=float, help="CPU-minutes: pick the finished arms to average on validation AUC, score it"
    )
    p.add_argument("--report", action="store_true")
    a = p.parse_args(own)
    if a.report:
        report(a.work_dir)
    elif a.best_ensemble:
        print(json.dumps(best_ensemble(a), indent=2))
    elif a.ensemble:
        print(json.dumps(ensemble(a), indent=2))
    else:
        if not (a.arm and a.data_dir and a.labels):
            p.error("--arm, --data_dir and --labels are required to run an arm")
        print(json.dumps(run_arm(a, trainer_flags), indent=2))


if __name__ == "__main__":
    main()
