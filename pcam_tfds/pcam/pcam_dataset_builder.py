"""The `pcam` dataset: the Kaggle PCam patches as TFDS, built with Apache Beam or in one process.

On one machine (a thread pool reads the files; TFDS' own writer writes):

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full

With Apache Beam, on any runner (here the DirectRunner; Dataflow, Flink, Spark in BUILD.md):

    tfds build pcam_tfds/pcam --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full \\
        --beam_pipeline_options=direct_running_mode=multi_processing,direct_num_workers=0

Either way the build validates the files itself (the results go to `validate/` beside the shards),
unless PCAM_VALIDATION_DIR names the output folder of a `python -m beam_jobs.validate` run over the
same folder: then it checks that the folder has not changed since and reuses that validation
(pcam_tfds/validated.py), reading every file once instead of twice.

Reading the result needs neither Beam nor this module:
`tfds.builder_from_directory(TFDS_DIR/pcam/full/1.0.0)`.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from pcam_tfds import folder_lock, validated
from pcam_tfds.core import layout, splits

_SPLITS = (splits.TRAIN, splits.VALIDATION, layout.TEST)
_COUNTER_PREFIX = "examples_"
DEFAULT_MAX_SHARD_BYTES = 64 << 20


@dataclasses.dataclass
class PcamConfig(tfds.core.BuilderConfig):
    """How the labelled patches are split.

    validation_fraction: share of each label held out for validation.
    sample_fraction: share of the labelled patches kept at all (test is always whole).
    seed: the split's seed; the same seed gives the same membership.
    slide_csv: optional CSV mapping patch ids to slides (columns `id` and `wsi` or `slide`);
      patches of one slide then stay on one side.
    source: `kaggle` (the Kaggle folder) or `hdf5` (the official PCam HDF5 files, whose own
      train/valid/test splits are kept; the split fields above do not apply).
    """

    validation_fraction: float = 0.2
    sample_fraction: float = 1.0
    seed: int = 42
    slide_csv: str | None = None
    source: str = "kaggle"


class InputsChangedError(RuntimeError):
    """A built dataset's inputs changed since it was built; TFDS would silently reuse it."""


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for the Kaggle Histopathologic Cancer Detection patches."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Kaggle train split 80/20 by label, duplicates and slides kept together; Kaggle test."}
    BUILDER_CONFIGS = [
        PcamConfig(name="full", description="All valid patches; validation is 20% of each label."),
        PcamConfig(
            name="sample25",
            sample_fraction=0.25,
            description="A stratified 25% sample of the labelled patches (55,006 of 220,025), split 80/20; full test.",
        ),
        PcamConfig(
            name="hdf5",
            source="hdf5",
            description="The official PCam HDF5 files and their splits (262,144 / 32,768 / 32,768, test labelled).",
        ),
    ]
    DEFAULT_CONFIG_NAME = "full"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download the competition files from
    https://www.kaggle.com/competitions/histopathologic-cancer-detection/data
    (`kaggle competitions download -c histopathologic-cancer-detection`), unzip,
    and pass the folder holding train/, test/ and train_labels.csv as --manual_dir.
    For --config=hdf5: the six camelyonpatch_level_2_split_*.h5 files of
    https://github.com/basveeling/pcam, gunzipped, in the folder given as --manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    # Raw bytes: the default Tensor(uint8) encoding stores int64 lists (bench/RESULTS.md).
                    "image": tfds.features.Tensor(shape=(96, 96, 3), dtype=np.uint8, encoding="bytes"),
                    "label": tfds.features.Scalar(dtype=np.int64, doc="1 = tumour in the centre 32x32; -1 on test"),
                    "id": tfds.features.Text(doc="the Kaggle id (file name without .tif)"),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://www.kaggle.com/competitions/histopathologic-cancer-detection",
        )

    def _split_kwargs(self, dl_manager) -> dict:
        cfg = self.builder_config
        return dict(
            data_dir=str(dl_manager.manual_dir),
            checks_dir=self._checks_dir(),
            validation_fraction=cfg.validation_fraction,
            sample_fraction=cfg.sample_fraction,
            seed=cfg.seed,
            slides=read_slide_csv(cfg.slide_csv) if cfg.slide_csv else None,
            validation_dir=validated.from_env(),
        )

    def _checks_dir(self) -> str:
        return str(self.data_path / "validate")

    def download_and_prepare(self, *, download_config=None, **kwargs):
        # TFDS reuses a built dataset without looking at its inputs; a dataset built from a folder that has
        # changed since (files added, gone or rewritten, labels edited) is refused instead of reused.
        config = download_config or tfds.download.DownloadConfig()
        if (
            self.is_prepared()
            and config.manual_dir
            and self.builder_config.source != "hdf5"
            and config.download_mode == tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
        ):
            manual_dir = str(config.manual_dir)
            try:
                _, problems = validated.compare(self._checks_dir(), manual_dir)
            except FileNotFoundError as e:
                problems = [f"its record of the inputs is incomplete ({e})"]
            if problems:
                raise InputsChangedError(
                    f"{self.data_path} was built from {manual_dir} as it was then, and the folder has changed since: "
                    f"{'; '.join(problems)}. Rebuild it: the same tfds build command with --overwrite"
                )
        # One build of this config at a time; holding the lock, any incomplete.* folder beside the dataset
        # was left by a build that was killed (TFDS writes there, then renames), so it can go.
        parent = epath.Path(self.data_path).parent
        parent.mkdir(parents=True, exist_ok=True)
        with folder_lock.FolderLock(parent, "tfds build " + self.builder_config.name):
            for stale in parent.glob("incomplete.*"):
                logging.warning("removing %s, left by a build that did not finish", stale)
                stale.rmtree(missing_ok=True)
            return super().download_and_prepare(download_config=download_config, **kwargs)

    def _split_generators(self, dl_manager, pipeline):
        # TFDS passes `pipeline` because this signature names it; one validation pass then feeds all splits.
        if self.builder_config.source == "hdf5":
            from pcam_tfds import hdf5_source

            return hdf5_source.beam_split_pcollections(pipeline, str(dl_manager.manual_dir), self._checks_dir())
        from pcam_tfds import beam_steps  # Beam is needed to build, not to read

        return beam_steps.split_pcollections(pipeline, **self._split_kwargs(dl_manager))

    def _local_split_generators(self, dl_manager):
        # Without a `pipeline` parameter TFDS creates no Beam pipeline at all.
        self._emitted = {}
        if self.builder_config.source == "hdf5":
            from pcam_tfds import hdf5_source

            return hdf5_source.local_split_generators(str(dl_manager.manual_dir), self._checks_dir(), self._emitted)
        from pcam_tfds import local_steps

        return local_steps.split_generators(counts=self._emitted, **self._split_kwargs(dl_manager))

    @staticmethod
    def use_beam(download_config) -> bool:
        """Beam when Beam options or a runner are given; otherwise one process with a reader pool.

        On one machine the DirectRunner holds TFDS' shuffle of every serialized
        example in memory: at 25k files 1.8x the time and 2.9x the memory of the
        local path in_memory (5x and 5.6x in multi_processing mode), more memory
        than a laptop has at Kaggle scale; and its multi_processing mode dropped
        examples in three of four builds (caught by check_split_counts;
        bench/RESULTS.md).
        Both paths run the same validation, join and split code and give the same dataset.
        """
        return download_config.beam_options is not None or download_config.beam_runner is not None

    def _generate_examples(self, pcollection):
        return pcollection  # the examples are made in _split_generators, from one shared validation

    def _process_pipeline_result(self, pipeline_result) -> None:
        # The counts each split was given, to check against what the writer wrote.
        from apache_beam.metrics.metric import MetricsFilter

        query = pipeline_result.metrics().query(MetricsFilter().with_namespace("pcam"))
        self._emitted = {}
        for c in query["counters"]:
            name = c.key.metric.name
            if name.startswith(_COUNTER_PREFIX):
                split = name[len(_COUNTER_PREFIX) :]
                self._emitted[split] = self._emitted.get(split, 0) + c.committed

    def _download_and_prepare(self, dl_manager, download_config) -> None:
        if not self.use_beam(download_config):
            # TFDS looks at the signature of _split_generators to decide whether to create a pipeline.
            self._split_generators = self._local_split_generators
        default = tfds.core.utils.shard_utils.DEFAULT_MAX_SHARD_SIZE  # what `tfds build` passes when not told
        if download_config.num_shards is None and download_config.max_shard_size == default:
            # 64 MiB shards instead of TFDS' 1 GiB: about 115 shards at Kaggle size, so readers can
            # interleave many files, and no 1 GiB group has to pass through a Beam worker at once.
            download_config = dataclasses.replace(download_config, max_shard_size=DEFAULT_MAX_SHARD_BYTES)
        super()._download_and_prepare(dl_manager, download_config)
        if download_config.max_examples_per_split is not None:
            return  # a deliberately truncated build
        summary = json.loads((self.data_path / "validate" / "summary.json").read_text())
        check_split_counts(self.info.splits, getattr(self, "_emitted", {}), summary)


