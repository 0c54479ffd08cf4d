"""The same `pcam` build from a plain single-process generator, to measure what Beam costs or saves.

    python bench/single_process_build.py --manual_dir=KAGGLE_DIR --data_dir=TFDS_DIR

Same features, same reading and validation functions, same join rules and
split assignment as the Beam build; only the execution differs: one Python
process lists, reads and checks every file, then TFDS' ordinary writer writes
the shards. The result is a dataset named `pcam_single_process`.
"""

from __future__ import annotations

import argparse
import collections

import tensorflow_datasets as tfds

from beam_jobs import layout, patches
from beam_jobs.transforms import read_record
from pcam_tfds import splits
from pcam_tfds.pcam.pcam_dataset_builder import Builder


def validated_records(data_dir: str) -> list[dict]:
    """Every file's record after decoding and the join with the labels, in one process."""
    files = collections.defaultdict(list)
    for source in layout.SOURCES:
        for path in layout.list_files(data_dir, source):
            rec, _ = read_record(path, source)
            files[rec["id"]].append(rec)
    csv_path = layout.join(data_dir, layout.LABELS_CSV)
    layout.check_labels_header(csv_path)
    rows = collections.defaultdict(list)
    with open(csv_path) as f:
        next(f)
        for line in f:
            row = layout.parse_label_line(line.rstrip("\n"))
            rows[row["id"]].append(row)
    out = []
    for id_ in files.keys() | rows.keys():
        resolved, _ = layout.resolve_id(id_, files.get(id_, []), rows.get(id_, []))
        out.extend(resolved)
    return out


class SingleProcessBuilder(Builder):
    name = "pcam_single_process"

    @classmethod
    def _get_pkg_dir_path(cls):
        return Builder._get_pkg_dir_path()  # the description and citations of the real builder

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        valid = [r for r in validated_records(str(dl_manager.manual_dir)) if r["valid"]]
        assignment = splits.assign_splits(
            [(r["id"], r["label"], r["pixel_hash"]) for r in valid if r["source"] == layout.TRAIN],
            cfg.validation_fraction,
            cfg.seed,
            cfg.sample_fraction,
        )
        by_split = collections.defaultdict(list)
        for r in valid:
            by_split[layout.TEST if r["source"] == layout.TEST else assignment[r["id"]]].append(r)
        return {name: self._generate_examples(by_split[name]) for name in (splits.TRAIN, splits.VALIDATION, layout.TEST)}

    def _generate_examples(self, records):
        for r in records:
            yield r["id"], {"image": patches.read_patch(r["path"]), "label": r["label"], "id": r["id"]}

    def _download_and_prepare(self, dl_manager, download_config):
        # Skip the Beam build's count check, which reads the Beam-written validation summary.
        tfds.core.GeneratorBasedBuilder._download_and_prepare(self, dl_manager, download_config)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manual_dir", required=True)
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--config", default="full")
    a = ap.parse_args(argv)
    builder = SingleProcessBuilder(data_dir=a.data_dir, config=a.config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=a.manual_dir))
    print({k: v.num_examples for k, v in builder.info.splits.items()})


if __name__ == "__main__":
    main()
