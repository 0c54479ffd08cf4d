"""File access for local and remote paths: plain `os` and `open` for local ones, Beam's FileSystems for the rest.

    fileio.join(manual_dir, "train")          os.path.join, or FileSystems.join for gs://, s3://
    fileio.exists(path)
    with fileio.open_read(path) as f: ...   a binary file object
    fileio.write_bytes(path, data)          creating the parent folders, as FileSystems.create does

A path is remote when it has a scheme (`gs://bucket/x`); those are what the Beam jobs read on a
cluster, and Beam's FileSystems (imported only then) has their clients. A local path never
imports Beam, so the local build and the trainer run without it.
"""

from __future__ import annotations

import os
from typing import BinaryIO


def is_remote(path: str) -> bool:
    """Whether PATH names a filesystem other than the local one (it has a scheme, e.g. gs://)."""
    return "://" in path


def filesystems():
    """Beam's FileSystems, for remote paths: the one place in the core that imports Beam, and only when called."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return filesystems().join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    if is_remote(path):
        return filesystems().exists(path)
    return os.path.exists(path)


def open_read(path: str) -> BinaryIO:
    """The file opened for reading bytes, as it is (no decompression by file name)."""
    if is_remote(path):
        return filesystems().open(path, compression_type="uncompressed")
    return open(path, "rb")


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """Writes DATA to PATH, replacing it; a local file's folder is created first."""
    if is_remote(path):
        with filesystems().create(path) as f:
            f.write(data)
        return
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def makedirs(path: str) -> None:
    """Creates the folder PATH if it does not exist (remote stores may have no folders to create)."""
    if is_remote(path):
        if not filesystems().exists(path):
            filesystems().mkdirs(path)
        return
    os.makedirs(path, exist_ok=True)
