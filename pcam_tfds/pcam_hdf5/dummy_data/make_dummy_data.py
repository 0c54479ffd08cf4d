"""Writes the builder test's dummy data: the six PCam HDF5 files, tiny and seeded, with one bad label.

    python pcam_tfds/pcam_hdf5/dummy_data/make_dummy_data.py

train 6 patches (row 2 labelled 2, which the build must leave out and list), valid 3, test 3, laid
out as the real files: `x` (N, 96, 96, 3) uint8 and `y` (N, 1, 1, 1) uint8. The images are 12x12
blocks of 8x8 pixels, so the gzip-compressed files stay small. Run again only to change the dummy data.
"""

from pathlib import Path

import h5py
import numpy as np

HERE = Path(__file__).parent
SIZES = {"train": 6, "valid": 3, "test": 3}
BAD_LABELS = {("train", 2): 2}


def main() -> None:
    rng = np.random.default_rng(2018)
    for name, n in SIZES.items():
        blocks = rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
        x = blocks.repeat(8, axis=1).repeat(8, axis=2)
        y = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1, 1, 1)
        for (split, row), label in BAD_LABELS.items():
            if split == name:
                y[row] = label
        for key, data in (("x", x), ("y", y)):
            with h5py.File(HERE / f"camelyonpatch_level_2_split_{name}_{key}.h5", "w") as f:
                f.create_dataset(key, data=data, compression="gzip", track_times=False)


if __name__ == "__main__":
    main()
