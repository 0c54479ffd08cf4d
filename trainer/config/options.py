"""Config fields that are also command-line flags (`option`), and the options several commands share, declared once.

    @dataclasses.dataclass(frozen=True)
    class PredictConfig:
        model_dirs: tuple[str, ...] = options.model_dirs()     # --model_dir, as pcam-evaluate and pcam-slide have it
        output: str = option(help="Submission CSV to write (id,label).", required=True)

`trainer.config.cli` makes each such field's absl flag from what `option` records, so a command's flags are its
config's fields. An option that several commands take is a function here, called by each config for its field:
one name, one help text, one default. The few names whose definition differs between commands on purpose are
DIFFERS_BY_COMMAND, each with its reason (tests/test_flags.py holds every other shared name to one definition).
"""

from __future__ import annotations

import dataclasses

from trainer.config.choices import AUGMENT_ON, AUGMENTATIONS, AUTO_ON_OFF, PRECISION_CHOICES, VERBOSITIES
from trainer.config.defaults import BUDGET_RECIPE, SEED_RECIPE

_SAME = object()  # an option's flag has the field's default
FLAG_TYPES = ("bool", "integer", "float", "string", "list", "multi_string")


def option(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    choices=None,
    flag_default=_SAME,
    flag_type: str | None = None,
    flag_name: str | None = None,
    required: bool = False,
    positional: bool = False,
    lower_bound: float | None = None,
):
    """A config field together with its command-line flag: the flag's help text and choices live here.

    `trainer.config.cli` turns the field into its absl flag, so adding an option is this one field (and, if it
    needs one, a check in the config's validation). The flag takes the field's name, default and kind (from the
    annotation) unless told otherwise:
      flag_default  what the flag means when not given, where the field does not hold it yet (None or "auto" for
                    a value `trainer.config.defaults.resolve_recipe` fills in)
      flag_type     one of FLAG_TYPES: "string" or "list" for a value the config parses, "multi_string" for a
                    flag that may be repeated
      flag_name     the flag's name, where it differs from the field's (--model_dir sets model_dirs)
      choices       an enum flag
      required      the command refuses to run without it
      positional    the command's positional arguments go to this field too, after its flag's values; without
                    a "multi_string" flag_type the field has no flag at all (pcam-compare's run folders)
      lower_bound   the smallest number the flag accepts
    """
    if flag_type is not None and flag_type not in FLAG_TYPES:
        raise ValueError(f"flag_type={flag_type!r}: choose one of {', '.join(FLAG_TYPES)}")
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "flag_default": default if flag_default is _SAME else flag_default,
        "flag_type": flag_type,
        "flag_name": flag_name,
        "required": required,
        "positional": positional,
        "lower_bound": lower_bound,
    }
    return dataclasses.field(default=default, metadata=metadata)


# Flag names that two commands define differently, on purpose.
DIFFERS_BY_COMMAND = {
    "model_dir": "pcam-train writes the run folder; pcam-export reads one finished run; pcam-predict, "
    "pcam-evaluate and pcam-slide read one or several (model_dirs: an ensemble)",
    "output_dir": "the folder a command writes into; each command's help names the files it writes there",
    "batch_size": "a training batch (pcam-train, pcam-tune, pcam-gpu-check) or a prediction batch "
    "(pcam-predict, pcam-evaluate, pcam-slide)",
    "split": "each command's default is the split it exists for: pcam-predict the unlabelled test split, "
    "pcam-evaluate a labelled one (validation)",
    "model": "pcam-tune searches the tuned and p4m families only, tuned by default",
    "epochs": "pcam-tune: the epochs of each trial (Hyperband: the most), 5 by default",
    "schedule": "pcam-tune: a trial trains fixed epochs, so no budget schedule, and auto is its own default",
}

RECIPE_NOTE = "for every model but the transfer ones with the budget schedule (chosen on the baseline)"


# The data and its input pipeline (pcam-train, pcam-tune, pcam-gpu-check; the data also pcam-predict and
# pcam-evaluate).


def data_dir(required: bool = False) -> dataclasses.Field:
    return option(
        dataclasses.MISSING if required else None,
        "TFDS data dir holding the built dataset (TFDS_DIR/pcam/<config>/<version>).",
        flag_default=None,
        required=required,
    )


def dataset() -> dataclasses.Field:
    return option("pcam/full", "TFDS dataset NAME/CONFIG[:VERSION] in --data_dir, e.g. pcam/full or pcam/sample25.")


def batch_size() -> dataclasses.Field:
    return option(64, "Global batch size (split across replicas under a distribution strategy).")


def seed() -> dataclasses.Field:
    return option(42, "Seed of weights init, shuffling and augmentation.")


def augment() -> dataclasses.Field:
    return option(
        "dihedral",
        "dihedral: the 8 flips/90-degree rotations plus brightness, contrast, saturation and hue (stain) jitter; "
        "hed: the 8 flips/rotations plus H&E stain jitter in colour-deconvolved stain space (Tellez et al.); "
        "seed: the notebook's flip, rotation 0.1, zoom 0.1, contrast 0.1; none.",
        choices=AUGMENTATIONS,
    )


