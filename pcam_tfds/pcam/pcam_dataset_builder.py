"""The `pcam` dataset: the Kaggle PCam patches as TFDS, built in one process or with Apache Beam.

Every config (`full`, `sample25`) from one Kaggle folder:

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR [--config=full]

On one machine (as above) worker processes validate the files, then write the shards as TFDS' own Writer
lays them out, with no Beam imported (pcam_tfds/local_steps.py). With Beam options or a runner the same
build runs on Beam (here the DirectRunner; Dataflow, Flink, Spark in BUILD.md):

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full \\
        --beam_pipeline_options=direct_running_mode=in_memory

Either way the build validates the files itself (the results go to `validate/` beside the shards),
unless PCAM_VALIDATION_DIR names the output folder of a `python -m beam_jobs.validate` run over the
same folder: then it checks that the folder has not changed since and reuses that validation
(pcam_tfds/core/validated.py), reading every file once instead of twice. The official PCam HDF5 files
are another dataset, `pcam_tfds/pcam_hdf5`.

Reading the result needs neither Beam nor this module:
`tfds.builder_from_directory(TFDS_DIR/pcam/full/2.0.0)`; it needs the `pcam` package installed, for
the image feature's class (pcam_tfds/features.py).
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow_datasets as tfds

from pcam_tfds import builder_base
from pcam_tfds.core import layout, splits, validated

_SPLITS = (splits.TRAIN, splits.VALIDATION, layout.TEST)
LICENSE = (
    builder_base.PCAM_LICENSE + ". Downloading the data "
    "from Kaggle also requires accepting the competition's rules, which govern that download."
)


@dataclasses.dataclass
class PcamConfig(tfds.core.BuilderConfig):
    """How the labelled patches are split.

    validation_fraction: share of each label held out for validation.
    sample_fraction: share of the labelled patches kept at all (test is always whole).
    seed: the split's seed; the same seed gives the same membership.
    slide_csv: optional CSV mapping patch ids to slides (columns `id` and `wsi` or `slide`);
      patches of one slide then stay on one side.
    """

    validation_fraction: float = 0.2
    sample_fraction: float = 1.0
    seed: int = 42
    slide_csv: str | None = None


class InputsChangedError(RuntimeError):
    """A built dataset's inputs changed since it was built; TFDS would silently reuse it."""


class Builder(builder_base.PatchBuilder):
    """DatasetBuilder for the Kaggle Histopathologic Cancer Detection patches."""

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Kaggle train split 80/20 by label, duplicates and slides kept together; Kaggle test.",
        "1.1.0": "The same records, byte for byte; `label` is a ClassLabel (normal, tumour; -1 on test) and `image` "
        "an Image stored as raw bytes, so tfds.show_examples and tfds.as_dataframe draw the patches.",
        "2.0.0": "Pixel hashes are XXH3-128 (manifest version 2 in validate/; 1.x had BLAKE2b-128), about 50x "
        "faster to compute. They decide the duplicate groups kept on one side of the split; membership depends "
        "on which patches share a hash, not on its value, so the records and splits are those of 1.1.0 unless "
        "either hash had a collision in the data. A build reusing a validation (PCAM_VALIDATION_DIR) refuses a "
        "version-1 manifest.",
    }
    BUILDER_CONFIGS = [
        PcamConfig(name="full", description="All valid patches; validation is 20% of each label."),
        PcamConfig(
            name="sample25",
            sample_fraction=0.25,
            description="A stratified 25% sample of the labelled patches (55,006 of 220,025), split 80/20; full test.",
        ),
    ]
    DEFAULT_CONFIG_NAME = "full"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the competition files from
    https://www.kaggle.com/competitions/histopathologic-cancer-detection/data
    (`kaggle competitions download -c histopathologic-cancer-detection`), unzip,
    and pass the folder holding train/, test/ and train_labels.csv as --manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=builder_base.patch_features(
                label_doc="tumour: tumour tissue in the centre 32x32; -1 on test (no label)",
                id_doc="the Kaggle id (file name without .tif)",
            ),
            supervised_keys=("image", "label"),
            homepage="https://www.kaggle.com/competitions/histopathologic-cancer-detection",
            license=LICENSE,
        )

    def download_and_prepare(self, *, download_config=None, **kwargs):
        # TFDS reuses a built dataset without looking at its inputs; a dataset built from a folder that has
        # changed since (files added, gone or rewritten, labels edited) is refused instead of reused.
        config = download_config or tfds.download.DownloadConfig()
        if (
            self.is_prepared()
            and config.manual_dir
            and config.download_mode == tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        ):
            manual_dir = str(config.manual_dir)
            try:
                _, problems = validated.compare(str(self.checks_dir()), manual_dir)
            except FileNotFoundError as e:
                problems = [f"its record of the inputs is incomplete ({e})"]
            if problems:
                raise InputsChangedError(
                    f"{self.data_path} was built from {manual_dir} as it was then, and the folder has changed since: "
                    f"{'; '.join(problems)}. Rebuild it: the same tfds build command with --overwrite"
                )
        return super().download_and_prepare(download_config=download_config, **kwargs)

    def _split_generators(self, dl_manager):
        # One validation pass feeds all three splits. Locally it runs here, in worker processes; on Beam it is
        # part of the pipeline, added when TFDS applies the first split's PTransform (BeamSplits).
        cfg = self.builder_config
        kwargs = dict(
            manual_dir=str(dl_manager.manual_dir),
            checks_dir=str(self.checks_dir()),
            validation_fraction=cfg.validation_fraction,
            sample_fraction=cfg.sample_fraction,
            seed=cfg.seed,
            slides=read_slide_csv(cfg.slide_csv) if cfg.slide_csv else None,
            validation_dir=validated.from_env(),
        )
        if self._on_beam:
            validation = BeamSplits(kwargs)
        else:
            from pcam_tfds import local_steps

            validation = local_steps.split_generators(counts=self._emitted, spill_dir=self._spill_dir, **kwargs)
        return {name: self._generate_examples(validation, name) for name in _SPLITS}

    def _generate_splits(self, dl_manager, download_config):
        # Locally the examples arrive serialized (pcam_tfds.local_steps), and TFDS' Writer writes them as they
        # are (builder_base.write_serialized_splits); on Beam, TFDS' own path.
        if self._on_beam:
            return super()._generate_splits(dl_manager, download_config)
        from pcam_tfds.core import local_validation

        # Writing reads each file again (from the page cache) unless PCAM_READ_ONCE=1 asks for its pixels to be
        # kept in a spill folder between validation and writing (local_validation.read_once says when each wins).
        self._spill_dir = local_validation.spill_folder(str(self.data_path)) if local_validation.read_once() else None
        generators = {}
        try:
            generators = self._split_generators(dl_manager)
            return builder_base.write_serialized_splits(self, generators, download_config)
        finally:
            from pcam_tfds import local_steps

            local_steps.settle(generators)  # nothing started beside the writing goes on once it has ended
            if self._spill_dir:
                local_validation.remove_spill_folder(self._spill_dir)

    def _generate_examples(self, validation, split: str):
        """One split's (id, example) pairs: a generator here, or on Beam a PTransform TFDS applies.

        `validation` is what _split_generators made: {split: generator} locally, or BeamSplits.
        """
        if isinstance(validation, BeamSplits):
            return validation.split(split)
        return validation[split]

    def _check_counts(self, split_infos, emitted) -> None:
        summary = json.loads((self.checks_dir() / "summary.json").read_text())
        check_split_counts(split_infos, emitted, summary)


