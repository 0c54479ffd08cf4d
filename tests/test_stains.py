"""pcam_tfds.core.stains: H&E colour deconvolution in numpy, and the one matrix the trainer shares."""

from __future__ import annotations

import numpy as np

from pcam_tfds.core import stains


def test_rgb_hed_rgb_round_trips_on_every_value():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    pixels[0, 0, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 128]]  # the extremes invert too
    hed = stains.rgb_to_hed(pixels)
    assert hed.shape == pixels.shape and hed.dtype == np.float64
    np.testing.assert_allclose(stains.hed_to_rgb(hed), pixels, atol=1e-9)


def test_a_pixel_of_one_stain_separates_into_that_stain_alone():
    for k in range(3):
        amounts = np.zeros(3)
        amounts[k] = 0.8
        rgb = stains.hed_to_rgb(amounts)
        np.testing.assert_allclose(stains.rgb_to_hed(rgb), amounts, atol=1e-12)
    assert np.all(stains.rgb_to_hed(np.full(3, 255)) == 0)  # white glass holds no stain


def test_haematoxylin_is_blue_and_eosin_pink():
    amounts = np.array([[0.5, 0.5, 0.5]])
    h, e, d = (stains.stain_rgb(amounts, k)[0] for k in range(3))
    assert h.dtype == np.uint8 and h[2] > h[0]  # more blue than red
    assert e[0] > e[1] and e[2] > e[1]  # red and blue over green
    assert d[0] > d[1] > d[2]  # DAB is brown


def test_the_trainer_jitters_stains_with_the_same_matrix():
    from trainer import augment

    assert augment._RGB_FROM_HED is stains.RGB_FROM_HED
    assert augment._OD_REFERENCE == stains.OD_REFERENCE
    images = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(augment.rgb_to_hed(images).numpy(), stains.rgb_to_hed(images), atol=1e-4)


def _tissue(seed: int, n: int = 2) -> np.ndarray:
    """H&E-like patches: random haematoxylin and eosin amounts in a plausible range."""
    rng = np.random.default_rng(seed)
    amounts = np.stack(
        [rng.uniform(0.05, 0.6, (n, 96, 96)), rng.uniform(0.05, 0.4, (n, 96, 96)), np.zeros((n, 96, 96))], -1
    )
    return np.clip(stains.hed_to_rgb(amounts), 0, 255)


def test_rgb_lab_rgb_round_trips_on_every_value():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    pixels[0, 0, :2] = [[0, 0, 0], [255, 255, 255]]
    np.testing.assert_allclose(stains.lab_to_rgb(stains.rgb_to_lab(pixels)), pixels, atol=1e-9)


def test_reinhard_gives_every_patch_the_target_statistics():
    lab = stains.reinhard_lab(stains.rgb_to_lab(_tissue(1)))
    np.testing.assert_allclose(lab.mean(axis=(1, 2)), [stains.REINHARD_TARGET_MEAN] * 2, atol=1e-9)
    np.testing.assert_allclose(lab.std(axis=(1, 2)), [stains.REINHARD_TARGET_STD] * 2, rtol=1e-9)
    np.testing.assert_allclose(stains.reinhard_lab(lab), lab, atol=1e-9)  # a normalised patch is left as it is
    out = stains.reinhard(_tissue(1))
    assert out.shape == (2, 96, 96, 3) and out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(out, np.clip(stains.lab_to_rgb(lab), 0, 255), atol=1e-9)


def test_reinhard_removes_a_colour_cast():
    """The same tissue under another stain batch or scanner (a per-channel scale and shift in l-alpha-beta)
    normalises to the same patch."""
    patch = _tissue(2)
    cast = stains.lab_to_rgb(stains.rgb_to_lab(patch) * [0.9, 1.3, 0.7] + [-0.1, 0.02, -0.01])
    assert np.abs(cast - patch).max() > 20
    np.testing.assert_allclose(stains.reinhard(cast), stains.reinhard(patch), atol=1e-6)


def test_reinhard_of_a_blank_patch_is_finite_and_uniform():
    out = stains.reinhard(np.full((1, 96, 96, 3), 255.0))
    assert np.all(np.isfinite(out)) and np.ptp(out.reshape(-1, 3), axis=0).max() == 0
