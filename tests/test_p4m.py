"""The P4M models (trainer.models.gconv, p4m): the group law, each layer's equivariance, the model's exact
invariance (fresh and trained), mixed precision and XLA, save/load, and one run of the trainer, export and
predict with --tta."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runs import run_module

from trainer import models
from trainer.models import gconv, p4m

SIZE = 16  # even through two 2x2 poolings (16 -> 8 -> 4)


def _transform(x: np.ndarray, h: int) -> np.ndarray:
    """Group element h on a batch of maps (B, H, W, C)."""
    return np.ascontiguousarray(gconv.transform(x, h, axes=(1, 2)))


def _act(f: np.ndarray, h: int) -> np.ndarray:
    """h on a P4M map (B, H, W, C * 8): plane g takes plane h^-1 g, then the planes turn by h."""
    b, height, width, channels = f.shape
    planes = f.reshape(b, height, width, channels // gconv.ORDER, gconv.ORDER)
    planes = planes[..., gconv.PRODUCT[gconv.INVERSE[h]]]
    return _transform(planes.reshape(f.shape), h)


def test_the_eight_transforms_form_the_dihedral_group():
    a = np.random.default_rng(0).normal(size=(5, 5))
    images = [gconv.transform(a, g) for g in range(gconv.ORDER)]
    assert len({im.tobytes() for im in images}) == gconv.ORDER  # 8 different transforms
    for x in range(gconv.ORDER):
        assert gconv.PRODUCT[x, gconv.INVERSE[x]] == 0 and gconv.PRODUCT[0, x] == x
        for y in range(gconv.ORDER):
            np.testing.assert_array_equal(gconv.transform(images[y], x), images[gconv.PRODUCT[x, y]])
            for z in range(gconv.ORDER):
                assert gconv.PRODUCT[gconv.PRODUCT[x, y], z] == gconv.PRODUCT[x, gconv.PRODUCT[y, z]]
    assert not np.array_equal(gconv.PRODUCT, gconv.PRODUCT.T)  # not abelian: mirrors and rotations interact


def _random_weights(layer, seed: int) -> None:
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])


def test_lifting_and_group_layers_are_equivariant():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, SIZE, SIZE, 3)).astype("float32")
    lift, conv = gconv.P4MLift(3, 3), gconv.P4MConv(2, 5)
    lift(x)  # builds
    _random_weights(lift, 2)  # a non-zero bias too
    f = lift(x).numpy()
    conv(f)
    _random_weights(conv, 3)
    g = conv(f).numpy()
    assert f.shape == (2, SIZE, SIZE, 24) and g.shape == (2, SIZE, SIZE, 16)
    for h in range(gconv.ORDER):
        # float32 sums in another order: equal to 1e-5 of the maps' scale (values reach a few hundred here).
        np.testing.assert_allclose(lift(_transform(x, h)).numpy(), _act(f, h), atol=1e-5 * np.abs(f).max())
        np.testing.assert_allclose(conv(_act(f, h)).numpy(), _act(g, h), atol=1e-5 * np.abs(g).max())
    # The transformed filters differ: an ordinary convolution (every plane the same filter) would pass trivially.
    planes = f.reshape(2, SIZE, SIZE, 3, 8)
    assert np.abs(planes[..., 0] - planes[..., 1]).max() > 0.1


def test_the_group_layer_is_not_equivariant_without_the_orientation_permutation():
    """The check above can fail: expanding the filter spatially but leaving the orientations in place breaks it."""
    rng = np.random.default_rng(4)
    f = rng.normal(size=(1, SIZE, SIZE, 16)).astype("float32")
    conv = gconv.P4MConv(2, 3)
    conv(f)
    _random_weights(conv, 5)
    conv._index = np.stack(
        [(gconv._spatial_index(3)[g][:, None] * 8 + np.arange(8)[None, :]).ravel() for g in range(8)]
    )
    errors = [np.abs(conv(_act(f, h)).numpy() - _act(conv(f).numpy(), h)).max() for h in range(1, 8)]
    assert min(errors) > 1e-2


def test_group_batch_norm_and_group_pool_commute_with_the_group():
    rng = np.random.default_rng(6)
    f = rng.normal(2.0, 3.0, size=(4, 8, 8, 24)).astype("float32")
    bn, pool = gconv.GroupBatchNormalization(), gconv.GroupPool("max")
    out = bn(f, training=True).numpy()
    assert [w.shape for w in bn.weights][:2] == [(3,), (3,)]  # one scale and shift per channel, not per plane
    planes = out.reshape(4, 8, 8, 3, 8)
    np.testing.assert_allclose(planes.mean(axis=(0, 1, 2, 4)), 0.0, atol=1e-4)  # statistics over the 8 planes
    for h in range(gconv.ORDER):
        np.testing.assert_allclose(bn(_act(f, h), training=True).numpy(), _act(out, h), atol=1e-4)
        np.testing.assert_allclose(
            bn(_act(f, h), training=False).numpy(), _act(bn(f, training=False).numpy(), h), atol=1e-4
        )
    vectors = f.mean(axis=(1, 2))
    np.testing.assert_allclose(pool(vectors).numpy(), vectors.reshape(4, 3, 8).max(-1))
    np.testing.assert_allclose(pool(_act(f, 3).mean(axis=(1, 2))).numpy(), pool(vectors).numpy(), atol=1e-5)


def test_group_batch_norm_is_batch_norm_over_each_channels_eight_planes():
    """The same outputs, moving statistics and gradients as Keras' BatchNormalization of the map folded to
    (B, H, W * 8, C), the definition (and the implementation before issue 25's faster one)."""
    import keras
    import tensorflow as tf

    rng = np.random.default_rng(8)
    f = rng.normal(1.5, 2.0, size=(4, 6, 6, 3 * 8)).astype("float32") * rng.uniform(0.5, 3, 24).astype("float32")

    def fold(x):
        return tf.reshape(tf.transpose(tf.reshape(x, (4, 6, 6, 3, 8)), (0, 1, 2, 4, 3)), (4, 6, 48, 3))

    def unfold(y):
        return tf.reshape(tf.transpose(tf.reshape(y, (4, 6, 6, 8, 3)), (0, 1, 2, 4, 3)), (4, 6, 6, 24))

    group, reference = gconv.GroupBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    group.build(f.shape)
    reference.build((4, 6, 48, 3))
    for layer in (group, reference):  # a scale and shift away from 1 and 0, so both must be applied
        layer.gamma.assign([0.5, 2.0, -1.0])
        layer.beta.assign([0.1, -0.3, 2.0])
    x = tf.constant(f)
    weight = tf.constant(rng.normal(size=f.shape).astype("float32"))  # a loss that weighs each output differently
    outputs, gradients = [], []
    for layer, apply in (
        (group, lambda x: group(x, training=True)),
        (reference, lambda x: unfold(reference(fold(x), training=True))),
    ):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = apply(x)
            loss = tf.reduce_sum(y * weight)
        outputs.append(y.numpy())
        gradients.append([g.numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])])
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4)
    for mine, theirs in zip(*gradients):
        np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-3)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(group, name).numpy(), getattr(reference, name).numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        group(x, training=False).numpy(), unfold(reference(fold(x), training=False)).numpy(), atol=1e-4
    )
    with pytest.raises(ValueError, match="renorm"):
        gconv.GroupBatchNormalization(renorm=True)


