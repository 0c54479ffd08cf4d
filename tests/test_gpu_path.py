"""The GPU-ready input path, tested on the CPU: uint8 batches cast inside the model, augmentation inside the
train step (--augment_on=device), steps_per_execution with the budget stop, the one-device strategy,
and the mixed-precision details (float32 output, loss scaling under float16, bfloat16)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import augment, models
from trainer.training import distribute, recipe
from trainer.training.budget import Budget, BudgetStop


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _uint8_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["baseline", "densenet169"])
def test_uint8_feeding_gives_the_float_predictions(name):
    kwargs = {"weights": None} if name in models.TRANSFER else {}
    model = models.build(name, input_shape=(32, 32, 3), **kwargs)
    images = _uint8_images(4, 32)
    from_uint8 = model.predict(tf.data.Dataset.from_tensors(images), verbose=0)
    from_float = model.predict(tf.data.Dataset.from_tensors(images.astype("float32")), verbose=0)
    np.testing.assert_array_equal(from_uint8, from_float)


# Device augmentation: a grey ramp whose pixels all differ. The jitter maps greys to greys and, per image,
# intensities through one increasing function, so the order of its pixels shows which of the 8 dihedral
# transforms was applied, and its mean and spread show the brightness and contrast drawn.
_SIZE = 8
_RAMP = (60.0 + 2.0 * np.arange(_SIZE * _SIZE, dtype="float32")).reshape(1, _SIZE, _SIZE, 1).repeat(3, axis=-1)


def _transform_ids(images: np.ndarray) -> list[int]:
    views = [np.argsort(v[0, ..., 0].numpy().ravel()) for v in augment.all_dihedral(tf.constant(_RAMP))]
    ids = []
    for image in images:
        order = np.argsort(image[..., 0].ravel())
        ids.append(next(i for i, v in enumerate(views) if np.array_equal(v, order)))
    return ids


def _check_jitter_bounds(images: np.ndarray) -> None:
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert np.allclose(images[..., 0], images[..., 1], atol=1e-2)  # greys stay grey: hue and saturation act on colour
    shift = images.mean(axis=(1, 2, 3)) - _RAMP.mean()
    assert np.all(np.abs(shift) <= 0.1 * 255 + 1e-2)  # brightness in [-0.1, 0.1]
    spread = np.ptp(images[..., 0], axis=(1, 2)) / np.ptp(_RAMP[..., 0])
    assert np.all((spread >= 0.8 - 1e-3) & (spread <= 1.2 + 1e-3))  # contrast in [0.8, 1.2]


def _probe_model(name: str | None, seed: int = 7) -> keras.Model:
    """A model whose output is its input: the loss sees exactly the images the train step fed it."""
    inputs = keras.Input((_SIZE, _SIZE, 3))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    return augment.on_device(model, name, seed) if name else model


class _Capture(keras.losses.Loss):
    """A loss that stores the predictions (= the augmented images) of the last step."""

    def __init__(self, store: tf.Variable):
        super().__init__()
        self.store = store

    def call(self, y_true, y_pred):
        self.store.assign(tf.cast(y_pred, tf.float32))
        return tf.reduce_mean(y_pred) * 0.0


def _augmented_batch(name: str, step: int, seed: int = 7, batch: int = 256) -> np.ndarray:
    model = _probe_model(name, seed)
    store = tf.Variable(tf.zeros([batch, _SIZE, _SIZE, 3]))
    model.compile(keras.optimizers.SGD(0.0), loss=_Capture(store))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(step)
    images = np.repeat(_RAMP, batch, axis=0).astype("uint8")
    model.train_on_batch(images, images.astype("float32"))
    return store.numpy()


def test_device_augmentation_draws_all_dihedral_transforms_within_the_jitter_bounds():
    device = _augmented_batch("dihedral", step=3)
    assert set(_transform_ids(device)) == set(range(8))
    _check_jitter_bounds(device)
    # The host pipeline's function on the same images: the same transforms and bounds.
    host = augment.make_augment_fn("dihedral", 0)(tf.constant(np.repeat(_RAMP, 256, axis=0)), tf.constant([5, 9]))
    assert set(_transform_ids(host.numpy())) == set(range(8))
    _check_jitter_bounds(host.numpy())


def test_device_augmentation_is_seeded_by_run_seed_and_step():
    first = _augmented_batch("hed", step=3, batch=16)
    np.testing.assert_array_equal(first, _augmented_batch("hed", step=3, batch=16))
    assert not np.allclose(first, _augmented_batch("hed", step=4, batch=16))
    assert not np.allclose(first, _augmented_batch("hed", step=3, seed=8, batch=16))
    assert first.shape == (16, _SIZE, _SIZE, 3) and first.min() >= 0.0 and first.max() <= 255.0


def test_device_augmentation_is_off_in_evaluation_and_prediction():
    model = _probe_model("hed")
    model.compile(keras.optimizers.SGD(0.0), loss="mse")
    images = np.repeat(_RAMP, 8, axis=0).astype("uint8")
    np.testing.assert_array_equal(model.predict(images, verbose=0), images.astype("float32"))
    assert model.evaluate(images, images.astype("float32"), verbose=0) == 0.0
    assert model.train_on_batch(images, images.astype("float32")) > 0.0  # training does augment


def test_device_augmentation_refuses_the_stateful_seed_layers():
    with pytest.raises(ValueError, match="on the device choose"):
        _probe_model("seed")


def test_budget_stop_with_several_steps_per_execution_stops_after_the_first_execution():
    x, y = np.zeros((64, 4), "float32"), np.zeros((64, 1), "float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=4)
    ends = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: ends.append(b))
    history = model.fit(
        x,
        y,
        batch_size=4,
        epochs=3,
        validation_data=(x, y),
        verbose=0,
        callbacks=[BudgetStop(Budget(wall_s=1e-6)), counter],
    )
    assert history.epoch == [0] and len(ends) == 1 and int(model.optimizer.iterations) == 4
    assert "val_loss" in history.history


def test_one_device_strategy_trains_on_uint8_batches():
    strategy = distribute.make_strategy("one_device")
    with strategy.scope():
        model = models.build("baseline", input_shape=(32, 32, 3))
        recipe.compile_model(model, keras.optimizers.Adam(1e-3), jit_compile=False, steps_per_execution=2)
    images = _uint8_images(16, 32)
    labels = (np.arange(16) % 2).astype("float32")[:, None]
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4).repeat()
    history = model.fit(ds, steps_per_epoch=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and int(model.optimizer.iterations) == 4


@pytest.mark.parametrize(
    "policy, compute, loss_scaled",
    [("mixed_float16", "float16", True), ("mixed_bfloat16", "bfloat16", False), ("float32", "float32", False)],
)
def test_mixed_precision_output_and_loss_scaling(policy, compute, loss_scaled):
    keras.mixed_precision.set_global_policy(policy)
    model = models.build("baseline", input_shape=(32, 32, 3))
    recipe.compile_model(model, recipe.make_optimizer("adam", 1e-3), jit_compile=False)
    assert model.get_layer("conv1").compute_dtype == compute
    assert model.get_layer("probability").compute_dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) is loss_scaled
    images, labels = _uint8_images(8, 32), (np.arange(8) % 2).astype("float32")[:, None]
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert model.predict(images, verbose=0).dtype == np.float32
    assert all(w.dtype == "float32" for w in model.trainable_weights)  # variables stay float32
