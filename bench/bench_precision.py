"""Training throughput of each model under float32 and mixed precision on this machine's CPU (or GPU).

    python bench/bench_precision.py [--models=baseline,tuned,p4m+bn] [--steps=40] [--batch_size=64] [--core=N]
    python bench/bench_precision.py --models=p4m+bn --repo=/tmp/old_checkout   # another checkout's models

A name ending in +bn builds that model with batch_norm=True. --repo imports the models from another checkout
(a `git worktree` of an older commit), so old and new code can be timed back to back in one harness.

Each (model, policy) trains in a fresh process on the same random batches, cached in memory so only
the training step is timed: 10 warm-up steps, then --steps timed ones. Prints images/s (wall) and images
per CPU-second (all threads of the process), the measure --max_cpu_minutes budgets in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def child(model_name: str, policy: str, steps: int, batch_size: int, repo: str = REPO) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, repo)
    from trainer import models

    keras.mixed_precision.set_global_policy(policy)
    kwargs = {"weights": None} if model_name in models.TRANSFER else {}
    if model_name.endswith("+bn"):
        model_name, kwargs["batch_norm"] = model_name[: -len("+bn")], True
    model = models.build(model_name, input_shape=(96, 96, 3), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch_size * 10, 96, 96, 3)).astype("float32")
    y = rng.integers(0, 2, (batch_size * 10, 1)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache().repeat()
    model.fit(ds, steps_per_epoch=10, epochs=1, verbose=0)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    n = steps * batch_size
    return {
        "model": model_name,
        "policy": policy,
        "images_per_s": n / (time.perf_counter() - wall),
        "images_per_cpu_s": n / (time.process_time() - cpu),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="baseline,tuned")
    p.add_argument("--policies", default="float32,mixed_bfloat16")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--core", type=int)
    p.add_argument("--repo", default=REPO, help="the checkout whose trainer.models to time (default: this one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        model_name, policy = a.child.split(":")
        print(json.dumps(child(model_name, policy, a.steps, a.batch_size, a.repo)))
        return
    pin = ["taskset", "-c", str(a.core)] if a.core is not None else []
    print("| model | policy | images/s | images per CPU-second |")
    print("| --- | --- | ---: | ---: |")
    for model_name in a.models.split(","):
        for policy in a.policies.split(","):
            out = subprocess.run(
                [
                    *pin,
                    sys.executable,
                    __file__,
                    f"--child={model_name}:{policy}",
                    f"--steps={a.steps}",
                    f"--batch_size={a.batch_size}",
                    f"--repo={a.repo}",
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {model_name} | {policy} | {r['images_per_s']:,.0f} | {r['images_per_cpu_s']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
