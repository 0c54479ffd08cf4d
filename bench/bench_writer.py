"""The shard writers a build can use, on the same records: TFDS' options against core.tfrecord and the bare write.

    python bench/bench_writer.py [--records=20000] [--out_dir=/tmp/bench_writer] [--rounds=2]

Writes RECORDS records of 27.7 kB (the size of a serialized patch example; random bytes) into shards of
64 MiB, as a build does, with:
- tfds-tfrecord: TFDS' ExampleWriter for TFRecord (tf.io.TFRecordWriter, what TFDS' own build writes with);
- tfds-array_record: TFDS' ExampleWriter for ArrayRecord (`--file_format=array_record`; it also returns the
  records' positions for the index file);
- core.tfrecord: pcam_tfds.core.tfrecord.write_records, the local build's writer since issue 39 (the bytes of
  the first);
- os.writev: the records' bytes alone, 1,024 records per call (no framing: the floor of this loop).
One thread, page cache (no fsync), each shard removed once written so the disk does not fill; the best of
ROUNDS, after one small shard per writer (TensorFlow's import is not timed). Prints a Markdown table for bench/RESULTS.md: microseconds per record and MB/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

_RECORD = 27_700
_SHARD = 64 << 20


def writers():
    from tensorflow_datasets.core import file_adapters
    from tensorflow_datasets.core import writer as writer_lib

    from pcam_tfds.core import tfrecord

    def tfds(fmt):
        ew = writer_lib.ExampleWriter(file_format=fmt)
        return lambda path, records: ew.write(path, ((None, r) for r in records))

    def bare(path, records):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for i in range(0, len(records), 1024):
                os.writev(fd, records[i : i + 1024])  # short writes ignored: a floor, not a writer
        finally:
            os.close(fd)

    return {
        "tfds-tfrecord (tf.io.TFRecordWriter)": tfds(file_adapters.FileFormat.TFRECORD),
        "tfds-array_record": tfds(file_adapters.FileFormat.ARRAY_RECORD),
        "core.tfrecord": lambda path, records: tfrecord.write_records(path, records),
        "os.writev (the records' bytes only)": bare,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--out_dir", default="/tmp/bench_writer")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    per_shard = _SHARD // _RECORD
    pool = [os.urandom(_RECORD) for _ in range(per_shard)]
    shutil.rmtree(a.out_dir, ignore_errors=True)
    os.makedirs(a.out_dir)
    print(f"| writer ({a.records:,} records of {_RECORD:,} bytes, 64 MiB shards) | us per record | MB/s |")
    print("| --- | ---: | ---: |")
    for name, write in writers().items():
        write(os.path.join(a.out_dir, "warm-up"), pool[:2])
        best = None
        for _ in range(a.rounds):
            seconds = 0.0
            for start in range(0, a.records, per_shard):
                path = os.path.join(a.out_dir, "shard")
                records = pool[: min(per_shard, a.records - start)]
                t = time.perf_counter()
                write(path, records)
                seconds += time.perf_counter() - t
                shutil.rmtree(a.out_dir)
                os.makedirs(a.out_dir)
            best = seconds if best is None else min(best, seconds)
        print(f"| {name} | {best / a.records * 1e6:.1f} | {a.records * _RECORD / best / 1e6:,.0f} |")
    shutil.rmtree(a.out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
