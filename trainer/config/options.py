"""Config fields that are also command-line flags (`option`), and the choice lists that flags and models share.

    @dataclasses.dataclass(frozen=True)
    class TrainConfig:
        optimizer: str = option("adam", "Optimizer; sgd uses Nesterov momentum 0.9.", choices=OPTIMIZERS)

`trainer.config.cli` makes each such field's absl flag from what `option` records. The choice lists live
here, apart from the configs, so that the models (trainer.models.cnn) and the configs import them without
importing each other.
"""

from __future__ import annotations

import dataclasses

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
AUGMENTATIONS = ("hed", "dihedral", "seed", "none")  # trainer.augment
STRATEGIES = ("auto", "mirrored", "one_device", "default", "multi_worker")
PADDINGS = ("same", "valid")  # the CNNs' convolutions: zero padding, or none (exact dense slide inference)
STAIN_NORMS = ("none", "reinhard")  # trainer.models.stain_norm, first layer of the CNNs
AUGMENT_ON = ("host", "device")  # where the augmentation runs: in the tf.data pipeline or in the train step
SCHEDULES = ("budget", "cosine", "constant")  # trainer.training.schedule; the flag's "auto" is resolved before this
PRECISIONS = ("off", "float16", "bfloat16")  # mixed precision's compute dtype (variables stay float32)
VERBOSITIES = ("auto", "0", "1", "2")  # Keras' progress output

# The flag values of precision, XLA and steps per execution that mean "choose for this machine".
PRECISION_CHOICES = ("auto", "on", "off", *PRECISIONS[1:])
AUTO_ON_OFF = ("auto", "on", "off")

_SAME = object()  # an option's flag has the field's default


def option(default=dataclasses.MISSING, help: str = "", *, choices=None, flag_default=_SAME, flag_type=None):
    """A config field together with its command-line flag: the flag's help text and choices live here.

    `trainer.config.cli` turns each field into its absl flag, so adding an option is this one field (and, if
    it needs one, a check in the config's validation). The flag takes the field's default and its type from the
    annotation, unless the flag means something the field does not hold yet: FLAG_DEFAULT (e.g. None or "auto"
    for a value that `trainer.config.defaults.resolve_recipe` fills in) and FLAG_TYPE ("string" or "list", for
    a value the config parses). CHOICES make an enum flag.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "flag_default": default if flag_default is _SAME else flag_default,
        "flag_type": flag_type,
    }
    return dataclasses.field(default=default, metadata=metadata)
