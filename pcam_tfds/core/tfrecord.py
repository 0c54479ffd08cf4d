"""TFRecord shards written with few system calls: the bytes `tf.io.TFRecordWriter` writes, without TensorFlow.

    write_records(path, records)   one TFRecord file of RECORDS (bytes or buffers), returns (count, bytes)

A TFRecord file is, per record: the length as 8 little-endian bytes, the masked CRC-32C of those 8 bytes,
the record, the masked CRC-32C of the record (tensorflow/core/lib/io/record_writer.cc; the mask is
rotate right by 15 bits, plus 0xa282ead8). The framing of up to 256 records goes to the kernel in one
`writev`, the records themselves never copied in Python, where TensorFlow's writer makes two or three
`write` calls per record and copies it into C++ first. CRC-32C is google-crc32c's (hardware CRC
instructions). tests/test_tfrecord.py checks the bytes against TensorFlow's.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

import google_crc32c

_MASK_DELTA = 0xA282EAD8
_IOV = 256 * 3  # buffers per writev: 3 per record (Linux's IOV_MAX is 1024)
_U64, _U32 = struct.Struct("<Q").pack, struct.Struct("<I").pack


def masked_crc32c(data) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record) -> tuple[bytes, bytes]:
    """(the bytes before RECORD, the bytes after it) in a TFRecord file."""
    length = _U64(len(record) if isinstance(record, bytes) else memoryview(record).nbytes)
    return length + _U32(masked_crc32c(length)), _U32(masked_crc32c(record))


def write_records(path: str, records: Iterable) -> tuple[int, int]:
    """Writes RECORDS into the new local file PATH as TFRecords; (records, bytes of the records alone)."""
    count, size, parts = 0, 0, []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o666)
    try:
        for record in records:
            head, tail = frame(record)
            parts += (head, record, tail)
            count += 1
            size += len(record) if isinstance(record, bytes) else memoryview(record).nbytes
            if len(parts) >= _IOV:
                _write_all(fd, parts)
                parts = []
        _write_all(fd, parts)
    finally:
        os.close(fd)
    return count, size


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
