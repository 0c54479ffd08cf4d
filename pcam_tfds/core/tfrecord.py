"""TFRecord shards written with few system calls: the bytes `tf.io.TFRecordWriter` writes, without TensorFlow.

    write_records(path, records)   one TFRecord file of RECORDS (bytes or buffers), returns (count, bytes)

A TFRecord file is, per record: the length as 8 little-endian bytes, the masked CRC-32C of those 8 bytes,
the record, the masked CRC-32C of the record (tensorflow/core/lib/io/record_writer.cc; the mask is
rotate right by 15 bits, plus 0xa282ead8). The framing of up to 256 records goes to the kernel in one
`writev`, the records themselves never copied in Python, where TensorFlow's writer makes two or three
`write` calls per record and copies it into C++ first. CRC-32C is google-crc32c's (hardware CRC
instructions). tests/test_tfrecord.py checks the bytes against TensorFlow's.

Direct I/O (Linux's O_DIRECT; PCAM_DIRECT_IO=0 turns it off): the records are copied into two page-aligned
buffers of 16 MiB, and each full buffer goes to the disk by a thread of this process while the other fills, past
the page cache. A build's shards are several GB that nothing reads back soon: written through the page cache,
every byte costs the kernel a copy, the page's accounting and later its eviction (evicting the Kaggle files the
build is reading, too), and once the dirty pages pass the kernel's limit the writer is throttled to the
writeback. Directly, the disk's DMA reads the buffers: 7.7 GB took 3-4 s and 0.3 CPU-s here, against 7-14 s and
9-19 CPU-s through the page cache with fdatasync (bench/RESULTS.md). The last block is written whole and the file
truncated to its length. Where the file system refuses O_DIRECT (tmpfs, some network file systems: EINVAL), the
file is written through the page cache instead, with the same bytes.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import google_crc32c

_MASK_DELTA = 0xA282EAD8
_IOV = 256 * 3  # buffers per writev: 3 per record (Linux's IOV_MAX is 1024)
_U64, _U32 = struct.Struct("<Q").pack, struct.Struct("<I").pack
_DIRECT_BYTES = 16 << 20  # bytes per direct write: a multiple of any block size
_ALIGN = 4096  # what a direct write's length is rounded up to (the largest logical block size in use)
DIRECT_IO_ENV = "PCAM_DIRECT_IO"


def direct_io(environ=os.environ) -> bool:
    """Whether shards are written past the page cache (O_DIRECT, where the OS has it; PCAM_DIRECT_IO=0: never)."""
    return hasattr(os, "O_DIRECT") and environ.get(DIRECT_IO_ENV, "1") != "0"


def masked_crc32c(data) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record) -> tuple[bytes, bytes]:
    """(the bytes before RECORD, the bytes after it) in a TFRecord file."""
    length = _U64(_nbytes(record))
    return length + _U32(masked_crc32c(length)), _U32(masked_crc32c(record))


def _nbytes(record) -> int:
    return len(record) if isinstance(record, bytes) else memoryview(record).nbytes


def write_records(path: str, records: Iterable, direct: bool | None = None) -> tuple[int, int]:
    """Writes RECORDS into the new local file PATH as TFRecords; (records, bytes of the records alone). DIRECT:
    past the page cache where the file system allows it (default: `direct_io()`)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    out = None
    if direct is None:
        direct = direct_io()
    if direct:
        try:
            out = _DirectFile(os.open(path, flags | os.O_DIRECT, 0o666))
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: this file system has no direct I/O
                raise
    if out is None:
        out = _VectoredFile(os.open(path, flags, 0o666))
    with out:
        count, size = 0, 0
        for record in records:
            head, tail = frame(record)
            out.write(head)
            out.write(record)
            out.write(tail)
            count += 1
            size += _nbytes(record)
        return count, size


class _VectoredFile:
    """A new file written through the page cache, the parts of up to 256 records per `writev`; on exit, the last
    parts written (unless writing failed) and the file closed."""

    def __init__(self, fd: int):
        self.fd, self.parts = fd, []

    def write(self, data) -> None:
        self.parts.append(data)
        if len(self.parts) >= _IOV:
            _write_all(self.fd, self.parts)
            self.parts = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                _write_all(self.fd, self.parts)
        finally:
            os.close(self.fd)


class _DirectFile:
    """A new file opened with O_DIRECT, written through two aligned buffers; on exit, its last block written and
    the file truncated to the bytes written (or left as it is, if writing failed)."""

    def __init__(self, fd: int):
        self.fd, self.end, self.pos, self.current, self.pending = fd, 0, 0, 0, None
        self.views = _BUFFERS.views
        self.thread = ThreadPoolExecutor(1)

    def write(self, data) -> None:
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        while len(view):
            n = min(len(view), _DIRECT_BYTES - self.pos)
            self.views[self.current][self.pos : self.pos + n] = view[:n]
            self.pos += n
            view = view[n:]
            if self.pos == _DIRECT_BYTES:
                self._flush(self.pos)

    def _flush(self, length: int) -> None:
        if self.pending is not None:
            self.pending.result()  # the other buffer is free again
        buffer = self.views[self.current][:length]
        self.pending = self.thread.submit(_pwrite_all, self.fd, buffer, self.end)
        self.end += length
        self.current, self.pos = 1 - self.current, 0

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                size = self.end + self.pos
                if self.pos:
                    self._flush(-(-self.pos // _ALIGN) * _ALIGN)  # whole blocks; what lies past SIZE is cut below
                if self.pending is not None:
                    self.pending.result()
                os.ftruncate(self.fd, size)
        finally:
            self.thread.shutdown(wait=True)
            os.close(self.fd)


class _Buffers(threading.local):
    """Per thread, the two page-aligned buffers of `_DirectFile`, made once (a shard's writer writes many).
    Private mappings: a process forked after its parent made them (the shard writers) writes its own copy, where
    an anonymous mmap's default, MAP_SHARED, would have it write into its parent's and its siblings' buffers."""

    def __init__(self):
        self.views = [memoryview(mmap.mmap(-1, _DIRECT_BYTES, flags=mmap.MAP_PRIVATE)) for _ in range(2)]


_BUFFERS = _Buffers()


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    """All of VIEW at OFFSET. A direct write the file system refuses (EINVAL: an alignment it does not take) or cuts
    short turns direct I/O off for this file, which goes on through the page cache."""
    import fcntl

    while len(view):
        try:
            n = os.pwrite(fd, view, offset)
        except OSError as e:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            if e.errno != errno.EINVAL or not flags & os.O_DIRECT:
                raise
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            continue
        if n < len(view):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        view, offset = view[n:], offset + n


def _write_all(fd: int, parts: list) -> None:
    """All of PARTS, in order: writev where there is one (it may write less than asked), else one join."""
    if not hasattr(os, "writev"):  # Windows
        view = memoryview(b"".join(parts))
        while view:
            view = view[os.write(fd, view) :]
        return
    while parts:
        done = os.writev(fd, parts)
        for i, part in enumerate(parts):
            n = len(part) if isinstance(part, bytes) else memoryview(part).nbytes
            if done < n:  # a short write: this part from where it stopped, then the rest
                parts = [memoryview(part).cast("B")[done:], *parts[i + 1 :]]
                break
            done -= n
        else:
            return
