"""Which side bounds training on this machine: the input pipeline or the model's train step?

    pcam-gpu-check                                     # make gpu-check: synthetic records, every registered model, batch 64
    pcam-gpu-check --data_dir=TFDS_DIR --dataset=pcam/full --augment=hed     # the built dataset's records
    pcam-gpu-check --models=baseline --steps=3 --batch_size=8 --input_batches=5   # CPU smoke test
    python -m trainer.training.gpu_check ...                    # the same command

Measures both sides, each alone:
1. input: images/s of the trainer's own tf.data pipeline (`trainer.data.train_dataset`: read, shuffle, parse,
   augment with --augment) over the train split of a built dataset (--data_dir, --dataset) or, without
   --data_dir, over synthetic uint8 records written to a temporary folder in the dataset's format, so it runs
   anywhere. With --augment_on=device the host only parses; the augmentation is timed inside the step.
2. step: each model's train-step images/s on one random batch already in memory (after a warm-up that
   includes tracing and XLA compilation), with its compute dtype (float16 or bfloat16 under mixed precision,
   chosen for the machine by the trainer's own resolution, trainer.config.defaults.resolve_recipe) and whether the step was XLA-compiled.
3. verdict per model: input-bound when the pipeline delivers fewer images/s than the step consumes, else
   step-bound, with the ratio input/step.
On a CPU-only host both sides share the same cores while training, so there both rates are upper bounds.
--output_json writes the numbers too. A user's mistake is one line and exit status 2 (trainer.errors).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time

from absl import flags

from pcam_tfds.core.patches import PATCH_SHAPE
from trainer import errors, models
from trainer.config import cli, options
from trainer.config.defaults import resolve_recipe
from trainer.config.options import option

FLAGS = flags.FLAGS
WARMUP_BATCHES = 3  # input batches read before timing: tracing, the shuffle buffer's first fill


@dataclasses.dataclass(frozen=True)
class GpuCheckConfig:
    """What pcam-gpu-check times; each field is also its flag. The data, pipeline and device options are
    pcam-train's (without --data_dir: synthetic records); precision, XLA and steps per execution hold the flag's
    value ("auto"...), resolved for this machine when the check starts, as the trainer resolves them."""

    data_dir: str | None = options.data_dir()
    dataset: str = options.dataset()
    batch_size: int = options.batch_size()
    seed: int = options.seed()
    augment: str = options.augment()
    augment_on: str = options.augment_on()
    shuffle_buffer: int = options.shuffle_buffer()
    mixed_precision: str = options.mixed_precision()
    jit_compile: bool | str = options.jit_compile()
    steps_per_execution: int | str = options.steps_per_execution()
    models: tuple[str, ...] = option(models.NAMES, "Registered model names to time.", flag_type="list")
    steps: int = option(20, "Timed train steps per model (after the warm-up).", lower_bound=1)
    input_batches: int = option(50, "Timed input-pipeline batches (after the warm-up).", lower_bound=1)
    image_size: int = option(PATCH_SHAPE[0], "Square image side (synthetic data only).", lower_bound=1)
    synthetic_records: int = option(1024, "Records written without --data_dir.", lower_bound=1)
    output_json: str | None = option(None, "Also write the results to this JSON file.")


def define_flags(flag_values: flags.FlagValues) -> None:
    cli.define(flag_values, GpuCheckConfig)


def check(config: GpuCheckConfig) -> list[str]:
    """The model names; raises UsageError naming the flag of a bad value."""
    names = [m.strip() for m in config.models if m.strip()]
    unknown = [m for m in names if m not in models.NAMES]
    if not names or unknown:
        raise errors.UsageError(f"--models: unknown {unknown or names}; choose from {', '.join(models.NAMES)}")
    if config.augment_on == "device" and config.augment == "seed":
        raise errors.UsageError("--augment=seed runs Keras random layers; on the device use dihedral, hed or none")
    if config.data_dir is not None and config.image_size != PATCH_SHAPE[0]:
        raise errors.UsageError(
            f"--image_size={config.image_size}: a built dataset's images are {PATCH_SHAPE[0]} pixels"
        )
    if config.shuffle_buffer < 1:
        raise errors.UsageError(f"--shuffle_buffer={config.shuffle_buffer} must be > 0")
    spe = str(config.steps_per_execution)
    if spe != "auto" and not (spe.isdigit() and int(spe)):
        raise errors.UsageError(f"--steps_per_execution={spe!r}: expected 'auto' or a positive integer")
    return names


def host_augmentation(augment: str, augment_on: str) -> str:
    """What the tf.data pipeline runs: the augmentation, or nothing when it runs on the device."""
    return "none" if augment_on == "device" else augment


def write_synthetic_records(folder: str, count: int, image_shape, seed: int, files: int = 4) -> list[str]:
    """`count` random uint8 images with labels as TFRecord files of serialized examples in the built dataset's
    format (`pcam_tfds.core.record_spec`; `trainer.data.parse_batch` reads them), spread over `files` files; returns their paths."""
    import numpy as np
    import tensorflow as tf

    from pcam_tfds.core import record_spec

    rng = np.random.default_rng(seed)
    paths = [os.path.join(folder, f"synthetic-train.tfrecord-{i:05d}-of-{files:05d}") for i in range(files)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for i in range(count):
        image = rng.integers(0, 256, size=image_shape, dtype=record_spec.IMAGE_DTYPE)
        label = int(rng.random() < 0.4)  # an index into record_spec.LABEL_NAMES
        feature = {
            record_spec.IMAGE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
            record_spec.LABEL: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            record_spec.ID: tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"synthetic{i:07d}".encode()])),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[i % files].write(example.SerializeToString())
    for w in writers:
        w.close()
    return paths[: min(files, count)]


def measure_input(
    files: list[str], batch_size: int, batches: int, augment: str, seed: int, image_shape, shuffle_buffer: int
) -> dict:
    """images/s of `trainer.data.train_dataset` over `files` (repeated), after WARMUP_BATCHES batches."""
    from trainer import data

    ds = data.train_dataset(
        files,
        batch_size,
        seed,
        augment=augment,
        shuffle_buffer=shuffle_buffer,
        repeat=True,
        steps_per_epoch=WARMUP_BATCHES + batches,
        image_shape=image_shape,
    )
    it = iter(ds)
    for _ in range(WARMUP_BATCHES):
        next(it)
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        images += int(x.shape[0])
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "images": images, "seconds": seconds, "dtype": x.dtype.name}


def check_model(
    name: str,
    batch_size: int,
    steps: int,
    image_size: int,
    jit_compile: bool,
    seed: int,
    image_dtype: str = "float32",
    device_augment: str | None = None,
    steps_per_execution: int = 1,
) -> dict:
    """Builds `name` (random weights), trains a warm-up and `steps` timed steps (rounded up to whole executions)
    on one random batch of `image_dtype` (what the pipeline yields); device_augment: augment inside the step."""
    import keras
    import tensorflow as tf

    from trainer import augment as augment_lib
    from trainer.models import transfer
    from trainer.training import recipe

    keras.utils.set_random_seed(seed)
    shape = (image_size, image_size, PATCH_SHAPE[2])
    kwargs = {"weights": None} if name in models.TRANSFER else {}
    model = models.build(name, input_shape=shape, **kwargs)
    if name in models.TRANSFER:
        transfer.unfreeze_base(model, None)  # time the heaviest phase: full fine-tuning
    if device_augment is not None:
        augment_lib.on_device(model, device_augment, seed)
    xla = jit_compile
    rng = tf.random.Generator.from_seed(seed)
    images = tf.cast(rng.uniform([batch_size, *shape], 0, 255), image_dtype)
    labels = tf.cast(rng.uniform([batch_size, 1]) < 0.4, tf.float32)
    ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
    spe = steps_per_execution
    steps = math.ceil(steps / spe) * spe
    warmup = 2 * spe
    try:
        recipe.compile_model(model, keras.optimizers.Adam(1e-4), jit_compile=xla, steps_per_execution=spe)
        model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    except tf.errors.OpError as e:  # XLA may not support an op on this device; report it, measure without
        print(f"{name}: XLA compilation failed ({type(e).__name__}: {str(e)[:200]}); retrying without XLA")
        xla = False
        recipe.compile_model(model, keras.optimizers.Adam(1e-4), jit_compile=False, steps_per_execution=spe)
        model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - start
    compute = next(layer for layer in model.layers if layer.weights).compute_dtype
    return {
        "model": name,
        "params": model.count_params(),
        "images_per_s": steps * batch_size / seconds,
        "steps": steps,
        "compute_dtype": compute,
        "output_dtype": model.get_layer("probability").compute_dtype,
        "xla": bool(xla and model.jit_compile),
    }


def verdict(input_per_s: float, step_per_s: float) -> tuple[str, float]:
    """("input-bound" or "step-bound", input/step): the slower side bounds training."""
    ratio = input_per_s / step_per_s
    return ("input-bound" if ratio < 1.0 else "step-bound"), ratio


def _main(argv) -> int:
    config = cli.make(FLAGS, GpuCheckConfig, argv[1:])
    names = check(config)
    if config.data_dir is not None:
        from trainer import data

        files = data.split_files(data.load_builder(config.data_dir, config.dataset), "train")
    if config.output_json:
        parent = os.path.dirname(os.path.abspath(config.output_json))
        if not os.path.isdir(parent):
            raise errors.UsageError(f"--output_json={config.output_json!r}: folder {parent!r} does not exist")

    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    from trainer.training.recipe import PRECISION_POLICIES

    # The trainer's resolution of precision, XLA and steps per execution for this machine.
    recipe = resolve_recipe(
        "baseline",
        bool(gpus),
        mixed_precision=config.mixed_precision,
        jit_compile=config.jit_compile,
        steps_per_execution=config.steps_per_execution,
    )
    precision, xla, spe = recipe["mixed_precision"], recipe["jit_compile"], recipe["steps_per_execution"]
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[precision])
    host_aug = host_augmentation(config.augment, config.augment_on)
    image_shape = (config.image_size, config.image_size, PATCH_SHAPE[2])
    print(
        f"devices: {len(gpus)} GPU(s) {[g.name for g in gpus]}; mixed precision {precision}; "
        f"XLA {'on' if xla else 'off'} (--jit_compile={config.jit_compile}); batch {config.batch_size}, {config.image_size}x{config.image_size}; "
        f"augment {config.augment} on the {config.augment_on}; steps_per_execution {spe}",
        flush=True,
    )

    if config.data_dir is not None:
        source = f"{config.dataset} train split under {config.data_dir}"
        inp = measure_input(
            files, config.batch_size, config.input_batches, host_aug, config.seed, image_shape, config.shuffle_buffer
        )
    else:
        source = f"{config.synthetic_records} synthetic uint8 records"
        with tempfile.TemporaryDirectory(prefix="pcam-gpu-check-") as folder:
            files = write_synthetic_records(folder, config.synthetic_records, image_shape, config.seed)
            inp = measure_input(
                files,
                config.batch_size,
                config.input_batches,
                host_aug,
                config.seed,
                image_shape,
                config.shuffle_buffer,
            )
    inp.update(source=source, augment=host_aug, batches=config.input_batches)
    print(
        f"input: {inp['images_per_s']:.1f} images/s ({source}, host augmentation {host_aug}, "
        f"{inp['dtype']} batches, {config.input_batches} timed batches)",
        flush=True,
    )

    print(f"{'model':<12} {'params':>11} {'step img/s':>11} {'input img/s':>12}  compute  output   XLA       verdict")
    results = []
    for name in names:
        r = check_model(
            name,
            config.batch_size,
            config.steps,
            config.image_size,
            xla,
            config.seed,
            image_dtype=inp["dtype"],
            device_augment=config.augment if config.augment_on == "device" else None,
            steps_per_execution=spe,
        )
        r["verdict"], r["input_to_step"] = verdict(inp["images_per_s"], r["images_per_s"])
        results.append(r)
        print(
            f"{r['model']:<12} {r['params']:>11,} {r['images_per_s']:>11.1f} {inp['images_per_s']:>12.1f}  "
            f"{r['compute_dtype']:<8} {r['output_dtype']:<8} {'compiled' if r['xla'] else 'off':<9} "
            f"{r['verdict']} (input/step {r['input_to_step']:.2f}x)",
            flush=True,
        )
    if not gpus:
        print("note: no GPU; training shares these CPU cores between input and step, so both rates are upper bounds")
    if config.output_json:
        report = {
            "devices": [g.name for g in gpus],
            "mixed_precision": precision,
            "jit_compile": xla,
            "batch_size": config.batch_size,
            "image_size": config.image_size,
            "augment": config.augment,
            "augment_on": config.augment_on,
            "steps_per_execution": spe,
            "input": inp,
            "models": results,
        }
        with open(config.output_json, "w") as out:
            out.write(json.dumps(report, indent=2) + "\n")
        print(f"wrote {config.output_json}")
    return 0


def main() -> None:
    """The console script `pcam-gpu-check` (and `python -m trainer.training.gpu_check`)."""
    define_flags(FLAGS)
    errors.run(_main, tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())
