"""The flags of TrainConfig's fields, generated from the fields (absl stays the command line).

    from trainer import shared_flags
    shared_flags.define(flags.FLAGS, shared_flags.TRAIN)   # pcam-train: a flag for every TrainConfig field
    shared_flags.define(flags.FLAGS)                       # pcam-tune: the flags it shares with pcam-train
    shared_flags.define(fv, GPU_CHECK)                     # a command that takes only some of them

Each flag is named as the `trainer.config.TrainConfig` field it sets and made from that field
(`config.option`: help, choices, the flag's default and kind), so a name means the same, with one
default and one help text, in every command that has it; and adding an option is one field. The data,
the input pipeline, the budget recipe's weight average and smoothing, and the devices (NAMES) mean the
same for a run and for every trial, and pcam-train and pcam-tune resolve them with
`config.resolve_recipe`. pcam-train sets every field from the flag of its name; pcam-tune passes on
`fields(fv)`, the values of the shared flags that `config.resolve_recipe` does not resolve.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from trainer.config import train_config

_FIELDS = {f.name: f for f in dataclasses.fields(train_config.TrainConfig)}
TRAIN = tuple(_FIELDS)  # pcam-train's flags: one per TrainConfig field

# The flags pcam-train, pcam-tune and pcam-gpu-check share (pcam-tune defines the search's own).
NAMES = (
    "data_dir",
    "dataset",
    "batch_size",
    "seed",
    "augment",
    "sample_fraction",
    "steps_per_epoch",
    "shuffle_buffer",
    "mixed_precision",
    "jit_compile",
    "steps_per_execution",
    "ema",
    "label_smoothing",
    "verbose",
)

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
    """Defines on `fv` the flags of the TrainConfig fields NAMES (the shared ones by default), each from its field."""
    names = NAMES if names is None else names
    unknown = [name for name in names if name not in _FIELDS]
    if unknown:
        raise ValueError(f"not TrainConfig fields: {unknown}; a flag of these commands is a field of it")
    for name in names:
        define_field(fv, _FIELDS[name])


def define_field(fv: flags.FlagValues, field: dataclasses.Field) -> None:
    """Defines on `fv` the flag of one field declared with `config.option` (a TrainConfig's, or a TuneConfig's)."""
    meta = field.metadata
    if not meta.get("help"):
        raise ValueError(f"the field {field.name} has no help text: declare it with config.option(..., help)")
    name, default, help_ = field.name, meta["flag_default"], meta["help"]
    if default is dataclasses.MISSING:
        default = None
    if meta["choices"] is not None:
        flags.DEFINE_enum(name, default, meta["choices"], help_, flag_values=fv)
        return
    kind = meta["flag_type"] or _kind(field.type)
    if kind == "list":
        default = None if default is None else [str(v) for v in default]
    define = {
        "bool": flags.DEFINE_bool,
        "integer": flags.DEFINE_integer,
        "float": flags.DEFINE_float,
        "string": flags.DEFINE_string,
        "list": flags.DEFINE_list,
    }[kind]
    define(name, default, help_, flag_values=fv)


def _kind(annotation: str) -> str:
    """The absl flag kind of a field's annotation (a string: config.py postpones annotations)."""
    base = annotation.replace(" | None", "").strip()
    kinds = {"bool": "bool", "int": "integer", "float": "float", "str": "string", "tuple[int, ...]": "list"}
    if base not in kinds:
        raise TypeError(f"no flag kind for the annotation {annotation!r}; give config.option a flag_type")
    return kinds[base]
