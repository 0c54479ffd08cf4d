"""Memory over a search: the process RSS after each of N trials of `python -m trainer.tuning.tune`.

    python bench/bench_tune_memory.py --data_dir=TFDS_DIR --work_dir=/tmp/tune_memory [--trials=10]

The seed space (one architecture; only learning rate and dropout change), so every trial builds the
same network and any growth is what trials leave behind. Each trial trains 20 batches of 64 and
validates on 5% of the validation split. Prints a Markdown row for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import measure


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", required=True, help="TFDS data dir holding pcam/full")
    ap.add_argument("--work_dir", required=True, help="emptied first; the tuner folder")
    ap.add_argument("--trials", type=int, default=10)
    a = ap.parse_args(argv)
    shutil.rmtree(a.work_dir, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "trainer.tuning.tune",
        f"--data_dir={a.data_dir}",
        f"--tuner_dir={a.work_dir}",
        "--tuner=random",
        "--space=seed",
        f"--max_trials={a.trials}",
        "--epochs=1",
        "--steps_per_epoch=20",
        "--sample_fraction=0.05",
        "--verbose=0",
    ]
    print(" ".join(cmd), flush=True)
    subprocess.run(
        cmd,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    with open(os.path.join(a.work_dir, "trials.json")) as f:
        trials = json.load(f)["trials"]
    rss = [t["rss_mib"] for t in trials]
    print(f"{measure.machine()}")
    print("| trials | RSS after each trial, MiB | last - first | largest step |")
    print("| ---: | --- | ---: | ---: |")
    steps = [b - a for a, b in zip(rss, rss[1:])]
    print(f"| {len(rss)} | {', '.join(f'{r:.0f}' for r in rss)} | {rss[-1] - rss[0]:+.0f} | {max(steps):+.0f} |")


if __name__ == "__main__":
    main()
