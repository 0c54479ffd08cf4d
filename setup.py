"""Metadata, dependencies and tool settings are in setup.cfg; this file only adds the optional native kernel.

pcam_tfds/core/_kernel.c (the validation's file reads, pixel hashes and exact channel sums, with the vendored
xxHash of third_party/xxhash: pcam_tfds.core.batch_read,
pcam_tfds.core.moments) is built on POSIX systems where a C compiler is found. `optional=True`: where none
is, or the build fails, the install goes on without it, and the same work is done in Python and numpy, with
the same results; validation is then about 1.8x slower at Kaggle scale (bench/RESULTS.md).
"""

import os

from setuptools import Extension, setup

kernel = Extension(
    "pcam_tfds.core._kernel",
    ["pcam_tfds/core/_kernel.c"],
    include_dirs=["third_party/xxhash"],
    depends=["third_party/xxhash/xxhash.h"],
    extra_compile_args=["-O3"],
    optional=True,
)
setup(ext_modules=[kernel] if os.name == "posix" else [])
