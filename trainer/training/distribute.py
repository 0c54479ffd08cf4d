"""The distribution strategy of a run (`make_strategy`, --strategy) and multi-worker training
(--strategy=multi_worker): who writes, how workers agree, and Keras' gaps.

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        python -m trainer --strategy=multi_worker --model=baseline --data_dir=gs://... --model_dir=gs://...

Every worker runs the same command with its own TF_CONFIG (BUILD.md, "Multi-worker training").
`tf.distribute.MultiWorkerMirroredStrategy` keeps one copy of the weights per worker and all-reduces
the gradients of every step, so the workers must run the same steps in the same order:

- The chief (task "chief", or worker 0 when the cluster names no chief) owns the run folder: config,
  state, checkpoints, logs, model.keras and the evaluation. Every other worker runs the same callbacks
  into a temporary folder that it deletes (`write_dir`): the usual Keras pattern, which keeps the
  workers' steps identical without two writers in one folder. The workers read the run's state from the
  run folder when they resume, so it must be on storage all of them can read (gs://, s3://, NFS).
- Decisions that a process would take from its own clock (the time budget) are the chief's, sent to
  every worker with an all-reduce (`agree`); decisions taken from metrics need nothing, since the
  metrics are all-reduced already and identical on every worker.
- `MultiWorkerFit` works around Keras 3's fit() under this strategy (keras-team/keras#20585): it
  reduces every logged scalar with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars, and
  builds the model from a batch by reducing the whole (x, y) structure at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import keras
import tensorflow as tf
from etils import epath

from trainer import errors


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster."""

    type: str  # "chief" or "worker"
    index: int
    num_workers: int  # tasks that train: the chief and the workers
    has_chief: bool  # the cluster names a chief task

    @property
    def is_chief(self) -> bool:
        """The chief task, or worker 0 when the cluster has no chief (TensorFlow's rule)."""
        return self.type == "chief" or (self.type == "worker" and self.index == 0 and not self.has_chief)


SINGLE = Task("chief", 0, 1, True)  # a single-host run: it is its own chief


def task_from_tf_config(text: str | None) -> Task:
    """The task a TF_CONFIG value describes; ValueError naming the problem when it describes none."""
    if not text:
        raise errors.UsageError(
            "--strategy=multi_worker needs TF_CONFIG: "
            '{"cluster": {"worker": ["host0:port", ...]}, "task": {"type": "worker", "index": i}} (BUILD.md)'
        )
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        task_type, index = task["type"], int(task["index"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise errors.UsageError(f"TF_CONFIG={text!r} is not a cluster and a task: {type(e).__name__}: {e}") from None
    if task_type not in ("chief", "worker"):
        raise errors.UsageError(
            f"TF_CONFIG task type {task_type!r}: multi-worker training has only chief and worker tasks"
        )
    if not 0 <= index < len(cluster.get(task_type, [])):
        raise errors.UsageError(f"TF_CONFIG task {task_type}:{index} is not in its cluster {cluster}")
    has_chief = bool(cluster.get("chief"))
    num_workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
    return Task(task_type, index, num_workers, has_chief)


def current_task(strategy: tf.distribute.Strategy) -> Task:
    """This process's task under `strategy`; a single-host strategy makes it the chief of one."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return SINGLE
    return task_from_tf_config(os.environ.get("TF_CONFIG"))


@contextlib.contextmanager
def write_dir(model_dir: epath.Path, task: Task) -> Iterator[epath.Path]:
    """The folder this process writes: the run folder on the chief, a temporary one (deleted after) elsewhere."""
    if task.is_chief:
        yield model_dir
        return
    tmp = tempfile.mkdtemp(prefix=f"pcam-{task.type}{task.index}-")
    try:
        yield epath.Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def agree(strategy: tf.distribute.Strategy, task: Task, local: bool) -> bool:
    """The chief's `local` on every worker: an all-reduce that every worker must call at the same point."""
    if task.num_workers == 1:
        return local
    value = tf.constant(1.0 if (task.is_chief and local) else 0.0)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(value,)), axis=None)
    return bool(total > 0)


def _local(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


class MultiWorkerFit:
    """Mixin for a keras.Model trained under MultiWorkerMirroredStrategy (see the module docstring).

    The step's logs get a leading axis of one, so Keras' reduction (a mean over axis 0 across the
    replicas) gives the mean of the replicas' values; they are equal anyway, since the metric variables
    are all-reduced on every update. The symbolic build sees this worker's first batch (it needs only
    shapes and dtypes) instead of an all-reduce of the whole batch structure.
    """

    def train_step(self, data):
        return {k: v[None] for k, v in super().train_step(data).items()}

    def test_step(self, data):
        return {k: v[None] for k, v in super().test_step(data).items()}

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, it in iterator:
                data_batch = tf.nest.map_structure(lambda v: _local(self._distribute_strategy, v), next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def with_mixin(model: keras.Model, mixin: type) -> keras.Model:
    """`model` with `mixin` ahead of its class (once), as trainer.training.recipe.make_optimizer does for optimizers with an average."""
    if not isinstance(model, mixin):
        model.__class__ = type(f"{mixin.__name__}{type(model).__name__}", (mixin, type(model)), {})
    return model


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: MirroredStrategy over all visible GPUs when there are several; on one GPU, OneDeviceStrategy on it,
    whose input pipeline prefetches the next batches into the GPU's memory while a step runs; else the
    default (the CPU). multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG.
    """
    if name == "multi_worker":
        task_from_tf_config(os.environ.get("TF_CONFIG"))  # a clear error before TensorFlow's
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "one_device" or (name == "auto" and len(gpus) == 1):
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name in ("auto", "default"):
        return tf.distribute.get_strategy()
    raise ValueError(f"strategy {name!r} is unknown; choose auto, mirrored, one_device, default or multi_worker")
