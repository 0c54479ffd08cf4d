"""A tuning result (pcam-train --hparams): its keys and their types, read from JSON and mapped onto TrainConfig fields.

values = hparams.read("runs/tune/best_hyperparameters.json")    # {name: value}, every key checked
fields = hparams.to_fields(values)                              # {TrainConfig field: value}
"""

from __future__ import annotations

import json
from typing import Any

from etils import epath

from trainer.errors import UsageError

# The model families pcam-tune searches (trainer.tuning.tune_config.MODELS), whose runs take its result.
MODELS = ("tuned", "p4m")

# What a result may hold, each key with the type of its value: keras-tuner writes its best hyperparameters as such
# a flat JSON object (trainer.tuning.tune_reports). The widths (WIDTH_KEYS) are mapped onto `filters`; every other
# key sets the TrainConfig field of its name.
TYPES = {
    "learning_rate": (float, int),
    "dropout": (float, int),
    "filters": int,
    "width": int,
    "num_blocks": int,
    "dense": int,
    "batch_norm": bool,
    "optimizer": str,
    "weight_decay": (float, int),
    "batch_size": int,
}
KEYS = tuple(TYPES)
WIDTH_KEYS = ("filters", "width", "num_blocks")


def read(path: str) -> dict[str, Any]:
    """A tuning result: a flat JSON object {hyperparameter name: value} with keys from KEYS."""
    try:
        values = json.loads(epath.Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--hparams={path!r}: no such file") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--hparams={path!r} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise UsageError(f"--hparams={path!r} must hold a JSON object of name -> value, got {type(values).__name__}")
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise UsageError(f"--hparams={path!r} has unknown keys {unknown}; allowed keys are {', '.join(KEYS)}")
    for key, value in values.items():
        kind = TYPES[key]
        ok = (isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))) or (
            key == "filters" and isinstance(value, list) and value and all(isinstance(v, int) for v in value)
        )
        if not ok:
            names = {float: "a number", int: "an integer", bool: "true or false", str: "a string"}
            expected = names[kind[0] if isinstance(kind, tuple) else kind]
            raise UsageError(
                f"--hparams={path!r}: {key}={value!r} must be {expected}"
                + (" or a list of integers" if key == "filters" else "")
            )
    return values


def to_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Maps tuning hyperparameters onto TrainConfig fields.

    `filters` may be a list (the widths of the blocks) or one number; a number, like `width`, is the
    first block's width, doubled in each of `num_blocks` blocks (default 3), as in the seed CNN.
    """
    fields = {key: value for key, value in values.items() if key in KEYS and key not in WIDTH_KEYS}
    width = values.get("filters", values.get("width"))
    if isinstance(width, (list, tuple)):
        if "num_blocks" in values and values["num_blocks"] != len(width):
            raise UsageError(
                f"hparams: filters {list(width)} has {len(width)} blocks but num_blocks={values['num_blocks']}"
            )
        fields["filters"] = tuple(int(w) for w in width)
    elif width is not None or "num_blocks" in values:
        width = int(width if width is not None else 32)
        fields["filters"] = tuple(width * 2**i for i in range(int(values.get("num_blocks", 3))))
    return fields
