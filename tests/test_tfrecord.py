"""core.tfrecord writes the bytes tf.io.TFRecordWriter writes, and tf.data reads them back."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import tensorflow as tf

from pcam_tfds.core import tfrecord


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "page_cache"])
@pytest.mark.parametrize("sizes", [[0], [1, 27_700, 5], [27_700] * 1300, []], ids=["empty", "mixed", "1300", "none"])
def test_the_bytes_of_tensorflows_writer(sizes, direct, tmp_path):
    # 1,300 records of 27,700 bytes fill two direct buffers and part of a third: both are written and reused.
    rng = np.random.default_rng(len(sizes))
    records = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]
    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    assert tfrecord.write_records(ours, iter(records), direct=direct) == (len(records), sum(sizes))
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
    tfrecord.write_records(path, records, direct=False)  # writev is the page cache's path
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == records


def test_direct_io_falls_back_to_the_page_cache_where_refused(tmp_path, monkeypatch):
    # A file system without O_DIRECT refuses the open (tmpfs) or a write (an alignment it does not take): EINVAL.
    records = [bytes([i % 256]) * 27_700 for i in range(700)]
    expected = tmp_path / "expected"
    tfrecord.write_records(str(expected), records, direct=False)
    if not hasattr(os, "O_DIRECT"):
        pytest.skip("no O_DIRECT on this system: every file goes through the page cache")
    real_open, real_pwrite, refused = os.open, os.pwrite, []

    def no_direct_open(path, flags, *args):
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    def no_direct_write(fd, data, offset):
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "open", no_direct_open)
    tfrecord.write_records(str(tmp_path / "a"), records, direct=True)
    monkeypatch.setattr(os, "open", real_open)
    monkeypatch.setattr(os, "pwrite", no_direct_write)
    tfrecord.write_records(str(tmp_path / "b"), records, direct=True)
    assert len(refused) == 2
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes() == expected.read_bytes()


def test_direct_io_is_the_default_unless_turned_off():
    assert tfrecord.direct_io({}) == hasattr(os, "O_DIRECT")
    assert not tfrecord.direct_io({tfrecord.DIRECT_IO_ENV: "0"})


def test_processes_forked_after_the_buffers_were_made_write_their_own_copies(tmp_path):
    # The direct buffers are made once per thread; a shard writer forked from a process that made them must not
    # write into its parent's (an anonymous mmap is MAP_SHARED unless asked otherwise).
    import multiprocessing

    if not tfrecord.direct_io():
        pytest.skip("no O_DIRECT on this system: no direct buffers")
    tfrecord.write_records(str(tmp_path / "parent"), [b"p" * 100], direct=True)  # this process's buffers exist
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=tfrecord.write_records, args=(str(tmp_path / "child"), [b"c" * 100], True))
    child.start()
    child.join()
    assert child.exitcode == 0
    assert bytes(tfrecord._BUFFERS.views[0][12:112]) == b"p" * 100  # after the 12 bytes of the length's framing
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "child"))] == [b"c" * 100]
