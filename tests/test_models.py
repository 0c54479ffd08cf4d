"""The model registry: shapes, parameter counts, one training step each, mixed precision, fine-tuning."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import keras
import numpy as np
import pytest

from trainer import models
from trainer.models import transfer


def _train_step(model: keras.Model, size: int) -> float:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, size, size, 3)).astype("float32")
    y = np.array([[0], [1], [0], [1]], "float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    loss = float(model.train_on_batch(x, y))
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "no weight changed"
    p = model.predict(x, verbose=0)
    assert p.shape == (4, 1) and np.all((p >= 0) & (p <= 1))
    return loss


def test_registry_lists_the_six_models():
    assert models.NAMES == ("baseline", "tuned", "resnet50", "densenet169", "p4m", "p4m_params")
    assert set(models.TRANSFER) < set(models.NAMES)
    with pytest.raises(ValueError, match="choose one of baseline"):
        models.build("vgg16")
    assert models.arguments("baseline") == {"input_shape", "dropout", "channel_stats", "stain_norm", "crop", "padding"}
    assert models.arguments("resnet50") == {"input_shape", "weights", "dropout"}
    assert models.arguments("p4m") == {"input_shape", "filters", "dense", "dropout", "batch_norm", "crop", "padding"}


def test_model_names_are_read_without_importing_keras():
    """The flags take their choices from the registry, so reading it must stay cheap (python -m trainer --help)."""
    code = (
        "import sys; import trainer.config, trainer.models, trainer.training.gpu_check; "
        "assert not {'keras', 'tensorflow'} & set(sys.modules), sorted({'keras', 'tensorflow'} & set(sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def test_baseline_is_the_seed_cnn():
    model = models.build("baseline")
    assert model.count_params() == 109_889  # "about 110k" in the seed notebook
    convs = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == [32, 64, 128]
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 3
    assert model.get_layer("dense").units == 128
    assert model.output.shape == (None, 1)


@pytest.mark.parametrize("name", ["baseline", "tuned", "p4m"])
def test_cnn_takes_a_training_step(name):
    _train_step(models.build(name, input_shape=(32, 32, 3)), 32)


def test_tuned_follows_its_arguments():
    model = models.build("tuned", filters=(16, 32, 64, 128), dense=64, dropout=0.3, batch_norm=True)
    assert [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [16, 32, 64, 128]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 4
    assert model.get_layer("dropout").rate == 0.3


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "densenet169"])
def test_transfer_model_takes_a_training_step(name):
    model = models.build(name, input_shape=(32, 32, 3), weights=None)
    transfer.unfreeze_base(model, 10)
    _train_step(model, 32)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_output_is_float32_under_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = models.build("baseline", input_shape=(32, 32, 3))
        assert model.get_layer("conv1").compute_dtype == policy.removeprefix("mixed_")
        assert model.get_layer("probability").compute_dtype == "float32"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unfreezing_keeps_batch_norm_frozen():
    model = models.build("resnet50", input_shape=(32, 32, 3), weights=None)
    base = model.get_layer(transfer.BASE_LAYER)
    assert not base.trainable and not model.get_layer(transfer.BASE_LAYER).trainable_weights
    transfer.unfreeze_base(model, 20)
    tail = base.layers[-20:]
    assert all(not layer.trainable for layer in base.layers[:-20])
    assert all(layer.trainable != isinstance(layer, keras.layers.BatchNormalization) for layer in tail)
    transfer.unfreeze_base(model, None)
    bn = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn and not any(layer.trainable for layer in bn)
    assert all(layer.trainable for layer in base.layers if not isinstance(layer, keras.layers.BatchNormalization))
    transfer.freeze_base(model)
    assert not base.trainable_weights
    # From scratch there are no pretrained statistics to protect: batch norm trains too.
    transfer.unfreeze_base(model, None, train_batch_norm=True)
    assert all(layer.trainable for layer in bn)


def test_batch_norm_of_a_base_trained_from_scratch_updates_its_statistics():
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    model = models.build("resnet50", input_shape=(32, 32, 3), weights=None)
    transfer.unfreeze_base(model, None, train_batch_norm=True)
    bn = next(
        layer
        for layer in model.get_layer(transfer.BASE_LAYER).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    before = np.array(bn.moving_mean)
    model(x, training=True)
    assert not np.allclose(before, np.array(bn.moving_mean))


@pytest.mark.parametrize(
    ("mode", "app"), [("caffe", keras.applications.resnet50), ("torch", keras.applications.densenet)]
)
def test_preprocessing_layer_matches_keras_applications(mode, app):
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    got = keras.ops.convert_to_numpy(transfer.ImagenetPreprocess(mode)(x))
    np.testing.assert_allclose(got, app.preprocess_input(x.copy()), rtol=1e-5, atol=1e-4)


def test_imagenet_weights_without_internet_fail_clearly(monkeypatch, tmp_path):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    # Point Keras' cache at an empty folder, so a cached download on this machine cannot hide the failure.
    real_get_file = file_utils.get_file
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: real_get_file(*a, **{**k, "cache_dir": str(tmp_path)}))
    with pytest.raises(transfer.WeightsUnavailableError) as info:
        models.build("resnet50", input_shape=(32, 32, 3), weights="imagenet")
    message = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "--weights=" in message and "name resolution" in message


def test_weights_path_must_exist():
    with pytest.raises(ValueError, match="no such file"):
        models.build("densenet169", input_shape=(32, 32, 3), weights="/nonexistent/densenet.h5")


def test_cnn_normalises_with_channel_stats():
    from trainer.models.cnn import cnn

    mean, std = [200.0, 150.0, 180.0], [20.0, 30.0, 10.0]
    model = cnn((8, 8, 3), filters=(4,), dense=4, channel_stats=(mean, std))
    normalize = keras.Model(model.input, model.get_layer("normalize").output)
    x = np.broadcast_to(np.array(mean) + np.array(std), (1, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(normalize(x).numpy(), np.ones((1, 8, 8, 3)), rtol=1e-5)
    assert "rescale" not in [layer.name for layer in model.layers]


def test_channel_stats_flag_reaches_the_model(tmp_path):
    import dataclasses
    import json

    from trainer.config import train_config, validation
    from trainer.training import recipe

    base = train_config.TrainConfig(model="baseline", data_dir="d", model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="--channel_stats='nope.json': no such file"):
        validation.validate(dataclasses.replace(base, channel_stats="nope.json"))
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"groups": {"train": {"patches": 5, "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}}}))
    with pytest.raises(ValueError, match="--channel_stats is for the CNN models"):
        validation.validate(dataclasses.replace(base, model="resnet50", channel_stats=str(stats)))
    config = validation.validate(dataclasses.replace(base, channel_stats=str(stats)))
    layer = recipe.build_model(config).get_layer("normalize")
    np.testing.assert_allclose(np.ravel(layer.mean), [1, 2, 3])
    np.testing.assert_allclose(np.ravel(layer.variance), [16, 25, 36])


def test_weights_from_a_file_load_into_the_base(tmp_path):
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    base.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in base.get_weights()])
    path = tmp_path / "resnet50_notop.weights.h5"
    base.save_weights(str(path))
    model = models.build("resnet50", input_shape=(32, 32, 3), weights=str(path))
    loaded = model.get_layer(transfer.BASE_LAYER).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(loaded, base.get_weights()))


def test_stain_norm_layer_matches_the_numpy_reference_and_survives_saving(tmp_path):
    """--stain_norm=reinhard: the CNN's first layer is stains.reinhard in float32, also under bfloat16,
    and a saved model (what trainer.inference.predict loads) normalises the same way."""
    from pcam_tfds.core import stains
    from trainer.inference import probabilities
    from trainer.models.stain_norm import ReinhardNormalization

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 96, 96, 3)).astype("float32")
    expected = stains.reinhard(images)
    np.testing.assert_allclose(ReinhardNormalization()(images).numpy(), expected, atol=0.05)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build("baseline", stain_norm="reinhard")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    layer = model.get_layer("stain_norm")
    assert layer.compute_dtype == "float32" and model.layers[1] is layer
    normalised = keras.Model(model.input, layer.output)
    np.testing.assert_allclose(normalised(images).numpy(), expected, atol=0.05)
    model.save(tmp_path / "model.keras")
    loaded = probabilities.load_model(str(tmp_path))
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    with pytest.raises(ValueError, match="choose one of none, reinhard"):
        models.build("baseline", stain_norm="macenko")


def test_stain_norm_flag_reaches_the_model(tmp_path):
    import dataclasses

    from trainer.config import train_config, validation
    from trainer.training import recipe

    base = train_config.TrainConfig(model="baseline", data_dir="d", model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="--stain_norm is for the CNN models"):
        validation.validate(dataclasses.replace(base, model="resnet50", stain_norm="reinhard"))
    with pytest.raises(ValueError, match="stain_norm"):
        validation.validate(dataclasses.replace(base, stain_norm="macenko"))
    config = validation.validate(dataclasses.replace(base, model="tuned", stain_norm="reinhard"))
    assert "stain_norm" in [layer.name for layer in recipe.build_model(config).layers]
    assert "stain_norm" not in [layer.name for layer in recipe.build_model(base).layers]


@pytest.mark.parametrize("name", ["baseline", "tuned"])
def test_crop_keeps_the_centre_and_the_flag_reaches_the_model(name, tmp_path):
    """--crop=64: the model's first layer keeps the centre 64x64, so pixels outside it change nothing."""
    from trainer.config import train_config
    from trainer.training import recipe

    config = train_config.resolved(False, model=name, data_dir="d", model_dir=str(tmp_path), crop=64, max_cpu_minutes=1)
    keras.utils.set_random_seed(3)
    model = recipe.build_model(config)
    assert model.get_layer("centre_crop").output.shape[1:3] == (64, 64) and model.input_shape == (None, 96, 96, 3)
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    outside, inside = x.copy(), x.copy()
    outside[:, :16] = 0.0  # the top margin: outside the centre 64x64
    inside[:, 16:80, 16:80] = 0.0  # all of the centre 64x64: a fresh network's output must move by more than noise
    p = model.predict(x, verbose=0)
    np.testing.assert_allclose(model.predict(outside, verbose=0), p, atol=1e-6)
    assert np.abs(model.predict(inside, verbose=0) - p).max() > 1e-4
    assert "centre_crop" not in [layer.name for layer in models.build(name).layers]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "baseline", "crop": 63}, "--crop=63: the centre crop must fit in the 96x96 patch and leave equal"),
        ({"model": "baseline", "crop": 98}, "--crop=98"),
        ({"model": "p4m", "crop": 36}, r"--crop=36: --model=p4m with --padding=same halves its maps 3 times .* 88, 80"),
        ({"model": "p4m", "crop": 40, "filters": (32, 64, 128, 256)}, r"halves its maps 4 times .* 80, 64\)"),
        ({"model": "p4m", "padding": "valid"}, r"--crop=0: .*--padding=valid .* give --crop=94 \(or 86, 78\)"),
        ({"model": "p4m", "padding": "valid", "crop": 96}, "give --crop=94"),
        ({"model": "resnet50", "padding": "valid"}, "--padding does not apply to --model=resnet50"),
        ({"model": "resnet50", "crop": 64}, "--crop does not apply to --model=resnet50"),
        ({"model": "p4m_params", "crop": 64}, "--crop does not apply to --model=p4m_params"),
    ],
)
def test_crop_is_checked_before_training(options, message, tmp_path):
    from trainer.config import train_config
    from trainer.errors import UsageError

    with pytest.raises(UsageError, match=message):
        train_config.resolved(False, data_dir="d", model_dir=str(tmp_path), max_cpu_minutes=1, **options)


