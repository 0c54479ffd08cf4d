"""How often a process that read a manifest aborts at exit (status -6), per way of reading it (issue 27).

    python bench/bench_manifest_exit.py --runs=400
    python bench/bench_manifest_exit.py --runs=200 --variant=python_file_threads --variant=toolkit

pyarrow's reader threads over a Python file object can release a buffer of that file after the read has
returned; when that happens while the interpreter is finalizing, the process ends with "terminate called
without an active exception" (status -6) after doing all its work. The rate is about 1% a process, so
each variant runs in several hundred fresh processes (two at a time, as on a 2-core machine) over one
20,000-row manifest with the manifest's real schema. Prints a Markdown table and a final JSON line.

Variants (each process reads the manifest once, then exits at once):
    python_file_threads   pq.ParquetFile(open(path, 'rb')).read(columns)           what issue 11 left
    python_file_nothreads the same with use_threads=False
    path                  pq.ParquetFile(path).read(columns)                       pyarrow's own file
    row_groups_threads    ParquetFile(python file).read_row_group(i) for each i    what beam.io.ReadFromParquet does
    metadata              pq.read_metadata(python file).num_rows                   the stats job's row count
    toolkit               pcam_tfds.core.outputs.read_manifest(path) (the toolkit's reader, whatever it is now)
    toolkit_rows          pcam_tfds.core.outputs.manifest_rows(path), row group by row group (the Beam jobs' reader)
    toolkit_remote        read_manifest as it reads a gs:// path: the bytes copied into a pyarrow buffer

`--parallel` above the core count makes the exit race more likely (more preemption while processes
finalize): at 2 a time the threaded reader aborted 0 times in 600 on an idle Intel machine, where an AMD
one saw about 1 in 100.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

COLUMNS = ["id", "source", "label", "path", "valid", "reason", "detail"]
READS = {
    "python_file_threads": "pq.ParquetFile(open(P, 'rb')).read(columns=C)",
    "python_file_nothreads": "pq.ParquetFile(open(P, 'rb')).read(columns=C, use_threads=False)",
    "path": "pq.ParquetFile(P).read(columns=C)",
    "row_groups_threads": "f = pq.ParquetFile(open(P, 'rb')); [f.read_row_group(i, columns=C) for i in range(f.num_row_groups)]",
    "metadata": "pq.read_metadata(open(P, 'rb')).num_rows",
    "toolkit": "outputs.read_manifest(P, C)",
    "toolkit_rows": "list(outputs.manifest_rows(P, C))",
    "toolkit_remote": "outputs.fileio.is_remote = lambda p: True; outputs.read_manifest(P, C)",
}


def write_manifest(path: str, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pcam_tfds.core import outputs

    records = [
        {
            **{c: None for c in outputs.MANIFEST_SCHEMA.names},
            "id": f"{i:040x}",
            "source": "train" if i % 5 else "test",
            "label": i % 2,
            "path": f"/data/train/{i:040x}.tif",
            "pixel_hash": f"{i:064x}",
            "valid": True,
            "size_bytes": 27_796,
            "mtime_ns": i,
        }
        for i in range(rows)
    ]
    # Small row groups, as Beam's WriteToParquet writes them, so the threaded readers have work to spread.
    pq.write_table(pa.Table.from_pylist(records, schema=outputs.MANIFEST_SCHEMA), path, row_group_size=4_096)


def script(variant: str, path: str) -> str:
    return (
        "import pyarrow.parquet as pq\n"
        "from pcam_tfds.core import outputs\n"
        f"P, C = {path!r}, {COLUMNS!r}\n"
        f"{READS[variant]}\n"
    )


def run_variant(variant: str, path: str, runs: int, parallel: int) -> dict:
    code = script(variant, path)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        done = list(pool.map(lambda _: subprocess.run([sys.executable, "-c", code], capture_output=True), range(runs)))
    counts = collections.Counter(p.returncode for p in done)
    failed = [p.stderr.decode(errors="replace").strip()[-300:] for p in done if p.returncode != 0]
    return {
        "variant": variant,
        "runs": runs,
        "ok": counts.get(0, 0),
        "aborted": counts.get(-6, 0),
        "other": {str(k): v for k, v in counts.items() if k not in (0, -6)},
        "seconds": round(time.monotonic() - start, 1),
        "first_failure_stderr": failed[0] if failed else "",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=400, help="fresh processes per variant")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the manifest")
    parser.add_argument("--parallel", type=int, default=2, help="processes at a time")
    parser.add_argument("--variant", action="append", choices=sorted(READS), help="default: all")
    args = parser.parse_args(argv)
    import pyarrow

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_manifest_exit_") as tmp:
        path = os.path.join(tmp, "manifest.parquet")
        write_manifest(path, args.rows)
        for variant in args.variant or list(READS):
            r = run_variant(variant, path, args.runs, args.parallel)
            results.append(r)
            print(f"{variant}: {r['aborted']} of {r['runs']} aborted ({r['seconds']} s) {r['other'] or ''}", flush=True)
    print(
        f"\n{datetime.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, pyarrow {pyarrow.__version__}, {args.rows:,} rows\n"
    )
    print("| how the manifest is read | processes | exit -6 | other failures |\n| --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['variant']} | {r['runs']} | {r['aborted']} | {sum(r['other'].values())} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
