"""H&E colour deconvolution (Ruifrok & Johnston 2001) and Reinhard colour normalisation in numpy: one
definition of each matrix.

    stains = rgb_to_hed(pixels)     (..., 3) 0..255 RGB -> haematoxylin, eosin, DAB in optical density
    pixels = hed_to_rgb(stains)     the inverse (not clipped, so the round trip is exact up to rounding)
    lab = rgb_to_lab(pixels)        (..., 3) 0..255 RGB -> Reinhard's l-alpha-beta; lab_to_rgb inverts it
    out = reinhard(images)          (..., H, W, 3) each image's colour statistics moved to a target's

The EDA report separates sample patches into their stains with these functions, `trainer.augment`
builds its stain jitter (in TensorFlow) on the same `RGB_FROM_HED` and `OD_REFERENCE`, and
`trainer.models.stain_norm` normalises colour inside the CNNs (`--stain_norm=reinhard`) with the
l-alpha-beta matrices and target below.
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


# Reinhard et al. 2001's l-alpha-beta space: RGB -> LMS cone responses, log10, then decorrelated axes
# (lightness, yellow-blue, red-green). Reinhard colour normalisation moves each image's per-channel mean
# and standard deviation there to a target's.
LMS_FROM_RGB = np.array([[0.3811, 0.5783, 0.0402], [0.1967, 0.7244, 0.0782], [0.0241, 0.1288, 0.8444]])
LAB_FROM_LOG_LMS = np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)]) @ np.array(
    [[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]]
)
RGB_FROM_LMS = np.linalg.inv(LMS_FROM_RGB)
LOG_LMS_FROM_LAB = np.linalg.inv(LAB_FROM_LOG_LMS)
for _m in (LMS_FROM_RGB, LAB_FROM_LOG_LMS, RGB_FROM_LMS, LOG_LMS_FROM_LAB):
    _m.flags.writeable = False

# The target of `reinhard`: the mean over patches of each patch's l-alpha-beta mean and standard deviation,
# from 2,000 training patches of the real PCam sample (the first 2,000 ids of its train/ in sorted order).
REINHARD_TARGET_MEAN = (3.7189, -0.0627, 0.0185)
REINHARD_TARGET_STD = (0.3168, 0.0467, 0.0140)
# A patch whose channel varies less than this (a blank patch) is shifted to the target mean, not stretched.
REINHARD_MIN_STD = 1e-3


def rgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    """0..255 RGB (..., 3) -> float64 l-alpha-beta (Reinhard et al. 2001); v + 1 keeps the log of black finite."""
    lms = (np.asarray(pixels, dtype=np.float64) + 1.0) @ LMS_FROM_RGB.T
    return np.log10(lms) @ LAB_FROM_LOG_LMS.T


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """The inverse of rgb_to_lab: float64 0..255 RGB (not clipped)."""
    lms = 10.0 ** (np.asarray(lab, dtype=np.float64) @ LOG_LMS_FROM_LAB.T)
    return lms @ RGB_FROM_LMS.T - 1.0


def reinhard_lab(lab: np.ndarray, mean=REINHARD_TARGET_MEAN, std=REINHARD_TARGET_STD) -> np.ndarray:
    """Images (..., H, W, 3) in l-alpha-beta with each image's per-channel mean and std set to `mean` and `std`."""
    m = lab.mean(axis=(-3, -2), keepdims=True)
    s = np.maximum(lab.std(axis=(-3, -2), keepdims=True), REINHARD_MIN_STD)
    return (lab - m) / s * np.asarray(std) + np.asarray(mean)


def reinhard(images: np.ndarray, mean=REINHARD_TARGET_MEAN, std=REINHARD_TARGET_STD) -> np.ndarray:
    """Reinhard colour normalisation of images (..., H, W, 3), 0..255 RGB -> float64 0..255 RGB (clipped):
    each image's l-alpha-beta channels get the target `mean` and `std`. The reference that
    trainer.models.stain_norm's layer is tested against."""
    return np.clip(lab_to_rgb(reinhard_lab(rgb_to_lab(images), mean, std)), 0.0, 255.0)