def check_split_counts(split_infos, emitted: dict, summary: dict) -> None:
    """Fails unless each split holds exactly the examples validation allowed into it.

    The DirectRunner in multi_processing mode exits 0 having written up to 8%
    fewer train examples than it was sent (bench/RESULTS.md); this raises inside
    TFDS' incomplete folder, so a short build is never left behind as finished.
    """
    written = {name: split_infos[name].num_examples if name in split_infos else 0 for name in _SPLITS}
    problems = []
    for name in _SPLITS:
        if emitted and emitted.get(name, 0) != written[name]:
            problems.append(f"{name}: {emitted.get(name, 0)} examples sent to the writer, {written[name]} written")
    if summary.get("source") == "hdf5":  # the files' own splits
        for name in _SPLITS:
            if written[name] != summary["by_split"][name]["valid"]:
                problems.append(
                    f"{name} holds {written[name]} examples, validation passed {summary['by_split'][name]['valid']}"
                )
    else:
        valid = {s: v["valid"] for s, v in summary["by_source"].items()}
        labelled = written[splits.TRAIN] + written[splits.VALIDATION] + emitted.get(splits.UNUSED, 0)
        if labelled != valid.get(layout.TRAIN, 0):
            problems.append(
                f"train+validation(+unused) hold {labelled} examples, validation passed {valid.get(layout.TRAIN, 0)}"
            )
        if written[layout.TEST] != valid.get(layout.TEST, 0):
            problems.append(
                f"test holds {written[layout.TEST]} examples, validation passed {valid.get(layout.TEST, 0)}"
            )
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
