"""Training, evaluation and Kaggle submissions on the `pcam` dataset (see the trainer issue)."""

import sys as _sys

from pcam_tfds import cli as _cli

# Quiet by default: before TensorFlow is first imported, hence the package's __init__ (pcam_tfds.cli).
_cli.quiet_tensorflow_by_default(_sys.argv)