def test_padding_valid_pads_nowhere_and_keeps_the_weights(tmp_path):
    """--padding=valid: the same weights, maps shrinking by 2 pixels per 3x3 convolution (96 -> 94 -> 47 -> 45 ->
    22 -> 20 -> 10); p4m needs a centre crop that stays even before each pooling, and says which."""
    from trainer.models.p4m import exact_sides, pools_exactly

    valid = models.build("baseline", padding="valid")
    assert valid.count_params() == models.build("baseline").count_params()
    assert [valid.get_layer(f"conv{i}").output.shape[1] for i in (1, 2, 3)] == [94, 45, 20]
    assert valid.get_layer("pool3").output.shape[1:3] == (10, 10)
    assert all(layer.padding == "valid" for layer in valid.layers if isinstance(layer, keras.layers.Conv2D))
    assert pools_exactly(96, 3) and not pools_exactly(96, 3, "valid") and pools_exactly(94, 3, "valid")
    assert exact_sides(3, "valid")[:3] == [94, 86, 78]
    with pytest.raises(ValueError, match="sides 94, 86, 78"):
        models.build("p4m", padding="valid")
    p4m = models.build("p4m", padding="valid", crop=94)
    assert p4m.get_layer("pool3").output.shape[1:3] == (10, 10)
    with pytest.raises(ValueError, match="padding='full'"):
        models.build("baseline", padding="full")
    from trainer.config import train_config

    resolved = train_config.resolved(
        False, model="p4m", padding="valid", crop=94, data_dir="d", model_dir=str(tmp_path), max_cpu_minutes=1
    )
    assert (resolved.padding, resolved.crop) == ("valid", 94)
