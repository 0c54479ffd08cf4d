"""A patch record as the bytes of the `tf.train.Example` TFDS writes for it, without TensorFlow or TFDS.

    serialize_record(image_bytes, label, id_)   the same bytes as TFDS' FeaturesDict.encode_example followed
                                                by its ExampleSerializer (tests/test_serialize.py checks it)

The proto is laid out by hand, with one copy of the pixels and no TensorFlow, so that the reading workers
of the local build can serialize and the writer only writes. The layout is protobuf's wire format of
`Example{features: Features{feature: map<string, Feature>}}` with the map entries in TFDS' order (the keys
sorted: id, image, label), a `BytesList` for the image and the id and a packed `Int64List` for the label (-1
on the unlabelled test split is a ten-byte varint, as protobuf writes any negative int64). The keys are
`record_spec`'s. `total_serialized_size` gives the records' sizes without serializing them.
"""

from __future__ import annotations

import collections
import functools
import hashlib

from pcam_tfds.core import patches, record_spec

_LEN = 2  # protobuf wire type: length-delimited


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negative numbers
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _entry(key: str, feature: bytes) -> bytes:
    # A map entry: field 1 the key, field 2 the value (a Feature).
    return _field(1, _field(1, key.encode()) + _field(2, feature))


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))  # Feature.bytes_list = 1, BytesList.value = 1


def _int64_feature(value: int) -> bytes:
    return _field(3, _field(1, _varint(value)))  # Feature.int64_list = 3, Int64List.value = 1, packed


IMAGE_BYTES = patches.PATCH_BYTES  # record_spec.PATCH_SHAPE is patches'
# The image entry up to its pixels, which are its last bytes; its size is fixed by the shape.
_IMAGE_HEAD = _entry(record_spec.IMAGE, _bytes_feature(bytes(IMAGE_BYTES)))[:-IMAGE_BYTES]
_FEATURES_KEY = _varint(1 << 3 | _LEN)  # Example field 1 (features), length-delimited
# The order TFDS' serializer writes the features in: sorted by key.
_ORDER = tuple(sorted(record_spec.FEATURE_KEYS))


def serialize_record(image, label: int, id_: str) -> bytes:
    """The serialized `tf.train.Example` of one patch: its raw row-major pixels (bytes, or any contiguous
    buffer), its label, its id. The pixels are copied once, into the record; the bytes around them and the id
    come from `_framing`, made once per label and id length."""
    size = memoryview(image).nbytes
    if size != IMAGE_BYTES:
        raise ValueError(f"an image of {record_spec.PATCH_SHAPE} is {IMAGE_BYTES} bytes, got {size}")
    id_bytes = id_.encode()
    before_id, after_id, tail = _framing(label, len(id_bytes))
    return b"".join((before_id, id_bytes, after_id, image, tail))


@functools.lru_cache(maxsize=256)
def _framing(label: int, id_length: int) -> tuple[bytes, bytes, bytes]:
    """The bytes of a record around its id and its pixels, which depend on the label and the id's length only:
    (before the id, between the id and the pixels, after the pixels)."""
    if _ORDER != (record_spec.ID, record_spec.IMAGE, record_spec.LABEL):
        raise AssertionError(f"record_spec's keys {record_spec.FEATURE_KEYS} sort differently from id, image, label")
    id_entry, label_entry = (
        _entry(record_spec.ID, _bytes_feature(bytes(id_length))),
        _entry(record_spec.LABEL, _int64_feature(label)),
    )
    length = len(id_entry) + len(_IMAGE_HEAD) + IMAGE_BYTES + len(label_entry)
    return _FEATURES_KEY + _varint(length) + id_entry[: len(id_entry) - id_length], _IMAGE_HEAD, label_entry


def _size(label: int, id_length: int) -> int:
    before_id, after_id, tail = _framing(label, id_length)
    return len(before_id) + id_length + len(after_id) + IMAGE_BYTES + len(tail)


def key_hasher(salt: str):
    """key -> the 128-bit hash TFDS' Writer orders a split's examples by (tensorflow_datasets.core.hashing.Hasher
    of the split's name: int(md5(salt + key).hexdigest(), 16), each string with '\\' as '/' and in UTF-8),
    the same integer from the digest's bytes, without the hex string (tests/test_one_pass.py holds them equal)."""
    digest = key_digester(salt)
    return lambda key: int.from_bytes(digest(key), "big")


def key_digester(salt: str):
    """key -> the 16 bytes of `key_hasher`'s hash, big-endian: ordered as the integers are."""
    salted = hashlib.md5(salt.replace("\\", "/").encode())

    def key_digest(key: str) -> bytes:
        md5 = salted.copy()
        md5.update(key.replace("\\", "/").encode())
        return md5.digest()

    return key_digest


def total_serialized_size(pairs) -> int:
    """The sum of len(serialize_record(image, label, id_)) over (label, id_) PAIRS, without serializing (what a
    writer needs to plan its shards): each distinct (label, id length) sized once."""
    counted = collections.Counter((label, len(id_.encode())) for label, id_ in pairs)
    return sum(n * _size(label, length) for (label, length), n in counted.items())