def test_odd_kernels_and_even_sizes_are_required():
    with pytest.raises(ValueError, match="odd kernel"):
        gconv.P4MLift(4, 2)
    with pytest.raises(ValueError, match="even before every pooling"):
        models.build("p4m", input_shape=(36, 36, 3))  # 36 -> 18 -> 9: the last pooling would break invariance


def _assert_invariant(model, x, atol=1e-5):
    p = model.predict(x, verbose=0)
    for h in range(1, gconv.ORDER):
        np.testing.assert_allclose(model.predict(_transform(x, h), verbose=0), p, atol=atol)
    return p


@pytest.mark.parametrize("batch_norm", [False, True])
def test_the_model_is_invariant_fresh_and_after_training(batch_norm):
    import keras

    keras.utils.set_random_seed(0)
    model = models.build("p4m", input_shape=(32, 32, 3), batch_norm=batch_norm, dropout=0.0)
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    y = np.array([[0], [1], [0], [1], [1], [0]], "float32")
    p0 = _assert_invariant(model, x)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    for _ in range(3):
        model.train_on_batch(x, y)
    p1 = _assert_invariant(model, x)
    assert np.abs(p1 - p0).max() > 1e-3  # training moved it
    assert model.get_layer("conv2").get_weights()[0].shape == (3, 3, 4, 8, 8)  # 4 channels x 8 orientations in


