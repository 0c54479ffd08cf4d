"""pcam_tfds.features.RawImage: an Image to TFDS, stored as the raw bytes the trainer decodes itself."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pcam_tfds import builder_base, features
from trainer import data


def _patch(seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)


def test_raw_image_stores_the_row_major_bytes_and_decodes_them_in_tf_and_numpy():
    feature = features.RawImage(shape=(96, 96, 3))
    assert isinstance(feature, tfds.features.Image)  # what tfds.show_examples looks for
    pixels = _patch()
    fortran = np.asfortranarray(pixels)
    assert feature.encode_example(fortran) == pixels.tobytes()  # memory layout does not leak into the record
    decoded = feature.decode_example(tf.constant(pixels.tobytes()))
    assert decoded.dtype == tf.uint8 and decoded.shape == (96, 96, 3)
    np.testing.assert_array_equal(decoded.numpy(), pixels)
    np.testing.assert_array_equal(feature.decode_example_np(pixels.tobytes()), pixels)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((96, 96, 3), np.int64), "got int64"),
        (np.zeros((96, 96, 4), np.uint8), r"got uint8 \(96, 96, 4\)"),
        (np.zeros((32, 32, 3), np.uint8), r"got uint8 \(32, 32, 3\)"),
    ],
)
def test_raw_image_refuses_other_shapes_and_dtypes(bad, message):
    with pytest.raises(ValueError, match=message):
        features.RawImage(shape=(96, 96, 3)).encode_example(bad)


def test_raw_image_needs_a_fixed_shape():
    with pytest.raises(ValueError, match="fixed shape"):
        features.RawImage(shape=(None, None, 3))


def test_features_round_trip_through_features_json(tmp_path):
    made = builder_base.patch_features(label_doc="the label", id_doc="the id")
    made.save_config(str(tmp_path))
    loaded = tfds.features.FeatureConnector.from_config(str(tmp_path))
    assert type(loaded["image"]) is features.RawImage and loaded["image"].shape == (96, 96, 3)
    assert loaded["image"].encoding_format == "raw"
    assert loaded["label"].names == ["normal", "tumour"] and loaded["label"].doc.desc == "the label"
    assert loaded.get_serialized_info() == made.get_serialized_info()


def test_the_trainer_parses_a_record_as_uint8_pixels_and_an_integer_label():
    feats = builder_base.patch_features(label_doc="", id_doc="")
    records = [
        feats.serialize_example({"image": _patch(k), "label": label, "id": f"id{k}"})
        for k, label in enumerate((0, 1, -1))
    ]
    parsed = data.parse_batch(tf.constant(records))
    assert parsed["image"].dtype == tf.uint8 and parsed["image"].shape == (3, 96, 96, 3)
    assert parsed["label"].dtype == tf.int64 and parsed["label"].numpy().tolist() == [0, 1, -1]
    for k in range(3):
        np.testing.assert_array_equal(parsed["image"][k].numpy(), _patch(k))
    # TFDS' own decoding agrees.
    ex = feats.deserialize_example(records[1])
    np.testing.assert_array_equal(ex["image"].numpy(), _patch(1))
    assert int(ex["label"]) == 1
    ex = feats.deserialize_example_np(records[2])
    np.testing.assert_array_equal(ex["image"], _patch(2))
    assert int(ex["label"]) == -1


def test_a_label_outside_normal_tumour_and_minus_one_is_refused():
    feats = builder_base.patch_features(label_doc="", id_doc="")
    with pytest.raises(ValueError, match="Class label 2"):
        feats.encode_example({"image": _patch(), "label": 2, "id": "x"})
    with pytest.raises(ValueError):
        feats.encode_example({"image": _patch(), "label": -2, "id": "x"})


def test_the_builder_the_trainers_parser_and_gpu_check_share_one_record_spec():
    from pcam_tfds.core import record_spec

    feats = builder_base.patch_features(label_doc="", id_doc="")
    assert set(feats.keys()) == set(data.RECORD_FEATURES) == set(record_spec.FEATURE_KEYS)
    assert feats[record_spec.IMAGE].shape == record_spec.PATCH_SHAPE
    assert feats[record_spec.IMAGE].dtype == tf.dtypes.as_dtype(record_spec.IMAGE_DTYPE)
    assert tuple(feats[record_spec.LABEL].names) == record_spec.LABEL_NAMES
    # What the builder serializes is what the trainer's parse spec reads, key by key and type by type.
    serialized = feats.get_serialized_info()
    for key, spec in data.RECORD_FEATURES.items():
        assert serialized[key].dtype == spec.dtype, key


def test_gpu_check_writes_records_that_the_trainer_and_tfds_read(tmp_path):
    from trainer.training import gpu_check

    [path] = gpu_check.write_synthetic_records(str(tmp_path), 5, (96, 96, 3), seed=3, files=1)
    records = next(iter(tf.data.TFRecordDataset(path).batch(5)))
    parsed = data.parse_batch(records)
    assert parsed["image"].dtype == tf.uint8 and parsed["image"].shape == (5, 96, 96, 3)
    assert set(parsed["label"].numpy().tolist()) <= {0, 1}
    feats = builder_base.patch_features(label_doc="", id_doc="")
    for k in range(5):
        ex = feats.deserialize_example_np(records[k].numpy())
        np.testing.assert_array_equal(ex["image"], parsed["image"][k].numpy())
        assert int(ex["label"]) == int(parsed["label"][k]) and ex["id"] == parsed["id"][k].numpy()
