"""The `pcam_hdf5` dataset: the official PatchCamelyon HDF5 files as TFDS, with their own splits.

    tfds build pcam_tfds/pcam_hdf5 --manual_dir=PCAM_H5_DIR --data_dir=TFDS_DIR

PCAM_H5_DIR holds the six `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5` files of
https://github.com/basveeling/pcam, gunzipped. Given Beam options or a runner
(`--beam_pipeline_options=...`) the patches are read on Beam workers instead, which must all see
PCAM_H5_DIR (a local or mounted path: h5py reads it). The files' own splits are kept: train 262,144,
validation 32,768, test 32,768, all labelled. Checking the files and their labels, and what is
rejected, is `hdf5_source.py`; the results go to `validate/` beside the shards.

Reading the result needs neither Beam nor this module:
`tfds.builder_from_directory(TFDS_DIR/pcam_hdf5/official/1.1.0)`; it needs the `pcam` package
installed, for the image feature's class (pcam_tfds/features.py).
"""

from __future__ import annotations

import json

import tensorflow_datasets as tfds

from pcam_tfds import builder_base
from pcam_tfds.core import counters
from pcam_tfds.pcam_hdf5 import hdf5_source


class Builder(builder_base.PatchBuilder):
    """DatasetBuilder for the PatchCamelyon (PCam) HDF5 files."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "The official PCam splits; patches whose label is not 0 or 1 are left out and listed.",
        "1.1.0": "The same records, byte for byte; `label` is a ClassLabel (normal, tumour) and `image` an Image "
        "stored as raw bytes, so tfds.show_examples and tfds.as_dataframe draw the patches.",
    }
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(
            name="official",
            description="The official PCam HDF5 files and their splits (262,144 / 32,768 / 32,768, test labelled).",
        )
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the six camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5.gz files of
    https://github.com/basveeling/pcam, gunzip them, and pass their folder as --manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=builder_base.patch_features(
                label_doc="tumour: tumour tissue in the centre 32x32",
                id_doc="<file split>_<row> (e.g. valid_000017): the row in the HDF5 files",
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/basveeling/pcam",
            license=builder_base.PCAM_LICENSE,
        )

    def _split_generators(self, dl_manager):
        # The six files are checked and every label is scanned here, before any patch is read.
        manual_dir = str(dl_manager.manual_dir)
        sizes, _ = hdf5_source.prepare(manual_dir, str(self.checks_dir()))
        return {
            split: self._generate_examples(manual_dir, name, sizes[name])
            for name, split in hdf5_source.FILE_SPLITS.items()
        }

    def _generate_examples(self, manual_dir: str, name: str, size: int):
        """The valid patches of file split NAME: a generator here, or on Beam a PTransform TFDS applies."""
        if self._on_beam:
            beam = tfds.core.lazy_imports.apache_beam
            counter = (counters.NAMESPACE, counters.examples(hdf5_source.FILE_SPLITS[name]))
            return beam.ptransform_fn(hdf5_source.read_split)(manual_dir, name, size, counter)
        return hdf5_source.split_examples(manual_dir, name, size, self._emitted)

    def _check_counts(self, split_infos, emitted) -> None:
        summary = json.loads((self.checks_dir() / "summary.json").read_text())
        check_split_counts(split_infos, emitted, summary)


def check_split_counts(split_infos, emitted: dict, summary: dict) -> None:
    """Fails unless each split holds exactly the patches that validation passed in its file split."""
    names = list(summary["by_split"])
    written = builder_base.written_counts(split_infos, names)
    problems = builder_base.emitted_problems(written, emitted)
    for name in names:
        if written[name] != summary["by_split"][name]["valid"]:
            problems.append(
                f"{name} holds {written[name]} examples, validation passed {summary['by_split'][name]['valid']}"
            )
    if problems:
        raise RuntimeError("pcam_hdf5 build lost or duplicated examples: " + "; ".join(problems))
