"""Training, evaluation and Kaggle submissions on the `pcam` dataset (see the trainer issue)."""

import os as _os
import sys as _sys

# Quiet by default: TensorFlow's C++ start-up log lines (on a CPU machine an "E0000 ... failed call to
# cuInit" that reads as a failure) unless a command asks for more with absl's --verbosity/-v >= 1, or the
# user set TF_CPP_MIN_LOG_LEVEL. This must run before TensorFlow is first imported, hence the package's
# __init__. Errors still arrive as Python exceptions.
if not any(a.startswith(("--verbosity=", "-v=")) and a.split("=", 1)[1] not in ("0", "-1") for a in _sys.argv):
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
