"""Dense inference (trainer.slides.dense): the window probabilities pooled from one pass over a region equal the
model run on each window, exactly where no convolution pads (1x1 kernels), for the CNN family and the P4M
models (group batch norm included), with and without the 8-view TTA; models it cannot run are named."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import models
from trainer.models.cnn import cnn
from trainer.models.p4m import p4m
from trainer.slides import dense

PATCH, STRIDE = 96, 32
ROWS, COLS = 3, 5  # windows of the region: not square, so a transposed map fails
# Dense against per-window of a padding-free model computing in bfloat16: each position's convolution reads the
# same inputs in the same order either way; measured 0 on AVX512-BF16 CPUs (bench/RESULTS.md), bounded here.
BF16_BOUND = 1e-3


def _region(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = (ROWS - 1) * STRIDE + PATCH, (COLS - 1) * STRIDE + PATCH
    # Smooth blobs plus noise: windows differ from each other, so a window off by one stride is caught.
    coarse = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3))
    smooth = np.repeat(np.repeat(coarse, 16, 0), 16, 1)[:h, :w]
    return np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.float32)


def _windows(region: np.ndarray) -> np.ndarray:
    return np.stack(
        [
            region[i * STRIDE : i * STRIDE + PATCH, j * STRIDE : j * STRIDE + PATCH]
            for i in range(ROWS)
            for j in range(COLS)
        ]
    )


def _spread_head(model, images: np.ndarray) -> None:
    """Rescale a random model's last layer so its logits on `images` have std 2 (else all are near 0.5)."""
    import keras

    head = model.layers[-1]
    kernel, _ = head.get_weights()
    logits = keras.Model(model.inputs, model.layers[-2].output).predict(images, verbose=0) @ kernel
    scale = 2.0 / max(float(logits.std()), 1e-12)
    head.set_weights([kernel * scale, -np.full(1, float(logits.mean()) * scale, np.float32)])


def _per_window(model, windows: np.ndarray, tta: bool) -> np.ndarray:
    from trainer.inference import probabilities

    return probabilities.make_predict_fn([model], tta)(windows).numpy().reshape(ROWS, COLS)


@pytest.mark.parametrize(
    "build",
    [
        lambda: cnn(kernel_size=1, batch_norm=True, name="k1"),
        lambda: p4m(kernel_size=1, batch_norm=True, name="p4m_k1"),
    ],
    ids=["cnn", "p4m"],
)
@pytest.mark.parametrize("tta", [False, True])
def test_dense_equals_per_window_without_padding(build, tta):
    import keras

    keras.utils.set_random_seed(0)
    model = build()
    region = _region()
    windows = _windows(region)
    _spread_head(model, windows)
    want = _per_window(model, windows, tta)
    assert want.std() > 0.05, want  # the windows' probabilities differ: a misplaced window would show
    got = dense.make_dense_fn([dense.DenseModel.of(model, PATCH, STRIDE)], STRIDE, tta)(region).numpy()
    assert got.shape == (ROWS, COLS)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _strided(name: str = "strided"):
    """Convolutions that tile their input (2x2, stride 2, no padding): exact densely, and not invariant to
    flips and rotations, unlike 1x1 convolutions before global pooling."""
    import keras

    inputs = x = keras.Input((PATCH, PATCH, 3))
    x = keras.layers.Rescaling(1 / 255)(x)
    for width in (8, 16, 16):
        x = keras.layers.Conv2D(width, 2, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x), name=name)


def test_dense_tta_turns_each_view_back():
    """TTA of a model that is not invariant: the 8 views' maps, each turned back, average to per-window TTA."""
    import keras

    keras.utils.set_random_seed(1)
    model = _strided()
    region = _region(1)
    windows = _windows(region)
    _spread_head(model, windows)
    plain, tta = _per_window(model, windows, False), _per_window(model, windows, True)
    assert np.abs(plain - tta).max() > 1e-2  # the views really differ, so turning a map wrongly would show
    for views, want in ((False, plain), (True, tta)):
        got = dense.make_dense_fn([dense.DenseModel.of(model, PATCH, STRIDE)], STRIDE, views)(region).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_the_baseline_runs_densely_close_to_per_window():
    """3x3 convolutions pad each window with zeros where the region has neighbours: close, not equal."""
    import keras

    keras.utils.set_random_seed(0)
    model = models.build("baseline")
    region = _region(2)
    d = dense.DenseModel.of(model, PATCH, STRIDE)
    assert d.reduction == 8
    got = dense.make_dense_fn([d], STRIDE, False)(region).numpy()
    want = _per_window(model, _windows(region), False)
    assert got.shape == want.shape and np.abs(got - want).max() < 0.05


