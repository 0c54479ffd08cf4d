"""What a tuning trial leaves in memory: the process RSS, and a workaround for TensorFlow's gradient registry.

    keep = custom_gradient_names()            # before a trial
    ...                                       # the trial builds, traces and trains its model
    keras.backend.clear_session(); forget_custom_gradients(keep); gc.collect()
    rss, peak = rss_mib()                     # recorded in the trial's run_info.json

Without `forget_custom_gradients` a search grows by the graph of every trial it has run
(bench/bench_tune_memory.py measures it: bench/RESULTS.md, "Memory over a hyperparameter search").
"""

from __future__ import annotations

import os
import resource
import sys


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB; current falls back to peak off Linux."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak_kib / 2**20 if sys.platform == "darwin" else peak_kib / 2**10  # macOS reports bytes
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        current = peak
    # The kernel updates ru_maxrss lazily (at page-fault accounting), so it can trail statm by a few pages.
    return round(current, 1), round(max(peak, current), 1)


def custom_gradient_names() -> set[str]:
    """Names in TensorFlow's gradient registry that tf.custom_gradient registered (empty if the registry moved)."""
    from tensorflow.python.framework import ops  # private: there is no public way to unregister

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return {k for k in registry if k.startswith("CustomGradient-")} if isinstance(registry, dict) else set()


def forget_custom_gradients(keep: set[str]) -> int:
    """Drops the tf.custom_gradient registrations made since `keep` was taken; returns how many.

    Every trace of a Keras train step registers one (the optimizer's all-reduce of the gradients goes
    through tf.custom_gradient), and TensorFlow's global gradient registry keeps it, and through its
    closure the whole traced graph, forever (how much a trial: bench/RESULTS.md, "Memory over a
    hyperparameter search"). Once a trial's model is released nothing can ask for those gradients again.
    """
    from tensorflow.python.framework import ops

    stale = custom_gradient_names() - keep
    for name in stale:
        ops._gradient_registry._registry.pop(name, None)
    return len(stale)
