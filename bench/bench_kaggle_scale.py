"""Kaggle scale: time and memory of validate + `tfds build`, on Beam and in one process.

    python ../shared/tools/make_kaggle_layout.py /tmp/kaggle_full --scale kaggle   # 277,483 TIFFs, 7.7 GB
    python bench/bench_kaggle_scale.py /tmp/kaggle_full --work_dir=/tmp/bench_kaggle [--steps=validate,build,beam]

Runs, one after the other, each as a child process measured by bench/measure.py:
- validate: `python -m beam_jobs.validate` (DirectRunner, one worker process per core),
- build: `tfds build pcam_tfds/pcam --config=full` without Beam options: the single-process
  build (a reader pool validates, a plain generator feeds TFDS' writer),
- build_reuse: the same with PCAM_VALIDATION_DIR pointing at the validate step's output, so the
  build checks the folder against that validation instead of reading every file for its own
  (needs the validate step first, in the same run),
- beam: the same build with `--beam_pipeline_options` (DirectRunner, one worker process per core),
- beam_in_memory: the same on the DirectRunner in one process,
- floor: bench/read_floor.py, every file listed and read once in 2 threads: the speed to compare with.
Prints a Markdown table for bench/RESULTS.md and checks that both builds hold the same split sizes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys

import measure

BEAM_MODES = {
    "beam": "direct_running_mode=multi_processing,direct_num_workers=0",
    "beam_in_memory": "direct_running_mode=in_memory",
}


def split_sizes(dataset_dir: str) -> dict[str, int]:
    with open(os.path.join(dataset_dir, "dataset_info.json")) as f:
        info = json.load(f)
    return {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in info["splits"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir")
    ap.add_argument("--work_dir", required=True, help="emptied first; outputs of every step go here")
    ap.add_argument("--steps", default="validate,build,beam", help="comma-separated subset to run")
    a = ap.parse_args(argv)
    shutil.rmtree(a.work_dir, ignore_errors=True)
    os.makedirs(a.work_dir)
    py, tfds_cli = sys.executable, os.path.join(os.path.dirname(sys.executable), "tfds")
    steps = {
        "validate": [py, "-m", "beam_jobs.validate", f"--data_dir={a.data_dir}", f"--output_dir={a.work_dir}/validate"],
        "build": [
            tfds_cli,
            "build",
            "pcam_tfds/pcam",
            f"--manual_dir={a.data_dir}",
            f"--data_dir={a.work_dir}/tfds",
            "--config=full",
        ],
    }
    steps["floor"] = [py, os.path.join(os.path.dirname(os.path.abspath(__file__)), "read_floor.py"), a.data_dir]
    steps["build_reuse"] = [
        tfds_cli,
        "build",
        "pcam_tfds/pcam",
        f"--manual_dir={a.data_dir}",
        f"--data_dir={a.work_dir}/tfds_build_reuse",
        "--config=full",
    ]
    envs = {"build_reuse": {**os.environ, "PCAM_VALIDATION_DIR": f"{a.work_dir}/validate"}}
    for name, options in BEAM_MODES.items():
        steps[name] = [
            tfds_cli,
            "build",
            "pcam_tfds/pcam",
            f"--manual_dir={a.data_dir}",
            f"--data_dir={a.work_dir}/tfds_{name}",
            "--config=full",
            f"--beam_pipeline_options={options}",
        ]
    chosen = a.steps.split(",")
    num_files = sum(len(os.listdir(os.path.join(a.data_dir, s))) for s in ("train", "test"))
    results = {}
    for name in chosen:
        print(f"running {name}: {' '.join(steps[name])}", flush=True)
        try:
            r = measure.run_measured(steps[name], interval=0.5, env=envs.get(name))
        except RuntimeError as e:  # a failed step (e.g. the count check) is a result too
            print(f"  FAILED: {str(e)[-400:]}", flush=True)
            continue
        r.pop("output")
        r["files_per_s"] = round(num_files / r["wall_s"])
        results[name] = r
        print(f"  {r}", flush=True)
    sizes = {}
    if "floor" in results:
        for r in results.values():
            r["x_floor"] = round(r["wall_s"] / results["floor"]["wall_s"], 2)
    if "build" in results:
        d = f"{a.work_dir}/tfds/pcam/full/1.1.0"
        sizes["build"] = split_sizes(d)
        results["build"]["disk_mib"] = round(measure.du_bytes(d) / 2**20)
    for name in (*BEAM_MODES, "build_reuse"):
        if name in results:
            d = f"{a.work_dir}/tfds_{name}/pcam/full/1.1.0"
            sizes[name] = split_sizes(d)
            results[name]["disk_mib"] = round(measure.du_bytes(d) / 2**20)
    if any(v != sizes.get("build", v) for v in sizes.values()):
        raise SystemExit(f"the two builds disagree: {sizes}")
    print(
        f"\n{num_files:,} files; {measure.machine()}; load average now {os.getloadavg()}; "
        f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}"
    )
    print("| step | wall s | x floor | CPU s | files/s | peak RSS MiB | on disk MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['wall_s']} | {r.get('x_floor', '')} | {r['cpu_s']} | {r['files_per_s']:,} "
            f"| {r['peak_rss_mib']:,} | {r.get('disk_mib', '')} |"
        )
    print(f"split sizes: {sizes}")


if __name__ == "__main__":
    main()
