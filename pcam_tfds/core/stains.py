"""H&E colour deconvolution (Ruifrok & Johnston 2001) in numpy: one definition of the stain matrix.

    stains = rgb_to_hed(pixels)     (..., 3) 0..255 RGB -> haematoxylin, eosin, DAB in optical density
    pixels = hed_to_rgb(stains)     the inverse (not clipped, so the round trip is exact up to rounding)

The EDA report separates sample patches into their stains with these functions, and `trainer.augment`
builds its stain jitter (in TensorFlow) on the same `RGB_FROM_HED` and `OD_REFERENCE`.
"""

from __future__ import annotations

import numpy as np

STAINS = ("haematoxylin", "eosin", "DAB")

# Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB) in optical-density RGB, as in
# skimage.color.rgb_from_hed; its inverse separates an optical-density pixel into the three stains.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
RGB_FROM_HED.flags.writeable = False
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
HED_FROM_RGB.flags.writeable = False

# Optical density of a 0..255 value v is -log((v + 1) / 256): finite at 0, and exactly 0 for white (255).
OD_REFERENCE = 256.0


def rgb_to_od(pixels: np.ndarray) -> np.ndarray:
    """0..255 RGB (any shape ending in 3, any numeric dtype) -> float64 optical density -log((v + 1) / 256)."""
    return -np.log((np.asarray(pixels, dtype=np.float64) + 1.0) / OD_REFERENCE)


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """The inverse of rgb_to_od (float64, not clipped)."""
    return OD_REFERENCE * np.exp(-np.asarray(od, dtype=np.float64)) - 1.0


def rgb_to_hed(pixels: np.ndarray) -> np.ndarray:
    """0..255 RGB (..., 3) -> stain amounts (..., 3): haematoxylin, eosin, DAB, in optical-density units.

    Not clipped: a pixel the three stains cannot explain gets a negative amount of some stain, and the
    result still inverts exactly.
    """
    return rgb_to_od(pixels) @ HED_FROM_RGB


def hed_to_rgb(stains: np.ndarray) -> np.ndarray:
    """The inverse of rgb_to_hed: stain amounts (..., 3) -> float64 0..255 RGB (not clipped)."""
    return od_to_rgb(np.asarray(stains, dtype=np.float64) @ RGB_FROM_HED)


def stain_rgb(stains: np.ndarray, stain: int) -> np.ndarray:
    """uint8 RGB of one stain alone (the others set to 0): how that stain by itself would look on white."""
    only = np.zeros_like(np.asarray(stains, dtype=np.float64))
    only[..., stain] = stains[..., stain]
    return np.clip(np.rint(hed_to_rgb(only)), 0, 255).astype(np.uint8)