def augment_on() -> dataclasses.Field:
    return option(
        "host",
        "Where --augment runs. host: in the tf.data pipeline on the CPU cores; device: inside the compiled train "
        "step on the accelerator, so the host only parses and ships uint8 images (not with --augment=seed). "
        "Validation and the saved model never augment.",
        choices=AUGMENT_ON,
    )


def sample_fraction() -> dataclasses.Field:
    return option(1.0, "Train and validate on this fraction of each split (quick runs).")


def steps_per_epoch() -> dataclasses.Field:
    return option(None, "Batches per epoch (quick runs); default: one pass over the data.")


def shuffle_buffer() -> dataclasses.Field:
    return option(8192, "Records in the shuffle buffer (serialized, about 27 kB each).")


def channel_stats() -> dataclasses.Field:
    return option(
        None,
        "baseline/tuned: stats.json of beam_jobs.stats; inputs are normalised per channel with its train mean "
        "and std instead of scaled by 1/255.",
    )


# The recipe's weight average and smoothing, the time budget, the devices and the progress output (pcam-train and
# pcam-tune; the devices also pcam-gpu-check). The field holds the resolved value, the flag what the user gave.


def ema() -> dataclasses.Field:
    return option(
        0.0,
        "Momentum of an exponential moving average of the weights, which is what is validated and saved; "
        f"0 = off. Default: {BUDGET_RECIPE['ema']:g} with the budget schedule (where it was measured), else 0.",
        flag_default=None,
    )


def label_smoothing() -> dataclasses.Field:
    return option(
        0.0,
        f"Label smoothing of the binary cross-entropy. Default: {BUDGET_RECIPE['label_smoothing']:g} "
        f"{RECIPE_NOTE}, else {SEED_RECIPE['label_smoothing']:g}.",
        flag_default=None,
    )


def max_minutes() -> dataclasses.Field:
    return option(
        None,
        "Time budget: stop after this many wall-clock minutes of this process (checked after every batch; the "
        "epoch is still validated). pcam-train then evaluates the best weights, pcam-tune starts no further "
        "trial; the same command continues.",
    )


def max_cpu_minutes() -> dataclasses.Field:
    return option(
        None,
        "Time budget in CPU minutes of this process (all threads), as --max_minutes; fair when jobs share a machine.",
    )


def mixed_precision() -> dataclasses.Field:
    return option(
        "off",
        "Mixed precision (float32 variables, 16-bit compute). float16 (with loss scaling) or bfloat16; on = "
        "float16. auto: float16 with a GPU, bfloat16 on a CPU with native bfloat16 units (AMX or AVX512_BF16), "
        "else off.",
        choices=PRECISION_CHOICES,
        flag_default="auto",
    )


def jit_compile() -> dataclasses.Field:
    return option(False, "XLA-compile the train step; auto = on with a GPU.", choices=AUTO_ON_OFF, flag_default="auto")


def steps_per_execution() -> dataclasses.Field:
    return option(
        1,
        "Train steps per call into the compiled function (fewer host round trips; the time budget and the "
        "learning-rate schedule are then applied every N steps). auto: 32 with a GPU, else 1 (and 1 with "
        "--strategy=multi_worker).",
        flag_default="auto",
        flag_type="string",
    )


def verbose() -> dataclasses.Field:
    return option("auto", "Keras progress: 1 = bar, 2 = a line per epoch.", choices=VERBOSITIES)


# Using finished runs (pcam-predict, pcam-evaluate, pcam-export, pcam-slide, pcam-compare).


def model_dirs() -> dataclasses.Field:
    return option(
        help="Trainer run folder; repeat it, or list more folders after the flags, for an ensemble (the mean of "
        "their probabilities).",
        flag_name="model_dir",
        flag_type="multi_string",
        required=True,
        positional=True,
    )


def output_dir(holds: str) -> dataclasses.Field:
    """The folder a command writes; HOLDS: what it writes there."""
    return option(help=f"Folder for {holds}.", required=True)


def input_dir() -> dataclasses.Field:
    return option(None, "Folder of patch files (.tif, .tiff, .png, .jpg, .jpeg), instead of --data_dir.")


def split(default: str) -> dataclasses.Field:
    return option(default, "Split of the dataset in --data_dir.")


def prediction_batch_size() -> dataclasses.Field:
    return option(256, "Patches per prediction batch (pcam-slide: windows).", lower_bound=1)


def tta() -> dataclasses.Field:
    return option(False, "Average each prediction over the 8 flips and 90-degree rotations of its input.")


def calibrate() -> dataclasses.Field:
    return option(
        False,
        "Pass each run's probabilities through its temperature fitted on validation (calibration.json), before "
        "any averaging or threshold; a run without one is refused.",
    )
