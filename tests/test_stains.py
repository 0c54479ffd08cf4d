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
