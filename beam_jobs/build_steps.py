"""The Beam side of the `pcam` build: validate once, assign splits, read pixels into examples.

The TFDS builder (`pcam_tfds/pcam`) imports this module only when it builds on Beam (`tfds build` with Beam
options or a runner); the local build never loads it. So the import graph has no cycle: `pcam_tfds`' builders
may use `beam_jobs`, and `beam_jobs` uses only the Beam-free rules in `pcam_tfds.core` (tests/test_layers.py).

One validation pass (`beam_jobs.transforms.ValidateKaggleLayout`) feeds all
three splits; its full outputs (manifest, rejected.csv, summary, report) are
written beside the dataset in `validate/`, so every file kept out of the
dataset is listed with its reason. Routing and the example dict are those of
the local build (`pcam_tfds.core.examples`); Beam only distributes them.
"""

from __future__ import annotations

import dataclasses
import logging

from beam_jobs import quiet_beam  # noqa: F401 - Beam, loaded quietly, before the imports below

# isort: split
import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import StandardOptions

from beam_jobs.local_runner import LocalRunner
from beam_jobs.transforms import ReadManifestRows, ValidateKaggleLayout, WriteValidationOutputs
from pcam_tfds.core import counters, examples, layout, outputs, splits, validated


class _ToExample(beam.DoFn):
    """A valid record -> (id, example), counted per split; the pixels are read again here."""

    def __init__(self, split: str):
        self.split = split
        self.count = Metrics.counter(counters.NAMESPACE, counters.examples(split))

    def process(self, record):
        key_example = examples.read_example(record)
        self.count.inc()
        yield key_example


class _CountUnused(beam.DoFn):
    def __init__(self):
        self.count = Metrics.counter(counters.NAMESPACE, counters.examples(splits.UNUSED))

    def process(self, record):
        self.count.inc()
        return ()


def split_pcollections(
    pipeline, manual_dir, checks_dir, validation_fraction, sample_fraction, seed, slides=None, validation_dir=None
):
    """Returns {'train', 'validation', 'test'} PCollections of (key, example) for TFDS to write.

    validation_dir: a beam_jobs.validate output to reuse instead of validating; it is checked
    against MANUAL_DIR here, in the launching process (pcam_tfds.core.validated).
    """
    if validation_dir:
        validated.check(validation_dir, manual_dir)  # fails here, before any worker starts, when stale
        validated.copy_outputs(validation_dir, checks_dir)
        records = (
            pipeline
            | "ReadManifest" >> ReadManifestRows(layout.join(checks_dir, outputs.MANIFEST), validated.COLUMNS)
            | "ToRecord" >> beam.Map(validated.record_from_row, manual_dir=manual_dir)
        )
    else:
        validate = ValidateKaggleLayout(manual_dir)
        results = pipeline | "Validate" >> validate
        _ = results | "WriteValidation" >> WriteValidationOutputs(checks_dir, validate.num_files, manual_dir)
        records = results["files"]
    valid = records | "Valid" >> beam.Filter(examples.is_valid)
    assignment = (
        valid
        | "Labelled" >> beam.Filter(examples.is_labelled)
        | "SplitKey" >> beam.Map(examples.split_key)
        | "Gather" >> beam.combiners.ToList()
        | "AssignSplits"
        >> beam.Map(
            splits.assign_splits,
            validation_fraction=validation_fraction,
            seed=seed,
            sample_fraction=sample_fraction,
            slides=slides,
        )
    )
    names = [splits.TRAIN, splits.VALIDATION, layout.TEST, splits.UNUSED]
    parts = valid | "BySplit" >> beam.Partition(
        lambda f, n, assignment: names.index(examples.split_of(f, assignment)),
        len(names),
        assignment=beam.pvalue.AsSingleton(assignment),
    )
    # Patches outside a sampled config's sample are only counted, for the accounting check.
    _ = parts[names.index(splits.UNUSED)] | "CountUnused" >> beam.ParDo(_CountUnused())
    return {name: parts[i] | f"ToExample_{name}" >> beam.ParDo(_ToExample(name)) for i, name in enumerate(names[:3])}


def local_beam_defaults(download_config):  # a tfds.download.DownloadConfig, returned with a runner set
    """A Beam build given options but no runner runs on this machine: on Beam's FnApiRunner, as the DirectRunner
    would run it, but without the DirectRunner's first try of the Prism runner, which it downloads from GitHub
    (`beam_jobs.local_runner`). Beam's INFO lines (one per string type hint it cannot resolve, dozens per build)
    are left out unless the root logger is at DEBUG or Beam's logger has a level of its own already."""
    options = download_config.beam_options
    if download_config.beam_runner is None and (options is None or options.view_as(StandardOptions).runner is None):
        download_config = dataclasses.replace(download_config, beam_runner=LocalRunner())
    beam_logger = logging.getLogger("apache_beam")
    if beam_logger.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.DEBUG):
        beam_logger.setLevel(logging.WARNING)
    return download_config
