"""The flags that pcam-train, pcam-tune and pcam-gpu-check share, defined once (absl stays the command line).

    from trainer import shared_flags
    shared_flags.define(flags.FLAGS)      # in the command's __main__ module, before its own flags
    shared_flags.define(fv, GPU_CHECK)    # a command that takes only some of them

The data, the input pipeline, the budget recipe's weight average and smoothing, and the devices mean the same
for a run and for every trial, and both commands resolve them with `config.resolve_recipe`; so their flags
are one definition, with one default and one help text. Each is named as the TrainConfig field it sets
(pcam-train sets every field from the flag of its name; pcam-tune passes on `fields(fv)`, the values of
those that are not resolved by `config.resolve_recipe`), so adding such an option is a TrainConfig field and
one flag here.
"""

from __future__ import annotations

from absl import flags

from trainer import config as config_lib

# What pcam-gpu-check times a training step with: the data, the pipeline's batch and shuffle, and the devices,
# resolved as the trainer resolves them (config.resolve_recipe).
GPU_CHECK = (
    "data_dir",
    "dataset",
    "batch_size",
    "seed",
    "augment",
    "shuffle_buffer",
    "mixed_precision",
    "jit_compile",
    "steps_per_execution",
)


# Shared flags whose value is not the field's: "auto" or an unset recipe default, resolved by config.resolve_recipe.
RESOLVED = ("mixed_precision", "jit_compile", "steps_per_execution", "ema", "label_smoothing")


def fields(fv: flags.FlagValues) -> dict:
    """{name: value} of the shared flags defined on `fv` that set their TrainConfig field as they are."""
    return {name: fv[name].value for name in NAMES if name not in RESOLVED and name in fv}


def define(fv: flags.FlagValues, names: tuple[str, ...] | None = None) -> None:
    """Defines the shared flags NAMES (all of them by default) on `fv`."""
    names = NAMES if names is None else names
    unknown = set(names) - set(NAMES)
    if unknown:
        raise ValueError(f"not shared flags: {sorted(unknown)}; shared: {', '.join(NAMES)}")
    for name in names:
        _DEFINE[name](fv)


def _definitions() -> dict:
    """name -> a function defining that flag on the FlagValues it is given."""
    table = {}

    def flag(define, name, *args, **kwargs):
        table[name] = lambda fv: define(name, *args, flag_values=fv, **kwargs)

    flag(
        flags.DEFINE_string,
        "data_dir",
        None,
        "TFDS data dir holding the built dataset (TFDS_DIR/pcam/<config>/<version>).",
    )
    flag(
        flags.DEFINE_string,
        "dataset",
        "pcam/full",
        "TFDS dataset NAME/CONFIG[:VERSION], e.g. pcam/full or pcam/sample25.",
    )
    flag(
        flags.DEFINE_integer,
        "batch_size",
        64,
        "Global batch size (split across replicas under a distribution strategy).",
    )
    flag(flags.DEFINE_integer, "seed", 42, "Seed of weights init, shuffling and augmentation.")
    flag(
        flags.DEFINE_enum,
        "augment",
        "dihedral",
        config_lib.AUGMENTATIONS,
        "dihedral: the 8 flips/90-degree rotations plus brightness, contrast, saturation and hue (stain) jitter; "
        "seed: the notebook's flip, rotation 0.1, zoom 0.1, contrast 0.1; none.",
    )
    flag(flags.DEFINE_float, "sample_fraction", 1.0, "Train and validate on this fraction of each split (quick runs).")
    flag(
        flags.DEFINE_integer,
        "steps_per_epoch",
        None,
        "Batches per epoch (quick runs); default: one pass over the data.",
    )
    flag(flags.DEFINE_integer, "shuffle_buffer", 8192, "Records in the shuffle buffer (serialized, about 27 kB each).")
    flag(
        flags.DEFINE_enum,
        "mixed_precision",
        "auto",
        config_lib.PRECISION_CHOICES,
        "Mixed precision (float32 variables, 16-bit compute). float16 (with loss scaling) or bfloat16; on = float16. "
        "auto: float16 with a GPU, bfloat16 on a CPU with native bfloat16 units (AMX or AVX512_BF16), else off.",
    )
    flag(
        flags.DEFINE_enum,
        "jit_compile",
        "auto",
        ["auto", "on", "off"],
        "XLA-compile the train step; auto = on with a GPU.",
    )
    flag(
        flags.DEFINE_string,
        "steps_per_execution",
        "auto",
        "Train steps per call into the compiled function (fewer host round trips; the time budget and the "
        "learning-rate schedule are then applied every N steps). auto: 32 with a GPU, else 1 (and 1 with "
        "--strategy=multi_worker).",
    )
    flag(
        flags.DEFINE_float,
        "ema",
        None,
        "Momentum of an exponential moving average of the weights, which is what is "
        "validated and saved; 0 = off. Default: "
        f"{config_lib.BUDGET_RECIPE['ema']:g} with the budget schedule (where it was measured), else 0.",
    )
    flag(
        flags.DEFINE_float,
        "label_smoothing",
        None,
        "Label smoothing of the binary cross-entropy. Default: "
        f"{config_lib.BUDGET_RECIPE['label_smoothing']:g} for baseline and tuned with the budget schedule (measured "
        f"there), else {config_lib.SEED_RECIPE['label_smoothing']:g}.",
    )
    flag(
        flags.DEFINE_enum, "verbose", "auto", ["auto", "0", "1", "2"], "Keras progress: 1 = bar, 2 = a line per epoch."
    )
    return table


_DEFINE = _definitions()
NAMES = tuple(_DEFINE)  # every shared flag, in the order they are defined (and shown by --helpfull)
