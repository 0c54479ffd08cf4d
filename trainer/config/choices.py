"""The values some options may take: one list each, read by the configs, their flags and the code that acts on them.

They live apart from the configs (and import nothing), so that the models (trainer.models.cnn) and the configs
both import them without importing each other.
"""

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
