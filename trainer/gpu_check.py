"""Short training of every registered model on generated in-memory data: is the accelerator used well?

    python -m trainer.gpu_check                                   # make gpu-check: 4 models, 96x96, batch 64
    python -m trainer.gpu_check --models=baseline --steps=3 --batch_size=8   # CPU smoke test

For each model prints images/s (after a warm-up epoch that includes tracing and XLA compilation), the
compute dtype (float16 under mixed precision, which is on by default only when a GPU is present) and
whether the train step was XLA-compiled. Random data on purpose: it measures the model and device,
not the input pipeline (bench/bench_trainer_input.py does that).
"""

from __future__ import annotations

import argparse
import sys
import time

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import models


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m trainer.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(models.NAMES), help="comma-separated registered model names")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="timed steps per model (after one warm-up epoch)")
    p.add_argument("--image_size", type=int, default=PATCH_SHAPE[0])
    p.add_argument("--mixed_precision", choices=("auto", "on", "off"), default="auto", help="auto = on with a GPU")
    p.add_argument("--jit_compile", choices=("on", "off"), default="on", help="XLA-compile the train step")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in models.NAMES]
    if unknown:
        p.error(f"--models: unknown {unknown}; choose from {', '.join(models.NAMES)}")
    if min(args.batch_size, args.steps, args.image_size) <= 0:
        p.error("--batch_size, --steps and --image_size must be > 0")
    return args


def check_model(name: str, batch_size: int, steps: int, image_size: int, jit_compile: bool, seed: int) -> dict:
    """Builds `name` (random weights), trains one warm-up epoch and one timed epoch of `steps` steps."""
    import keras
    import tensorflow as tf

    from trainer import train
    from trainer.models import transfer

    keras.utils.set_random_seed(seed)
    shape = (image_size, image_size, PATCH_SHAPE[2])
    kwargs = {"weights": None} if name in models.TRANSFER else {}
    model = models.build(name, input_shape=shape, **kwargs)
    if name in models.TRANSFER:
        transfer.unfreeze_base(model, None)  # time the heaviest phase: full fine-tuning
    xla = jit_compile
    rng = tf.random.Generator.from_seed(seed)
    images = rng.uniform([batch_size, *shape], 0, 255)
    labels = tf.cast(rng.uniform([batch_size, 1]) < 0.4, tf.float32)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    try:
        train.compile_model(model, keras.optimizers.Adam(1e-4), jit_compile=xla)
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    except tf.errors.OpError as e:  # XLA may not support an op on this device; report it, measure without
        print(f"{name}: XLA compilation failed ({type(e).__name__}: {str(e)[:200]}); retrying without XLA")
        xla = False
        train.compile_model(model, keras.optimizers.Adam(1e-4), jit_compile=False)
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    compute = next(layer for layer in model.layers if layer.weights).compute_dtype
    return {
        "model": name,
        "params": model.count_params(),
        "images_per_s": steps * batch_size / seconds,
        "compute_dtype": compute,
        "output_dtype": model.get_layer("probability").compute_dtype,
        "xla": bool(xla and model.jit_compile),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    mixed = bool(gpus) if args.mixed_precision == "auto" else args.mixed_precision == "on"
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    print(
        f"devices: {len(gpus)} GPU(s) {[g.name for g in gpus]}; mixed precision {'on' if mixed else 'off'}; "
        f"XLA requested {args.jit_compile}; batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"{args.steps} timed steps"
    )
    print(f"{'model':<12} {'params':>11} {'images/s':>10}  compute  output   XLA")
    for name in args.models:
        r = check_model(name, args.batch_size, args.steps, args.image_size, args.jit_compile == "on", args.seed)
        print(
            f"{r['model']:<12} {r['params']:>11,} {r['images_per_s']:>10.1f}  {r['compute_dtype']:<8} "
            f"{r['output_dtype']:<8} {'compiled' if r['xla'] else 'off'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
