"""The defaults that depend on the schedule and on the machine: the recipe's values, precision, XLA and steps per
execution, resolved for pcam-train, every pcam-tune trial and pcam-gpu-check alike (`resolve_recipe`)."""

from __future__ import annotations

from typing import Any

from trainer import models
from trainer.errors import UsageError

# Defaults that depend on the schedule, applied where an option is not given. SEED_RECIPE: the seed notebook's
# values, kept without a time budget (short fixed-epoch runs, the demo). BUDGET_RECIPE: the budget schedule's,
# chosen under a CPU-time budget (bench/RESULTS.md, "Default recipe on slides the model has never seen").
# Learning rate, dropout and label smoothing apply to every model but the transfer ones (baseline, tuned, p4m);
# the weight average to every model.
SEED_RECIPE = {"learning_rate": 1e-3, "dropout": 0.5, "ema": 0.0, "label_smoothing": 0.0}
BUDGET_RECIPE = {"learning_rate": 3e-3, "dropout": 0.1, "ema": 0.999, "label_smoothing": 0.1}


def _auto(value: str, gpu: bool) -> bool:
    return gpu if value == "auto" else value == "on"


def cpu_has_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bfloat16 natively (oneDNN then runs bfloat16 convolutions faster per CPU-second
    than float32: bench/RESULTS.md, "Throughput: bfloat16 and the augmentations"); elsewhere bfloat16 is
    emulated and slower."""
    try:
        with open(cpuinfo) as f:
            flags_line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags_line.split()))


def _precision(value: str, gpu: bool) -> str:
    if value == "auto":
        return "float16" if gpu else ("bfloat16" if cpu_has_bfloat16() else "off")
    return "float16" if value == "on" else value


def _steps_per_execution(value: str, gpu: bool, strategy: str) -> int:
    if value == "auto":
        return 32 if gpu and strategy != "multi_worker" else 1
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--steps_per_execution={value!r}: expected 'auto' or a positive integer") from None


def resolve_recipe(
    model: str,
    gpu: bool,
    *,
    schedule: str = "auto",
    epochs: int | None = None,
    max_minutes: float | None = None,
    max_cpu_minutes: float | None = None,
    refit: bool = False,
    learning_rate: float | None = None,
    dropout: float | None = None,
    ema: float | None = None,
    label_smoothing: float | None = None,
    early_stopping_patience: int | None = None,
    mixed_precision: str = "auto",
    jit_compile: str = "auto",
    steps_per_execution: str = "auto",
    strategy: str = "auto",
) -> dict[str, Any]:
    """The recipe and hardware fields of a `TrainConfig` from the values a user gave (None / "auto": not given).

    The one resolution of pcam-train, of every pcam-tune trial and of pcam-gpu-check's precision: the schedule
    (auto: budget with a time budget and no --epochs, else constant), the schedule's recipe of learning rate,
    dropout, weight average and label smoothing where they are not given, the epochs and the patience, and
    precision, XLA and steps per execution for this machine (`gpu`).
    """
    budget = max_minutes is not None or max_cpu_minutes is not None
    # Without a budget the old constant rate stays the default: on short fixed-epoch runs (the demo) the
    # cosine decay and the weight average slowed the escape from the initial plateau (bench/RESULTS.md).
    if schedule == "auto":
        schedule = "budget" if budget and epochs is None else "constant"
    # The budget recipe was chosen on validation AUC with 30 CPU-minutes and confirmed on other slides
    # (bench/RESULTS.md, "Default recipe on slides the model has never seen"); elsewhere the seed's values stay.
    recipe = BUDGET_RECIPE if schedule == "budget" else SEED_RECIPE
    cnn_recipe = recipe if model not in models.TRANSFER else SEED_RECIPE
    if early_stopping_patience is None:  # a refit trains on the validation split: nothing held out to stop on
        early_stopping_patience = 3 if schedule == "constant" and not refit else 0
    return {
        "schedule": schedule,
        "epochs": epochs if epochs is not None or schedule == "budget" else 10,
        "learning_rate": learning_rate if learning_rate is not None else cnn_recipe["learning_rate"],
        "dropout": dropout if dropout is not None else cnn_recipe["dropout"],
        "ema": ema if ema is not None else recipe["ema"],
        "label_smoothing": label_smoothing if label_smoothing is not None else cnn_recipe["label_smoothing"],
        "early_stopping_patience": early_stopping_patience,
        "mixed_precision": _precision(mixed_precision, gpu),
        "jit_compile": _auto(jit_compile, gpu),
        "steps_per_execution": _steps_per_execution(steps_per_execution, gpu, strategy),
    }
