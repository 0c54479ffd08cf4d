"""What makes a training run a function of its seed: the same metrics again, and after a kill and resume.

    seed_everything(config.seed)                       # Python, NumPy, TensorFlow and Keras seeds
    clock = EpochClock(config.seed)
    train_ds = data.train_dataset(..., epoch=clock.epoch)
    model.fit(train_ds, initial_epoch=..., callbacks=[clock, ...])

Everything random in an epoch is drawn from (seed, epoch), never from a state that runs on from the
previous epoch, because a resumed run starts a fresh process at epoch N:
- the input pipeline's file order, record shuffle and augmentation (`trainer.data.train_dataset`, which
  reads the epoch from `EpochClock.epoch` when Keras starts the epoch's iterator);
- the model's own random layers (dropout): Keras keeps their generator state in variables that are not
  saved with the weights, so `EpochClock` sets them from (seed, epoch) at the start of every epoch.
Parallel tf.data stages keep their order (deterministic=True). On CPU that is enough for identical
runs (tests/test_determinism.py). Not covered: --augment=seed, the notebook's Keras layers, which draw
from their own stateful generators inside parallel map calls (Keras takes no tensor seeds there). `tf.config.experimental.enable_op_determinism` is not called: it is
not needed on CPU, and on a GPU it slows training for a guarantee the trainer does not promise there.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The Keras name of a SeedGenerator's state variable (keras.random.SeedGenerator).
_SEED_STATE = "seed_generator_state"


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's, TensorFlow's and Keras' global generators (weight initialisation)."""
    keras.utils.set_random_seed(seed)


def epoch_seed(seed: int, stream: int, epoch) -> tf.Tensor:
    """The stateless seed (int64 [2]) of one random `stream` in one epoch: a function of (seed, stream, epoch) only."""
    return tf.random.experimental.stateless_fold_in(tf.constant([seed, stream], tf.int64), tf.cast(epoch, tf.int64))


def reseed_layers(model: keras.Model, seed: int, epoch: int) -> int:
    """Sets the state of every Keras seed generator in `model` from (seed, epoch, its index); returns how many."""
    states = [v for v in model.variables if v.name == _SEED_STATE]
    for index, state in enumerate(states):
        value = epoch_seed(seed, 1000 + index, epoch)[0] % (2**31 - 1)  # Keras seeds are 32-bit
        state.assign(tf.cast(tf.stack([value, 0]), state.dtype))
    return len(states)


class EpochClock(keras.callbacks.Callback):
    """Tells the input pipeline which epoch begins, and reseeds the model's random layers for it.

    It goes first in fit()'s callbacks, so the epoch is set before Keras starts the epoch's iterator.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed
        # On the host: tf.data reads it there.
        with tf.device("/cpu:0"):
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="input_epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)
        reseed_layers(self.model, self.seed, epoch)

    def __deepcopy__(self, memo):
        # keras-tuner deep-copies the callbacks of every execution; a copy's variable would be a new one
        # that the dataset never reads. The clock holds no per-execution state, so the copy is itself.
        return self