def test_widths_matched_by_flops_and_by_parameters():
    baseline, flops, params = (models.build(n) for n in ("baseline", "p4m", "p4m_params"))

    def conv_macs(model):  # multiply-adds of the convolutions per image ('same' padding, stride 1)
        total = 0
        for layer in model.layers:
            if layer.name.startswith("conv"):
                k = layer.get_weights()[0]
                height = layer.output.shape[1]
                total += height * height * k.shape[0] * k.shape[1] * layer.input.shape[-1] * layer.output.shape[-1]
        return total

    def conv_params(model):
        return sum(layer.count_params() for layer in model.layers if layer.name.startswith("conv"))

    assert conv_macs(flops) == conv_macs(baseline)  # 4/8/16 x 8 planes = 32/64/128 channels
    assert 0.9 < conv_params(params) / conv_params(baseline) < 1.1
    assert conv_params(flops) < conv_params(baseline) / 7
    assert models.invariant("p4m") and models.invariant("p4m_params") and not models.invariant("baseline")


def test_filters_count_feature_planes_so_equal_widths_cost_equal_flops(tmp_path):
    """--filters for p4m (and the width pcam-tune --model=p4m samples) counts planes: 8 per group channel."""
    from trainer.config import train_config, validation
    from trainer.errors import UsageError

    deep = models.build("p4m", filters=(32, 64, 128, 256), dense=64, batch_norm=True)
    assert [deep.get_layer(f"conv{i}").filters for i in range(1, 5)] == [4, 8, 16, 32]
    assert deep.get_layer("dense").units == 64 and deep.get_layer("bn4") is not None
    assert [models.build("p4m").get_layer(f"conv{i}").filters for i in (1, 2, 3)] == list(p4m.FLOP_MATCHED)
    cfg = train_config.TrainConfig(model="p4m", data_dir="d", model_dir=str(tmp_path), filters=(32, 64, 128, 256))
    assert validation.validate(cfg).filters == (32, 64, 128, 256)
    with pytest.raises(UsageError, match=r"--filters=32,60,128: --model=p4m counts widths in feature planes.*of 8"):
        validation.validate(train_config.TrainConfig(model="p4m", data_dir="d", model_dir="m", filters=(32, 60, 128)))
    validation.validate(train_config.TrainConfig(model="tuned", data_dir="d", model_dir="m", filters=(30, 60)))
    with pytest.raises(ValueError, match="multiple of 8"):
        models.build("p4m", filters=(32, 12))
    with pytest.raises(UsageError, match="--filters does not apply to --model=p4m_params"):
        train_config.resolved(False, model="p4m_params", data_dir="d", model_dir="m", filters="32,64")
    # Its builder takes neither channel statistics nor stain normalisation: refused, not silently ignored.
    for option, value in (("channel_stats", "stats.json"), ("stain_norm", "reinhard")):
        with pytest.raises(UsageError, match=f"--{option} is for the CNN models .*--model=p4m would ignore it"):
            train_config.resolved(False, model="p4m", data_dir="d", model_dir="m", **{option: value})


