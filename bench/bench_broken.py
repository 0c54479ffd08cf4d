"""Bad files at speed: the local validation of a Kaggle folder against the same folder with a share of its files
replaced by the broken files of the fuzz test, back to back; and every broken file accounted for.

    PCAM_SHARED_DATA=../shared/data python bench/bench_broken.py /tmp/kaggle_full --work_dir=/tmp/broken \
        [--fraction=0.01] [--rounds=2] [--seed=1]

The broken folder is WORK_DIR/layout: every file of MANUAL_DIR hard-linked (the same inodes, so the same page
cache), except a seeded FRACTION of them, chosen over train/ and test/, whose bytes are replaced by
tests/test_fuzz.corpus (mutated genuine Kaggle TIFFs, from PCAM_SHARED_DATA when set, and hostile PNG/JPEG
headers). `python -m beam_jobs.validate` (the local executor) then runs on the clean folder and the broken
one in turn, ROUNDS times, each measured by bench/measure.py. Checked: the broken folder's rejected.csv holds
exactly the replaced files that core.patches rejects, each with the reason it gives; the others decoded, and
the clean folder has no rejected file. Prints a Markdown table of files/s for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "tests"))
sys.path.insert(0, os.path.dirname(_HERE))

import measure  # noqa: E402


def make_broken(manual_dir: str, out: str, fraction: float, seed: int) -> dict[str, str | None]:
    """Writes the broken folder OUT; returns {path of a replaced file: the reason it is rejected, or None}."""
    import test_fuzz

    from pcam_tfds.core import patches

    paths = sorted(os.path.join(s, e.name) for s in ("train", "test") for e in os.scandir(os.path.join(manual_dir, s)))
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=max(1, round(fraction * len(paths))), replace=False).tolist())
    files = test_fuzz.corpus(len(chosen), seed=seed)
    replaced = dict(zip((paths[i] for i in chosen), files))
    for source in ("train", "test"):
        os.makedirs(os.path.join(out, source))
    for name in os.listdir(manual_dir):
        if os.path.isfile(os.path.join(manual_dir, name)):
            shutil.copy(os.path.join(manual_dir, name), os.path.join(out, name))
    expected = {}
    for rel in paths:
        dst = os.path.join(out, rel)
        if rel not in replaced:
            os.link(os.path.join(manual_dir, rel), dst)
            continue
        with open(dst, "wb") as f:
            f.write(replaced[rel])
        try:
            patches.decode_patch(replaced[rel])
            expected[dst] = None
        except patches.PatchError as e:
            expected[dst] = e.reason
    return expected


def rejected_files(output_dir: str) -> dict[str, str]:
    with open(os.path.join(output_dir, "rejected.csv"), newline="") as f:
        return {r["path"]: r["reason"] for r in csv.DictReader(f) if r["kind"] == "file"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manual_dir")
    ap.add_argument("--work_dir", required=True, help="emptied first")
    ap.add_argument("--fraction", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    shutil.rmtree(a.work_dir, ignore_errors=True)
    layout_dir = os.path.join(a.work_dir, "layout")
    expected = make_broken(a.manual_dir, layout_dir, a.fraction, a.seed)
    bad = {p: r for p, r in expected.items() if r is not None}
    print(
        f"{len(expected)} files replaced in {layout_dir}: {len(bad)} to be rejected, {len(expected) - len(bad)} decode"
    )
    num_files = sum(len(os.listdir(os.path.join(a.manual_dir, s))) for s in ("train", "test"))
    rows = []
    for i in range(a.rounds):
        for name, folder in (("clean", a.manual_dir), ("broken", layout_dir)):
            out = os.path.join(a.work_dir, f"validate_{name}")
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, "-m", "beam_jobs.validate", f"--manual_dir={folder}", f"--output_dir={out}"]
            r = measure.run_measured(cmd, interval=0.5)
            got = rejected_files(out)
            if name == "broken" and got != bad:
                missing, extra = bad.keys() - got.keys(), got.keys() - bad.keys()
                wrong = {p for p in bad.keys() & got.keys() if bad[p] != got[p]}
                raise SystemExit(
                    f"rejected.csv disagrees: {len(missing)} missing, {len(extra)} extra, {len(wrong)} reasons"
                )
            if name == "clean" and got:
                raise SystemExit(f"the clean folder had {len(got)} rejected files")
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            rows.append((i + 1, name, r, summary["rejected"]))
            print(
                f"  round {i + 1} {name}: {r['wall_s']} s, {r['cpu_s']} CPU s, {summary['rejected']} rejected",
                flush=True,
            )
    print(
        f"\n{num_files:,} files; {measure.machine()}; "
        f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}"
    )
    print("| round | folder | wall s | CPU s | files/s | peak PSS MiB | rejected |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for i, name, r, rejected in rows:
        print(
            f"| {i} | {name} | {r['wall_s']} | {r['cpu_s']} | {num_files / r['wall_s']:,.0f} "
            f"| {r['peak_pss_mib']:,} | {rejected:,} |"
        )
    reasons = {}
    for r in bad.values():
        reasons[r] = reasons.get(r, 0) + 1
    print(f"rejected.csv: every one of the {len(bad)} rejected replacements, with its reason: {reasons}")
    shutil.rmtree(a.work_dir)


if __name__ == "__main__":
    main()