class BeamSplits:
    """The three splits of one Beam validation pass, as one PTransform per split for TFDS to apply.

    TFDS creates its pipeline when it meets the first PTransform and applies each split's transform
    to it. The first one applied adds the shared part (validation, its outputs, the split assignment:
    `beam_jobs.build_steps.split_pcollections`); the others return their split of it. So in the pipeline graph
    the whole validation appears under the first split's name.
    """

    def __init__(self, kwargs: dict):
        self._kwargs = kwargs
        self._pipeline = None
        self._splits: dict | None = None

    def split(self, name: str):
        """The PTransform (PBegin -> (id, example)) of split NAME."""
        beam = tfds.core.lazy_imports.apache_beam
        return beam.ptransform_fn(_select_split)(self, name)

    def pcollections(self, pipeline) -> dict:
        if self._splits is None:
            from beam_jobs import build_steps  # only a Beam build loads the Beam side

            self._splits = build_steps.split_pcollections(pipeline, **self._kwargs)
            self._pipeline = pipeline
        elif pipeline is not self._pipeline:
            raise RuntimeError("the splits of one BeamSplits were applied to two different Beam pipelines")
        return self._splits


def _select_split(pbegin, splits_: BeamSplits, name: str):
    return splits_.pcollections(pbegin.pipeline)[name]


def check_split_counts(split_infos, emitted: dict, summary: dict) -> None:
    """Fails unless each split holds exactly the examples validation allowed into it.

    The DirectRunner in multi_processing mode can exit 0 having written fewer
    train examples than it was sent; this raises inside
    TFDS' incomplete folder, so a short build is never left behind as finished.
    """
    written = builder_base.written_counts(split_infos, _SPLITS)
    problems = builder_base.emitted_problems(written, emitted)
    valid = {s: v["valid"] for s, v in summary["by_source"].items()}
    labelled = written[splits.TRAIN] + written[splits.VALIDATION] + emitted.get(splits.UNUSED, 0)
    if labelled != valid.get(layout.TRAIN, 0):
        problems.append(
            f"train+validation(+unused) hold {labelled} examples, validation passed {valid.get(layout.TRAIN, 0)}"
        )
    if written[layout.TEST] != valid.get(layout.TEST, 0):
        problems.append(f"test holds {written[layout.TEST]} examples, validation passed {valid.get(layout.TEST, 0)}")
    if problems:
        raise RuntimeError("pcam build lost or duplicated examples: " + "; ".join(problems))


def read_slide_csv(path: str) -> dict[str, str]:
    """{patch id: slide} from a CSV with columns id and wsi (Kaggle's patch_id_wsi) or slide."""
    import csv

    from etils import epath

    with epath.Path(path).open() as f:
        reader = csv.DictReader(f)
        column = next((c for c in ("wsi", "slide") if c in (reader.fieldnames or [])), None)
        if "id" not in (reader.fieldnames or []) or column is None:
            raise ValueError(f"{path}: columns are {reader.fieldnames}, expected 'id' and 'wsi' or 'slide'")
        return {row["id"]: row[column] for row in reader}
