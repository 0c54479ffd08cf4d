"""pcam_tfds.core.serialize writes the records TFDS' own encoder and serializer write, parsed field for field.

TFDS' serializer goes through protobuf (upb), whose map order differs from process to process (the entries
`id`, `image`, `label` come out in a different order under another PYTHONHASHSEED), so its bytes are not
reproducible; core.serialize always writes the keys sorted. Compared here: the parsed protos, and the bytes
against TFDS' whenever TFDS happened to write the sorted order.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_datasets.core import example_serializer

from pcam_tfds import builder_base
from pcam_tfds.core import record_spec, serialize


@pytest.mark.parametrize("label", [0, 1, record_spec.NO_LABEL])
@pytest.mark.parametrize("id_", ["0" * 40, "f38a6374c348f90b587e046aac6079959adf3835", "x"])
def test_a_record_parses_as_the_one_tfds_serializes(label, id_):
    features = builder_base.patch_features("label", "id")
    tfds_serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
    pixels = np.random.default_rng(len(id_) + label).integers(0, 256, record_spec.PATCH_SHAPE, dtype=np.uint8)
    theirs = tfds_serializer.serialize_example(
        features.encode_example({record_spec.IMAGE: pixels, record_spec.LABEL: label, record_spec.ID: id_})
    )
    ours = serialize.serialize_record(pixels.tobytes(), label, id_)
    assert tf.train.Example.FromString(ours) == tf.train.Example.FromString(theirs)
    assert len(ours) == len(theirs) == serialize.total_serialized_size([(label, id_)])
    parsed = tf.train.Example.FromString(ours).features.feature
    assert parsed[record_spec.LABEL].int64_list.value == [label]
    assert parsed[record_spec.ID].bytes_list.value == [id_.encode()]
    assert parsed[record_spec.IMAGE].bytes_list.value == [pixels.tobytes()]

    if _entry_order(theirs) == _entry_order(ours):  # protobuf wrote TFDS's map entries in our order (it varies by
        assert ours == theirs  # process): then every byte agrees


def test_the_total_size_is_the_sum_of_the_records():
    pixels = bytes(serialize.IMAGE_BYTES)
    pairs = [(label, id_) for label in (0, 1, record_spec.NO_LABEL) for id_ in ("0" * 40, "x", "ünï" * 50, "y" * 200)]
    pairs += pairs[:5]
    total = sum(len(serialize.serialize_record(pixels, label, id_)) for label, id_ in pairs)
    assert serialize.total_serialized_size(pairs) == total


def _entry_order(record: bytes) -> list[str]:
    """The record's feature names in the order its map entries were written (each name's first appearance)."""
    names = (record_spec.IMAGE, record_spec.LABEL, record_spec.ID)
    return sorted(names, key=lambda name: record.find(bytes([10, len(name)]) + name.encode()))


def test_an_image_of_another_size_is_refused():
    with pytest.raises(ValueError, match="27648 bytes"):
        serialize.serialize_record(b"\0" * 100, 0, "x")
