"""Writes the builder test's dummy data: a tiny seeded Kaggle layout, plus one bad file.

    python pcam_tfds/pcam/dummy_data/make_dummy_data.py

20 train patches (one of them an empty file, which the build must leave out
and list), 4 test patches. Run again only to change the dummy data.
"""

from pathlib import Path

from pcam_tfds import synthetic

HERE = Path(__file__).parent


def main() -> None:
    for sub in ("train", "test"):
        for f in (HERE / sub).glob("*"):
            f.unlink()
    synthetic.write_layout(HERE, num_train=20, num_test=4, seed=2018)
    bad = sorted((HERE / "train").glob("*.tif"))[0]
    bad.write_bytes(b"")  # the builder must reject this file and keep going


if __name__ == "__main__":
    main()
