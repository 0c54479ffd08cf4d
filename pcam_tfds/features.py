"""The image feature of the patch datasets: a TFDS `Image` stored as raw bytes instead of PNG.

TFDS draws only `tfds.features.Image` features (`tfds.show_examples` looks for one; `tfds.as_dataframe`
shows it as a thumbnail), and `Image` stores PNG or JPEG. JPEG loses pixels, and PNG decodes much
slower than raw bytes. So
`RawImage` is an `Image` to TFDS that stores exactly what `Tensor(uint8, encoding="bytes")` stored: the
H*W*C bytes in row-major order. A record is unchanged byte for byte, so readers that parse the
TFRecords themselves (trainer/data.py: `decode_raw` per batch) read it as before.

Reading a built dataset through TFDS needs this module importable (TFDS imports it by the class name in
features.json: the `pcam` package installed); it needs no Beam. TensorFlow is imported lazily (TFDS' lazy
module), on the first decode: the local `pcam` build, which writes serialized records itself, never loads
it (tests/test_no_beam.py), so `pcam-build` does not pay TensorFlow's import and exit.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.features import feature as feature_lib
from tensorflow_datasets.core.proto import feature_pb2
from tensorflow_datasets.core.utils.lazy_imports_utils import tensorflow as tf

from pcam_tfds.core.record_spec import LABEL_NAMES  # noqa: F401  (re-exported: builders name the classes by it)

RAW = "raw"  # the encoding_format written to features.json


class RawImage(tfds.features.Image):
    """A fixed-shape uint8 image stored as its raw bytes; decoded with `tf.io.decode_raw`, no codec."""

    def __init__(self, *, shape: tuple[int, int, int], doc: feature_lib.DocArg = None):
        if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
            raise ValueError(f"RawImage needs a fixed shape (height, width, channels), got {shape}")
        super().__init__(shape=shape, dtype=np.uint8, doc=doc)

    @property
    def encoding_format(self) -> str:
        return RAW

    def encode_example(self, image) -> bytes:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != self.shape:
            raise ValueError(f"RawImage{self.shape} takes uint8 {self.shape} arrays, got {image.dtype} {image.shape}")
        return image.tobytes()  # row-major, whatever the array's memory layout

    def decode_example(self, example: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tf.io.decode_raw(example, tf.uint8), self.shape)

    def decode_example_np(self, example: bytes) -> np.ndarray:
        return np.frombuffer(example, dtype=np.uint8).reshape(self.shape)

    @classmethod
    def from_json_content(cls, value) -> RawImage:
        if isinstance(value, dict):
            return cls(shape=tuple(value["shape"]))
        if value.encoding_format != RAW or value.dtype != "uint8":
            raise ValueError(f"not a RawImage: {value.dtype} images encoded as {value.encoding_format!r}")
        return cls(shape=tuple(feature_lib.from_shape_proto(value.shape)))

    def to_json_content(self) -> feature_pb2.ImageFeature:
        return feature_pb2.ImageFeature(
            shape=feature_lib.to_shape_proto(self.shape), dtype="uint8", encoding_format=RAW
        )
