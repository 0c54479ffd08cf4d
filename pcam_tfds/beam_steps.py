"""The Beam half of the `pcam` builder: validate once, assign splits, read pixels into examples.

One validation pass (`beam_jobs.transforms.ValidateKaggleLayout`) feeds all
three splits; its full outputs (manifest, rejected.csv, summary, report) are
written beside the dataset in `validate/`, so every file kept out of the
dataset is listed with its reason.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_jobs.transforms import NAMESPACE, ValidateKaggleLayout
from beam_jobs.validate import WriteValidationOutputs
from pcam_tfds import validated
from pcam_tfds.core import layout, patches, splits


def _split_of(record: dict, assignment: dict) -> str:
    return layout.TEST if record["source"] == layout.TEST else assignment[record["id"]]


class _ToExample(beam.DoFn):
    """A valid record -> (id, example), counted per split; the pixels are read again here."""

    def __init__(self, split: str):
        self.split = split
        self.count = Metrics.counter(NAMESPACE, f"examples_{split}")

    def process(self, record):
        # The file passed validation moments ago; failing to read it now is an error, not a rejection.
        pixels = patches.read_patch(record["path"])
        self.count.inc()
        yield record["id"], {"image": pixels, "label": record["label"], "id": record["id"]}


class _CountUnused(beam.DoFn):
    def __init__(self):
        self.count = Metrics.counter(NAMESPACE, f"examples_{splits.UNUSED}")

    def process(self, record):
        self.count.inc()
        return ()


def split_pcollections(
    pipeline, data_dir, checks_dir, validation_fraction, sample_fraction, seed, slides=None, validation_dir=None
):
    """Returns {'train', 'validation', 'test'} PCollections of (key, example) for TFDS to write.

    validation_dir: a beam_jobs.validate output to reuse instead of validating; it is checked
    against DATA_DIR here, in the launching process (pcam_tfds.validated).
    """
    if validation_dir:
        validated.check(validation_dir, data_dir)  # fails here, before any worker starts, when stale
        validated.copy_outputs(validation_dir, checks_dir)
        records = (
            pipeline
            | "ReadManifest"
            >> beam.io.ReadFromParquet(layout.join(checks_dir, validated.MANIFEST), columns=validated.COLUMNS)
            | "ToRecord" >> beam.Map(validated.record_from_row, data_dir=data_dir)
        )
    else:
        validate = ValidateKaggleLayout(data_dir)
        outputs = pipeline | "Validate" >> validate
        _ = outputs | "WriteValidation" >> WriteValidationOutputs(checks_dir, validate.num_files, data_dir)
        records = outputs["files"]
    valid = records | "Valid" >> beam.Filter(lambda f: f["valid"])
    assignment = (
        valid
        | "Labelled" >> beam.Filter(lambda f: f["source"] == layout.TRAIN)
        | "SplitKey" >> beam.Map(lambda f: (f["id"], f["label"], f["pixel_hash"]))
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
        lambda f, n, assignment: names.index(_split_of(f, assignment)),
        len(names),
        assignment=beam.pvalue.AsSingleton(assignment),
    )
    # Patches outside a sampled config's sample are only counted, for the accounting check.
    _ = parts[names.index(splits.UNUSED)] | "CountUnused" >> beam.ParDo(_CountUnused())
    return {name: parts[i] | f"ToExample_{name}" >> beam.ParDo(_ToExample(name)) for i, name in enumerate(names[:3])}
