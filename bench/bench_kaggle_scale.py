"""Kaggle scale: time and memory of validate + `tfds build`, on Beam and in one process.

    python ../shared/tools/make_kaggle_layout.py /tmp/kaggle_full --scale kaggle   # 277,483 TIFFs, 7.7 GB
    python bench/bench_kaggle_scale.py /tmp/kaggle_full --work_dir=/tmp/bench_kaggle [--steps=floor,validate,build,floor]

Runs the steps in the order given, each as a child process measured by bench/measure.py:
- floor: bench/read_floor.py, every file listed and read once in 2 threads: the speed to compare with;
- write_floor: bench/write_floor.py, as many bytes as the files hold written once in 2 threads (what a
  build writes beside what it reads); write_floor_sync: the same, each file fdatasync'ed (issue 39's floor);
  write_floor_direct: the same past the page cache (O_DIRECT), as the build's shard writers write;
- validate: `python -m beam_jobs.validate` (without Beam options: the local executor, one worker
  process per core);
- build: `tfds build pcam_tfds/pcam --config=full` without Beam options: the local build (worker
  processes validate, then write the shards, reading each valid file a second time);
- build_read_once: the same with PCAM_READ_ONCE=1 (each file read once, its pixels spilled);
- build_reuse: the same with PCAM_VALIDATION_DIR pointing at the validate step's output, so the
  build checks the folder against that validation instead of validating (needs validate before it);
- pcam_build: `pcam-build --config=full`, the toolkit's own command for the same build;
- beam: the build with `--beam_pipeline_options` (DirectRunner, one worker process per core);
- beam_in_memory: the same on the DirectRunner in one process.
Each build's dataset is removed once measured (--keep keeps them), so that it does not push the inputs
out of the page cache. Prints a Markdown table for bench/RESULTS.md and checks that every build holds the
same split sizes. The harness may measure another checkout of the toolkit: run it from that checkout with
its folder on PYTHONPATH (bench/RESULTS.md, issue 23).
"""

from __future__ import annotations

import argparse
import datetime
import glob
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
    ap.add_argument("manual_dir")
    ap.add_argument("--work_dir", required=True, help="emptied first; outputs of every step go here")
    ap.add_argument(
        "--steps", default="floor,validate,build,beam,floor", help="comma-separated, in order; a step may repeat"
    )
    ap.add_argument("--keep", action="store_true", help="keep each build's dataset (by default removed once measured)")
    a = ap.parse_args(argv)
    shutil.rmtree(a.work_dir, ignore_errors=True)
    os.makedirs(a.work_dir)
    py, bin_dir = sys.executable, os.path.dirname(sys.executable)

    def tfds_build(name, *options):
        out = f"{a.work_dir}/tfds_{name}"
        cmd = [os.path.join(bin_dir, "tfds"), "build", "pcam_tfds/pcam", f"--manual_dir={a.manual_dir}"]
        return cmd + [f"--data_dir={out}", "--config=full", *options], out

    # name: (command, the dataset folder it builds or None), and an environment where it needs one
    steps = {
        "floor": ([py, os.path.join(os.path.dirname(os.path.abspath(__file__)), "read_floor.py"), a.manual_dir], None),
        "write_floor": (
            [
                py,
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "write_floor.py"),
                a.manual_dir,
                f"--out_dir={a.work_dir}/write_floor",
            ],
            None,
        ),
        "write_floor_sync": (
            [
                py,
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "write_floor.py"),
                a.manual_dir,
                f"--out_dir={a.work_dir}/write_floor",
                "--fdatasync",
            ],
            None,
        ),
        "write_floor_direct": (
            [
                py,
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "write_floor.py"),
                a.manual_dir,
                f"--out_dir={a.work_dir}/write_floor",
                "--direct",
            ],
            None,
        ),
        "validate": (
            [py, "-m", "beam_jobs.validate", f"--manual_dir={a.manual_dir}", f"--output_dir={a.work_dir}/validate"],
            None,
        ),
        "build": tfds_build("build"),
        "build_read_once": tfds_build("build_read_once"),
        "build_reuse": tfds_build("build_reuse"),
        "pcam_build": (
            [
                os.path.join(bin_dir, "pcam-build"),
                f"--manual_dir={a.manual_dir}",
                f"--data_dir={a.work_dir}/tfds_pcam_build",
                "--config=full",
            ],
            f"{a.work_dir}/tfds_pcam_build",
        ),
    }
    for name, options in BEAM_MODES.items():
        steps[name] = tfds_build(name, f"--beam_pipeline_options={options}")
    envs = {
        "build_read_once": {**os.environ, "PCAM_READ_ONCE": "1"},
        "build_reuse": {**os.environ, "PCAM_VALIDATION_DIR": f"{a.work_dir}/validate"},
    }
    num_files = sum(len(os.listdir(os.path.join(a.manual_dir, s))) for s in ("train", "test"))
    results, sizes = {}, {}
    for name in a.steps.split(","):
        cmd, built = steps[name]
        label = name if name not in results else f"{name}#{sum(k.split('#')[0] == name for k in results) + 1}"
        print(f"running {label}: {' '.join(cmd)}", flush=True)
        # The previous step's written bytes (a build's 7 GB, removed or not) go to the disk before this one starts:
        # otherwise their writeback runs during it and is counted against it.
        os.sync()
        try:
            r = measure.run_measured(cmd, interval=0.5, env=envs.get(name))
        except RuntimeError as e:  # a failed step (e.g. the count check) is a result too
            print(f"  FAILED: {str(e)[-400:]}", flush=True)
            continue
        r.pop("output")
        r["files_per_s"] = round(num_files / r["wall_s"])
        if built:
            (d,) = glob.glob(os.path.join(built, "pcam/full/*.*.*"))  # the checkout's version (old code: 1.1.0)
            sizes[label] = split_sizes(d)
            r["disk_mib"] = round(measure.du_bytes(d) / 2**20)
            if not a.keep:  # so that the datasets of earlier steps do not crowd the inputs out of the page cache
                shutil.rmtree(built)
        results[label] = r
        print(f"  {r}", flush=True)
    floors = [r["wall_s"] for k, r in results.items() if k.split("#")[0] == "floor"]  # the read floor
    if floors:  # the least: what the machine can do (a floor measured while the page cache refills is higher)
        floor = min(floors)
        for r in results.values():
            r["x_floor"] = round(r["wall_s"] / floor, 2)
    if len({json.dumps(v, sort_keys=True) for v in sizes.values()}) > 1:
        raise SystemExit(f"the builds disagree: {sizes}")
    print(
        f"\n{num_files:,} files; {measure.machine()}; load average now {os.getloadavg()}; "
        f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}; x floor: against the least of "
        f"the read floors of this run ({', '.join(map(str, floors))} s)"
    )
    print("| step | wall s | x floor | CPU s | files/s | peak RSS MiB (sum) | peak PSS MiB | on disk MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['wall_s']} | {r.get('x_floor', '')} | {r['cpu_s']} | {r['files_per_s']:,} "
            f"| {r['peak_rss_mib']:,} | {r['peak_pss_mib']:,} | {r.get('disk_mib', '')} |"
        )
    print(f"split sizes: {sizes}")


if __name__ == "__main__":
    main()
