"""`pcam-build`: builds the `pcam` or `pcam_hdf5` dataset as `tfds build` does, printing progress and result only.

    pcam-build --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR                 # every config: full, sample25
    pcam-build --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR --config=full --overwrite
    pcam-build --dataset=pcam_hdf5 --manual_dir=PCAM_H5_DIR --data_dir=TFDS_DIR
    pcam-build ... --beam_pipeline_options=runner=FlinkRunner,flink_master=HOST:8081,environment_type=LOOPBACK

The same builders, the same dataset and the same flags as `tfds build pcam_tfds/pcam ...`, which also prints
TFDS' log lines, its progress bars and the whole dataset card (about 100 lines a config). Here: one line as
each build starts, the validation's progress every 10 s and its count, and one line per config with its split
sizes; `--verbosity=0` adds TFDS' and TensorFlow's INFO lines. A dataset already built from unchanged inputs
is reused (and said so); changed inputs are refused with what changed, and `--overwrite` rebuilds.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from pcam_tfds import cli

DATASETS = ("pcam", "pcam_hdf5")


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("dataset", "pcam", DATASETS, "The dataset to build.", flag_values=fv)
    flags.DEFINE_string("manual_dir", None, "The input folder (Kaggle layout, or PCam's HDF5 files).", flag_values=fv)
    flags.DEFINE_string("data_dir", None, "The TFDS data folder to build into.", flag_values=fv)
    flags.DEFINE_list("config", None, "Configs to build (default: every config of the dataset).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Rebuild a dataset that is already built.", flag_values=fv)
    flags.DEFINE_string(
        "beam_pipeline_options",
        None,
        "Build on Apache Beam with these comma-separated PipelineOptions (as `tfds build`); without: in this "
        "process, without Beam.",
        flag_values=fv,
    )


def build(dataset: str, manual_dir: str, data_dir: str, configs=None, overwrite=False, beam_pipeline_options=None):
    """Builds each config of `dataset` (all when `configs` is None); returns their DatasetInfos."""
    import tensorflow_datasets as tfds

    from pcam_tfds.pcam import pcam_dataset_builder
    from pcam_tfds.pcam_hdf5 import pcam_hdf5_dataset_builder

    builder_class = {"pcam": pcam_dataset_builder.Builder, "pcam_hdf5": pcam_hdf5_dataset_builder.Builder}[dataset]
    known = [c.name for c in builder_class.BUILDER_CONFIGS]
    unknown = sorted(set(configs or ()) - set(known))
    if unknown:
        raise ValueError(f"--config: {dataset} has no config {', '.join(unknown)}; it has {', '.join(known)}")
    if not os.path.isdir(manual_dir):
        raise ValueError(f"--manual_dir={manual_dir}: no such folder")
    tfds.disable_progress_bar()  # the build prints its own progress lines
    infos = []
    for name in configs or known:
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        if overwrite:  # what `tfds build --overwrite` does
            download_config.download_mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
        if beam_pipeline_options:
            from apache_beam.options.pipeline_options import PipelineOptions

            download_config.beam_options = PipelineOptions(flags=[f"--{o}" for o in beam_pipeline_options.split(",")])
        builder = builder_class(config=name, data_dir=data_dir)
        reused = builder.is_prepared() and not overwrite
        builder.download_and_prepare(download_config=download_config)
        if reused:  # the builder checked its inputs first: they are unchanged
            print(f"{builder.info.full_name} is already built in {builder.data_dir}; --overwrite rebuilds it")
        infos.append(builder.info)
    return infos


def _main(argv: list[str]) -> int:
    f = flags.FLAGS
    if len(argv) > 1:
        cli.fail(ValueError(f"unexpected arguments: {' '.join(argv[1:])}"))
    from pcam_tfds.pcam.pcam_dataset_builder import InputsChangedError

    if f.dataset != "pcam" or f.beam_pipeline_options:
        # TFDS' encoder (pcam_hdf5's dict examples) and its Beam writer use TensorFlow: loaded here, through the
        # filter of its start-up lines. The local pcam build serializes and writes itself and never loads it.
        cli.import_tensorflow()
    try:
        build(f.dataset, f.manual_dir, f.data_dir, f.config, f.overwrite, f.beam_pipeline_options)
    except (ValueError, FileNotFoundError, InputsChangedError) as e:
        cli.fail(e)
    return 0


def main() -> None:
    """The console script `pcam-build` (and `python -m pcam_tfds.build`)."""
    define_flags(flags.FLAGS)
    flags.mark_flags_as_required(["manual_dir", "data_dir"])
    cli.quiet_tensorflow_by_default(sys.argv)
    cli.run(_main)


if __name__ == "__main__":
    main()
