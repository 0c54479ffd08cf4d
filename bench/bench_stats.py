"""Times `beam_jobs.stats` on a Kaggle-layout folder: wall time, CPU time and peak RSS of the process tree.

    python bench/bench_stats.py --manual_dir=/tmp/kaggle_full
    python bench/bench_stats.py --manifest=out/validate/manifest.parquet --repeat=2
    python bench/bench_stats.py --manual_dir=/tmp/kaggle_full -- --direct_num_workers=1

The full-size folder (220,025 train + 57,458 test TIFFs, ~7.7 GB) comes from
`python /work/shared/tools/make_kaggle_layout.py /tmp/kaggle_full --scale kaggle`.

The job runs as a child process (`python -m beam_jobs.stats ...`, the DirectRunner's
defaults: one worker process per core); arguments after `--` go to it. Peak
memory is the largest sum of RSS over the job and all its descendants (Beam
worker processes included), sampled from /proc every 0.1 s, so it is Linux only
and may miss a spike shorter than that. Prints one Markdown block per run and a
final JSON line. The page cache is left as it is: say whether it was warm.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

import measure


def run_once(cmd: list[str], interval: float) -> dict:
    r = measure.run_measured(cmd, interval)
    # The job prints its one-line summary last.
    summary = [line for line in r.pop("output").splitlines() if " files: " in line]
    r["job_summary"] = summary[-1] if summary else ""
    return r


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--manual_dir", help="Kaggle-layout folder")
    where.add_argument("--manifest", help="manifest.parquet of beam_jobs.validate")
    parser.add_argument("--output_dir", help="where stats.json goes (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1, help="runs to time")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between memory samples")
    args, job_args = parser.parse_known_args(argv)
    job_args = [a for a in job_args if a != "--"]

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_stats_") as tmp:
        out = args.output_dir or tmp
        where_arg = f"--manual_dir={args.manual_dir}" if args.manual_dir else f"--manifest={args.manifest}"
        cmd = [sys.executable, "-m", "beam_jobs.stats", where_arg, f"--output_dir={out}", *job_args]
        for i in range(args.repeat):
            r = run_once(cmd, args.interval)
            results.append(r)
            print(
                f"run {i + 1}/{args.repeat}: {r['wall_s']} s wall, {r['cpu_s']} s CPU, "
                f"peak RSS {r['peak_rss_mib']} MiB over {r['processes_at_peak']} processes\n  {r['job_summary']}",
                flush=True,
            )
    report = {
        "command": " ".join(["python", "-m", "beam_jobs.stats", where_arg, "--output_dir=OUT", *job_args]),
        "machine": measure.machine(),
        "load_average_after": os.getloadavg(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "runs": results,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