def test_a_centre_crop_keeps_the_model_exactly_invariant():
    model = models.build("p4m", crop=64, batch_norm=True)
    assert model.get_layer("centre_crop").output.shape[1:3] == (64, 64)
    x = np.random.default_rng(9).uniform(0, 255, (3, 96, 96, 3)).astype("float32")
    _assert_invariant(model, x)
    with pytest.raises(ValueError, match=r"the centre crop 36x36 of input_shape=\(96, 96, 3\): p4m with padding="):
        models.build("p4m", crop=36)


def test_mixed_precision_and_xla_keep_the_output_float32():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build("p4m", input_shape=(32, 32, 3), batch_norm=True)
        assert model.get_layer("conv2").compute_dtype == "bfloat16" and model.output.dtype == "float32"
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", jit_compile=True)
        x = np.random.default_rng(8).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
        loss = model.train_on_batch(x, np.array([[0], [1], [0], [1]], "float32"))
        assert np.isfinite(float(loss))
        # bfloat16 rounds each view's sums in its own order: invariant to bfloat16's precision, not to float32's.
        _assert_invariant(model, x, atol=2e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_save_and_load_give_the_same_probabilities(tmp_path):
    import keras

    from trainer.inference import probabilities

    model = models.build("p4m", input_shape=(32, 32, 3), batch_norm=True)
    x = np.random.default_rng(9).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "model.keras")
    loaded = probabilities.load_model(str(tmp_path))
    assert isinstance(loaded.get_layer("conv2"), gconv.P4MConv) and isinstance(
        loaded.get_layer("bn1"), keras.layers.Layer
    )
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.slow
def test_trainer_export_and_predict(pcam_data, tmp_path):
    """`python -m trainer --model=p4m` trains and reports (Grad-CAM included); the export serves the same
    probabilities; `--tta` says it is one pass and gives the plain answer."""
    import tensorflow as tf

    from trainer.inference import explain, probabilities

    run_dir = tmp_path / "p4m"
    run_module(
        "trainer",
        "--model=p4m",
        f"--data_dir={pcam_data['tfds']}",
        f"--model_dir={run_dir}",
        "--epochs=1",
        "--batch_size=16",
    )
    assert (run_dir / "gradcam_gallery.png").exists()
    model = probabilities.load_model(str(run_dir))
    assert model.name == "p4m"
    images = np.random.default_rng(10).integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    expected = probabilities.make_predict_fn([model], tta=False)(tf.cast(images, tf.float32)).numpy()
    np.testing.assert_allclose(
        probabilities.make_predict_fn([model], tta=True)(tf.cast(images, tf.float32)).numpy(), expected, atol=2e-2
    )
    cam = explain.GradCam(model)
    assert cam.layer_name == "pool3"  # the last P4M map: all 8 orientations of each channel
    heat = cam(images.astype("float32"))
    assert heat.shape == (4, 96, 96) and np.isfinite(heat).all()
    # The heatmap turns with the image (bfloat16 maps: equal to its rounding, not exactly).
    turned = cam(_transform(images.astype("float32"), 5))
    assert np.abs(turned - _transform(heat[..., None], 5)[..., 0]).mean() < 0.02

    out = tmp_path / "export"
    run_module("trainer.inference.export", f"--model_dir={run_dir}", f"--output_dir={out}")
    served = tf.saved_model.load(str(out)).signatures["serving_default"](images=tf.constant(images))["probability"]
    np.testing.assert_allclose(served.numpy().ravel(), expected, atol=1e-5)

    plain, tta = tmp_path / "plain.csv", tmp_path / "tta.csv"
    for output, extra in ((plain, []), (tta, ["--tta"])):
        proc = run_module(
            "trainer.inference.predict",
            f"--model_dir={run_dir}",
            f"--data_dir={pcam_data['tfds']}",
            f"--output={output}",
            *extra,
        )
    assert "TTA is one pass" in proc.stderr
    assert plain.read_text() == tta.read_text()
