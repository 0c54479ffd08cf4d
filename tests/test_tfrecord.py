"""core.tfrecord writes the bytes tf.io.TFRecordWriter writes, and tf.data reads them back."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from pcam_tfds.core import tfrecord


@pytest.mark.parametrize("sizes", [[0], [1, 27_700, 5], [27_700] * 600, []], ids=["empty", "mixed", "600", "none"])
def test_the_bytes_of_tensorflows_writer(sizes, tmp_path):
    rng = np.random.default_rng(len(sizes))
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    assert tfrecord.write_records(ours, iter(records)) == (len(records), sum(sizes))
    with tf.io.TFRecordWriter(theirs) as writer:
        for r in records:
            writer.write(r)
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    assert [r.numpy() for r in tf.data.TFRecordDataset(ours)] == records


def test_a_short_writev_is_continued(tmp_path, monkeypatch):
    if not hasattr(os, "writev"):
        pytest.skip("no writev on this system")
    real = os.writev

    def short(fd, buffers):  # the kernel may write less than asked: here at most 1,000 bytes at a time
        first = bytes(buffers[0])[:1000]
        return real(fd, [first])

    monkeypatch.setattr(os, "writev", short)
    records = [bytes([i]) * 3000 for i in range(5)]
    path = str(tmp_path / "short")
    tfrecord.write_records(path, records)
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records