def test_models_that_cannot_run_densely_are_named():
    import keras

    keras.utils.set_random_seed(0)
    stain = models.build("baseline", stain_norm="reinhard")
    with pytest.raises(dense.NotDense, match="'stain_norm' \\(ReinhardNormalization\\) is not a local"):
        dense.DenseModel.of(stain, PATCH, STRIDE)
    with pytest.raises(dense.NotDense, match="stride 20 is not a multiple of baseline's reduction 8"):
        dense.DenseModel.of(models.build("baseline"), PATCH, 20)
    inputs = keras.Input((PATCH, PATCH, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    y = keras.layers.Add()([x, keras.layers.Conv2D(4, 3, padding="same")(x)])  # a residual: not a chain
    out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling2D()(y))
    with pytest.raises(dense.NotDense, match="\\(Add\\) is not a local"):
        dense.DenseModel.of(keras.Model(inputs, out, name="residual"), PATCH, STRIDE)
    flat = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)), name="flat")
    with pytest.raises(dense.NotDense, match="0 GlobalAveragePooling2D layers"):
        dense.DenseModel.of(flat, PATCH, STRIDE)


def _trained(name: str, **options):
    """A padding-free model trained a few steps on synthetic patches, so its weights are not a fresh init."""
    import keras

    from pcam_tfds import synthetic

    keras.utils.set_random_seed(4)
    model = models.build(name, padding="valid", **options)
    fresh = [w.copy() for w in model.get_weights()]
    drawn = [synthetic.draw_patch(7, "train", i) for i in range(64)]
    images = np.stack([p for p, _ in drawn]).astype(np.float32)
    labels = np.array([label for _, label in drawn], np.float32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(images, labels, batch_size=16, epochs=3, verbose=0)
    assert max(float(np.abs(a - b).max()) for a, b in zip(model.get_weights(), fresh)) > 1e-3
    return model


@pytest.mark.parametrize("name, options", [("baseline", {}), ("p4m", {"crop": 94})], ids=["baseline", "p4m"])
@pytest.mark.parametrize("tta", [False, True])
def test_padding_free_models_run_densely_exactly_after_training(name, options, tta):
    """--padding=valid: no layer pads, so a window's probability is the same alone or inside a region."""
    model = _trained(name, **options)
    region = _region(5)
    windows = _windows(region)
    _spread_head(model, windows)  # a few steps leave the probabilities close together: spread them apart
    want = _per_window(model, windows, tta)
    d = dense.DenseModel.of(model, PATCH, STRIDE)
    assert d.exact and d.cells == 10 and d.margin == (PATCH - options.get("crop", PATCH)) // 2
    got = dense.make_dense_fn([d], STRIDE, tta)(region).numpy()
    assert want.std() > 0.05, want  # distinct windows: a misplaced one would show
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_padding_free_under_bfloat16_stays_within_its_measured_bound():
    """A run trained with mixed bfloat16 saves bfloat16 layers: dense and per-window round differently, by at
    most BF16_BOUND (bench/RESULTS.md), far below the 'same'-padding difference."""
    import keras

    trained = _trained("baseline")
    _spread_head(trained, _windows(_region(6)))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build("baseline", padding="valid")
        model.set_weights(trained.get_weights())
        assert model.get_layer("conv1").compute_dtype == "bfloat16"
        region = _region(6)
        want = _per_window(model, _windows(region), False)
        got = dense.make_dense_fn([dense.DenseModel.of(model, PATCH, STRIDE)], STRIDE, False)(region).numpy()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    diff = float(np.abs(got - want).max())
    print(f"bfloat16: dense against per-window, max abs diff {diff:.2e}")
    assert want.std() > 0.05 and diff <= BF16_BOUND, (want, diff)
