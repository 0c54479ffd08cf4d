"""The command line made from a config's fields: an absl flag per field declared with `option`, and the fields'
values from the parsed flags. The one place the trainer's commands define flags (absl stays the command line).

    def define_flags(fv):
        cli.define(fv, PredictConfig)                          # a flag per field: its help, choices, default, kind
    ...
    config = cli.make(flags.FLAGS, PredictConfig, argv[1:])   # after parsing; the positional arguments too

A flag is named as its field (or `option(flag_name=...)`), so a name means the same, with one default and one
help text, in every command that has it (trainer.config.options declares the shared ones once); adding an
option is one field. A flag belongs to the module of its config, under which --helpfull lists it.
"""

from __future__ import annotations

import dataclasses
import sys

from absl import flags

from trainer.errors import UsageError


def flag_name(field: dataclasses.Field) -> str:
    """The flag of a field: its own name, or the one `option(flag_name=...)` gives it."""
    return field.metadata.get("flag_name") or field.name


def has_flag(field: dataclasses.Field) -> bool:
    """Whether the field has a flag: every field but one that only takes the command's positional arguments."""
    meta = field.metadata
    return not (meta.get("positional") and meta.get("flag_type") != "multi_string")


def flag_fields(config_cls: type) -> list[dataclasses.Field]:
    """The fields of `config_cls` that are flags."""
    return [f for f in dataclasses.fields(config_cls) if has_flag(f)]


def define(fv: flags.FlagValues, config_cls: type) -> None:
    """Defines on `fv` the flag of every field of `config_cls`, listed by --helpfull under the config's module."""
    module_name = config_cls.__module__
    if module_name == "__main__":  # python -m MODULE: absl's name for the main module, whose flags --help lists
        module_name = sys.argv[0]
    for field in flag_fields(config_cls):
        define_field(fv, field, module_name)


def define_field(fv: flags.FlagValues, field: dataclasses.Field, module_name: str | None = None) -> None:
    """Defines on `fv` the flag of one field declared with `option` (listed by --helpfull under MODULE_NAME)."""
    meta = field.metadata
    if not meta.get("help"):
        raise ValueError(f"the field {field.name} has no help text: declare it with option(..., help)")
    name, default, help_ = flag_name(field), meta["flag_default"], meta["help"]
    if default is dataclasses.MISSING:
        default = None
    common = {"flag_values": fv, "required": meta.get("required", False)}
    if module_name:
        common["module_name"] = module_name
    if meta["choices"] is not None:
        flags.DEFINE_enum(name, default, meta["choices"], help_, **common)
        return
    kind = meta["flag_type"] or _kind(field.type)
    if kind in ("list", "multi_string"):
        default = None if default is None or default == () else [str(v) for v in default]
    if kind in ("integer", "float") and meta.get("lower_bound") is not None:
        common["lower_bound"] = meta["lower_bound"]
    define = {
        "bool": flags.DEFINE_bool,
        "integer": flags.DEFINE_integer,
        "float": flags.DEFINE_float,
        "string": flags.DEFINE_string,
        "list": flags.DEFINE_list,
        "multi_string": flags.DEFINE_multi_string,
    }[kind]
    define(name, default, help_, **common)


def values(fv: flags.FlagValues, config_cls: type, args=()) -> dict:
    """{field name: value} of every field of `config_cls` from the parsed flags on `fv` (lists as tuples), the
    positional ARGS going to the field that takes them; UsageError for ARGS that no field takes."""
    out = {f.name: _value(f, fv[flag_name(f)].value) for f in flag_fields(config_cls)}
    positional = [f for f in dataclasses.fields(config_cls) if f.metadata.get("positional")]
    if positional:
        [field] = positional
        out[field.name] = (*out.get(field.name, ()), *args)
    elif args:
        raise UsageError(f"unexpected arguments: {' '.join(args)}")
    return out


def given(fv: flags.FlagValues, config_cls: type) -> dict:
    """{field name: value} of the flags of `config_cls` given on the command line (or in a --flagfile)."""
    return {f.name: fv[flag_name(f)].value for f in flag_fields(config_cls) if fv[flag_name(f)].present}


def make(fv: flags.FlagValues, config_cls: type, args=()):
    """The config of the parsed flags on `fv` (and the positional ARGS)."""
    return config_cls(**values(fv, config_cls, args))


def _value(field: dataclasses.Field, value):
    if field.metadata.get("flag_type") == "multi_string":
        return tuple(value or ())  # not given: absl's None
    return tuple(value) if isinstance(value, list) else value


def _kind(annotation: str) -> str:
    """The absl flag kind of a field's annotation (a string: the configs postpone annotations)."""
    base = annotation.replace(" | None", "").strip()
    kinds = {"bool": "bool", "int": "integer", "float": "float", "str": "string", "tuple[int, ...]": "list"}
    if base not in kinds:
        raise TypeError(f"no flag kind for the annotation {annotation!r}; give option a flag_type")
    return kinds[base]
