"""The names of the counters the Beam executor reports, in one place for whoever reads them back.

The jobs and the builder's Beam path count in namespace NAMESPACE; the builder reads the
`examples_<split>` counters back to check what TFDS wrote (`check_split_counts`).
"""

from __future__ import annotations

NAMESPACE = "pcam"
FILES_READ = "files_read"
FILES_REJECTED_ON_READ = "files_rejected_on_read"  # a file that does not decode, or cannot be opened
FILES_REJECTED_ON_JOIN = "files_rejected_on_join"  # a decodable file the label join rejects
FILES_REJECTED_BEFORE_READ = "files_rejected_before_read"  # beam_jobs.stats: rejected by the join or the manifest
LABEL_ROWS_REJECTED = "label_rows_rejected"
PATCHES_SUMMARISED = "patches_summarised"
EXAMPLES_PREFIX = "examples_"


def examples(split: str) -> str:
    """The counter of the examples sent to TFDS' writer for SPLIT (and of 'unused', outside a sample)."""
    return EXAMPLES_PREFIX + split
