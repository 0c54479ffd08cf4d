"""One training run from a validated `TrainConfig`: build, compile, fit in phases, resume, evaluate, save.

    from trainer.config import train_config
    from trainer.training import loop
    loop.run(train_config.resolved(gpu=False, model="baseline", data_dir=..., model_dir=..., max_cpu_minutes=30))

(`train_config.resolved` makes the config pcam-train makes from the same options: recipe and hardware resolved.)

RUN_DIR afterwards holds config.json, model.keras, best.weights.h5 (the best validation epoch's weights; with
--refit, which trains on the validation split too, the last epoch's), training_log.csv (with the learning
rate of each epoch's last step), logs/ (TensorBoard), metrics.json, calibration.json,
classification_report.txt, val_predictions.csv and the PNG plots and galleries (trainer.evaluation.report).

A run restarted with the same command continues where it stopped: `trainer.training.phases` plans the phases
(the frozen-base head, then fine-tuning, for transfer models) and holds the state file and the rules
that resume them.

On a cluster (--strategy=multi_worker) every worker runs this same function; only the chief writes
RUN_DIR, the others write into temporary folders (`trainer.training.distribute`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence

import keras
import tensorflow as tf
from absl import logging
from etils import epath

from pcam_tfds.core.progress import print_line
from trainer import data, determinism, errors, run_folder
from trainer.config.train_config import TrainConfig
from trainer.evaluation import files, report
from trainer.inference import calibration, explain, probabilities
from trainer.models import transfer
from trainer.training import distribute, phases, recipe
from trainer.training import schedule as schedule_lib
from trainer.training.budget import Budget, BudgetStop, SharedBudget
from trainer.training.epoch_log import EpochLog


def dataset_identity(builder) -> dict:
    """What the run trains on, independent of where it sits: the dataset's name, version, split sizes and shards."""
    return {
        "name": builder.info.full_name,
        "splits": {name: split.num_examples for name, split in sorted(builder.info.splits.items())},
        "shards": {
            name: [epath.Path(p).name for p in split.filepaths] for name, split in sorted(builder.info.splits.items())
        },
    }


def check_dataset_identity(model_dir: epath.Path, builder) -> None:
    """Records the dataset's identity in a new run; a resumed run must see the same dataset (it may have moved)."""
    path = model_dir / run_folder.DATASET_FILE
    identity = dataset_identity(builder)
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != identity:
            differ = [k for k in identity if identity[k] != recorded.get(k)]
            raise errors.UsageError(
                f"{model_dir} was trained on another dataset ({', '.join(differ)} differ: "
                f"{recorded.get('name')} {recorded.get('splits')} -> {identity['name']} "
                f"{identity['splits']}); choose a new --model_dir"
            )
        return
    run_folder.atomic_write_text(path, json.dumps(identity, indent=2) + "\n")


def num_train_examples(config: TrainConfig, builder) -> int:
    return sum(data.num_examples(builder, split) for split in config.train_splits)


def _load_weights(model: keras.Model, path: epath.Path) -> None:
    with warnings.catch_warnings():
        # Moving from phase to phase the saved optimizer state belongs to the previous phase's optimizer.
        warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
        model.load_weights(str(path))


def _set_phase_layers(model: keras.Model, config: TrainConfig, phase: phases.Phase) -> None:
    if phase.name == "head":
        transfer.freeze_base(model)
    elif phase.name == "fine_tune":
        scratch = config.weights == "none"
        n = transfer.unfreeze_base(
            model, None if config.full_fine_tune else config.unfreeze_layers, train_batch_norm=scratch
        )
        logging.info(
            "fine-tuning: %d base layers with weights are trainable (BatchNormalization %s)",
            n,
            "trains: no pretrained statistics" if scratch else "frozen",
        )


def _prepare_phase(
    model: keras.Model, config: TrainConfig, phase: phases.Phase, index: int, entry: phases.PhaseEntry
) -> None:
    """Trainable layers, a fresh optimizer and compilation for `phase`; the saved weights when `entry` says so."""
    if entry.weights is not None and not entry.continues:
        _load_weights(model, entry.weights)  # not compiled yet: model weights only
    _set_phase_layers(model, config, phase)
    # Each phase's optimizer counts steps from 0 again, so its device augmentation seeds get their own salt.
    recipe.compile_for(model, config, phase.learning_rate, augment_salt=104_729 * index)
    if entry.continues:  # the interrupted phase's optimizer state too
        model.optimizer.build(model.trainable_variables)
        _load_weights(model, entry.weights)


# The order the resume logic depends on (phases.StateCheckpoint says why): the schedule and early stopping decide an
# epoch before StateCheckpoint records it; StateCheckpoint saves the raw weights before SwapEMAWeights puts the
# average in place, which validation and ModelCheckpoint's best weights then use; BudgetStop ends fit() only
# after the best weights of the epoch are saved. Other callbacks (the log, TensorBoard, a progress bar) may sit
# anywhere between.
CALLBACK_ORDER = (
    schedule_lib.ScheduleCallback,
    phases.ResumableEarlyStopping,
    phases.StateCheckpoint,
    keras.callbacks.SwapEMAWeights,
    keras.callbacks.ModelCheckpoint,
    BudgetStop,
)


def check_callback_order(callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """RuntimeError when CALLBACKS break CALLBACK_ORDER (a bug: a resumed run would not repeat an uninterrupted one)."""
    kinds = [next(k for k in CALLBACK_ORDER if isinstance(c, k)) for c in callbacks if isinstance(c, CALLBACK_ORDER)]
    ranks = [CALLBACK_ORDER.index(k) for k in kinds]
    if ranks != sorted(ranks):
        order = ", ".join(k.__name__ for k in CALLBACK_ORDER)
        raise RuntimeError(f"callbacks in the order {[k.__name__ for k in kinds]}; resume needs {order}")


def _phase_callbacks(
    config: TrainConfig,
    write_dir: epath.Path,
    phase: phases.Phase,
    index: int,
    entry: phases.PhaseEntry,
    progress: phases.Progress,
    per_epoch: int,
    budget: Budget | None,
) -> list[keras.callbacks.Callback]:
    """The trainer's callbacks for one phase, in the order they must run at an epoch's end; they write to `write_dir`."""
    early_stopping = phases.ResumableEarlyStopping(
        initial_wait=entry.early_stopping_wait,
        initial_best=entry.early_stopping_best,
        monitor=recipe.MONITOR,
        mode="max",
        patience=config.early_stopping_patience or phases.UNBOUNDED_EPOCHS,
        verbose=1,
    )
    schedule = recipe.schedule_callback(phase, per_epoch, first_epoch=entry.start, stored=entry.schedule, budget=budget)
    # Last, where Keras puts its own bar (which would count to fit()'s unbounded epochs; this one to the plan).
    header = [schedule_lib.PlannedEpochProgbar(schedule)] if phase.epochs == phases.UNBOUNDED_EPOCHS else []
    callbacks = [
        schedule,
        early_stopping,
        EpochLog(write_dir / run_folder.HISTORY_CSV),
        *recipe.tensorboard_callbacks(write_dir / "logs"),
        phases.StateCheckpoint(
            progress.write_dir,
            index,
            progress.phase_starts,
            entry.start + phase.epochs,
            early_stopping,
            entry.best_auc,
            schedule,
            monitor=recipe.MONITOR,
        ),
        # With an average of the weights, validation, the best checkpoint and model.keras use the average.
        *recipe.ema_callbacks(config),
        # A refit has no held-out validation to choose an epoch on: it keeps every epoch's weights, so the last.
        keras.callbacks.ModelCheckpoint(
            str(write_dir / run_folder.BEST_WEIGHTS),
            monitor=recipe.MONITOR,
            mode="max",
            save_best_only=not config.refit,
            save_weights_only=True,
            initial_value_threshold=entry.best_auc,
        ),
        *([BudgetStop(budget)] if budget else []),
        *header,
    ]
    check_callback_order(callbacks)
    return callbacks


def run(config: TrainConfig, callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict | None:
    """Trains (or resumes) the run described by `config` and writes its outputs; returns metrics.json's contents.

    `callbacks` go to every phase's fit() after the trainer's own (tests interrupt a run with one).
    On a multi-worker cluster the chief returns the metrics and the other workers None.
    """
    # The strategy first: MultiWorkerMirroredStrategy must exist before TensorFlow runs any operation.
    strategy = distribute.make_strategy(config.strategy)
    task = distribute.current_task(strategy)
    with distribute.write_dir(epath.Path(config.model_dir), task) as write_dir:
        return _run(config, callbacks, strategy, task, write_dir)


def _datasets(config: TrainConfig, builder, strategy, task: distribute.Task, epoch: tf.Variable | None = None):
    """(train, validation, class_weight, steps) for fit. Images travel as uint8 unless a host augmentation made floats.

    On a cluster each worker builds its own pipelines for its shard of the data, with its part of the
    global batch; class weights then ride along as sample weights (Keras cannot map a distributed dataset).
    Both pipelines repeat there and every worker runs the same number of steps (`steps`, for fit): shards
    differ in size, and a worker that ran out would be fed empty batches, which oneDNN's convolutions
    reject. An epoch is then as many global batches as one pass over the (sampled) split, and validation
    may see a few examples twice in its last batch; metrics.json comes from the chief's own pass over the
    whole validation split.
    """
    host_augment = "none" if config.augment_on == "device" else config.augment
    train_files = [f for split in config.train_splits for f in data.split_files(builder, split)]
    val_files = data.split_files(builder, "validation")
    train_kwargs = dict(
        seed=config.seed,
        augment=host_augment,
        shuffle_buffer=config.shuffle_buffer,
        sample_fraction=config.sample_fraction,
        repeat=config.steps_per_epoch is not None,
        num_examples=num_train_examples(config, builder),
        epoch=epoch,  # determinism.EpochClock's: each epoch's order and augmentation come from (seed, epoch)
        steps_per_epoch=config.steps_per_epoch,
    )
    if task.num_workers == 1:
        return (
            data.train_dataset(train_files, config.batch_size, **train_kwargs),
            data.eval_dataset(
                val_files,
                config.batch_size,
                config.sample_fraction,
                image_dtype=tf.uint8,
                num_examples=data.num_examples(builder, "validation"),
            ),
            dict(enumerate(config.class_weights)) if config.class_weights else None,
            {"steps_per_epoch": config.steps_per_epoch},
        )
    per_epoch = recipe.steps_per_epoch(config, num_train_examples(config, builder))

    def train_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = (context.input_pipeline_id, context.num_input_pipelines)
        batch = context.get_per_replica_batch_size(config.batch_size)
        return data.train_dataset(
            train_files,
            batch,
            **{**train_kwargs, "repeat": True, "steps_per_epoch": per_epoch, "num_examples": None},
            shard=shard,
            class_weights=config.class_weights,
        )

    def val_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = (context.input_pipeline_id, context.num_input_pipelines)
        batch = context.get_per_replica_batch_size(config.batch_size)
        ds = data.eval_dataset(val_files, batch, config.sample_fraction, image_dtype=tf.uint8, shard=shard)
        return ds.repeat()

    num_val = round(data.num_examples(builder, "validation") * config.sample_fraction)
    # The strategy's input pipeline prefetches each worker's batches onto its devices.
    return (
        strategy.distribute_datasets_from_function(train_fn),
        strategy.distribute_datasets_from_function(val_fn),
        None,
        {"steps_per_epoch": per_epoch, "validation_steps": max(1, -(-num_val // config.batch_size))},
    )


def _run(
    config: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback],
    strategy: tf.distribute.Strategy,
    task: distribute.Task,
    write_dir: epath.Path,
) -> dict | None:
    """`run` once the strategy is made: reads the run's state from the run folder (config.model_dir) and writes to
    `write_dir` (the run folder itself on the chief, a temporary folder on the other workers)."""
    model_dir = epath.Path(config.model_dir)
    (write_dir / run_folder.STATE_DIR).mkdir(parents=True, exist_ok=True)
    recipe.set_precision(config)
    keras.utils.set_random_seed(config.seed)

    builder = data.load_builder(config.data_dir, config.dataset)
    check_dataset_identity(write_dir, builder)
    if task.num_workers > 1:
        if config.batch_size % strategy.num_replicas_in_sync:
            raise errors.UsageError(
                f"--batch_size={config.batch_size} must be divisible by the number of replicas in the cluster "
                f"({strategy.num_replicas_in_sync}): it is the global batch, split evenly among them"
            )
        logging.info(
            "%s %d of a %d-worker cluster, %d replicas in all; writing to %s",
            task.type,
            task.index,
            task.num_workers,
            strategy.num_replicas_in_sync,
            write_dir,
        )
    clock = determinism.EpochClock(config.seed)
    train_ds, val_ds, class_weight, fit_steps = _datasets(config, builder, strategy, task, clock.epoch)

    progress = phases.Progress(model_dir / run_folder.STATE_DIR, write_dir=write_dir / run_folder.STATE_DIR)
    plan = phases.plan_phases(config)
    with strategy.scope():
        # Random init when resuming: the saved weights replace the pretrained ones anyway.
        model = recipe.build_model(config, weights=None if progress.resumed else "config")
    if task.num_workers > 1:
        distribute.with_mixin(model, distribute.MultiWorkerFit)
    if progress.resumed:
        print_line(f"resuming {model_dir} at epoch {progress.epoch} (phase {plan[progress.state.phase_index].name})")
    elif config.is_transfer and config.weights == "imagenet":
        logging.info("training from ImageNet weights")

    budget = Budget.from_minutes(config.max_minutes, config.max_cpu_minutes)
    if budget is not None and task.num_workers > 1:
        # Every worker checks the chief's clock, so all of them stop after the same step.
        budget = SharedBudget(budget, lambda local: distribute.agree(strategy, task, local))
    per_epoch = recipe.steps_per_epoch(config, num_train_examples(config, builder))
    for index, phase in enumerate(plan):
        if progress.finished(index):
            continue
        entry = progress.enter(index)
        with strategy.scope():
            _prepare_phase(model, config, phase, index, entry)
        last = "budget" if phase.epochs == phases.UNBOUNDED_EPOCHS else entry.start + phase.epochs
        print_line(
            f"phase {phase.name}: epochs {entry.initial_epoch + 1}..{last}, {phase.schedule} schedule peaking at "
            f"learning rate {phase.learning_rate:g}"
        )
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=entry.start + phase.epochs,
            initial_epoch=entry.initial_epoch,
            **fit_steps,
            class_weight=class_weight,
            callbacks=[
                clock,
                *_phase_callbacks(config, write_dir, phase, index, entry, progress, per_epoch, budget),
                *callbacks,
            ],
            shuffle=False,
            verbose=config.verbose if config.verbose == "auto" else int(config.verbose),
        )
        phase_done = progress.end(index, phase.name)
        if budget and budget.spent() and not phase_done:
            logging.warning(
                "%s: phase %s stopped at epoch %d; evaluating the best weights so far (the same "
                "command continues the run)",
                budget.describe(),
                phase.name,
                progress.state.epoch,
            )
            break
        progress.close()
        if budget and budget.spent() and index + 1 < len(plan):
            logging.warning(
                "%s after phase %s; evaluating (the same command continues with the next phase)",
                budget.describe(),
                phase.name,
            )
            break
    if not task.is_chief:
        return None  # the chief evaluates; this worker's folder goes
    return finish(config, builder, tuple(progress.phase_starts[1:]))


def finish(config: TrainConfig, builder, fine_tune_starts=()) -> dict:
    """Best weights (a refit's last) -> model.keras; validation predictions -> metrics, report and plots."""
    model_dir = epath.Path(config.model_dir)
    final = recipe.build_model(config, weights=None)
    best = model_dir / run_folder.BEST_WEIGHTS
    if not best.exists():  # no epoch produced a val_auc; keep the last weights
        state_dir = model_dir / run_folder.STATE_DIR
        best = state_dir / phases.read_state(state_dir).weights
    _load_weights(final, best)
    with run_folder.atomic_path(model_dir / run_folder.MODEL_FILE, suffix=".keras") as tmp:  # Keras wants the suffix
        final.save(str(tmp))
    batches = data.eval_dataset(
        data.split_files(builder, "validation"), config.batch_size, config.sample_fraction, with_ids=True
    )
    ids, labels, probs = probabilities.predict_batches([final], batches.as_numpy_iterator())
    report.write_learning_curves(model_dir, config.model, model_dir / run_folder.HISTORY_CSV, fine_tune_starts)
    metrics = report.write_report(
        model_dir,
        config.model,
        report.ScoredSet("validation", ids, labels, probs, held_out=not config.refit),
        predictions_file=run_folder.VAL_PREDICTIONS,
        seed=config.seed,
        # A refit trained on these patches: a temperature fitted on them would be too confident.
        calibration=None if config.refit else calibration.fit_and_write(model_dir, labels, probs, "validation"),
        images_for=lambda wanted: report.collect_images(batches.as_numpy_iterator(), wanted),
        gradcam=explain.GradCam(final),
    )
    examples = report.collect_images(batches.as_numpy_iterator(), ids[:8])
    report.write_tensorboard(
        model_dir / run_folder.EVALUATION_LOGS,
        labels,
        probs,
        step=len(files.read_history(model_dir / run_folder.HISTORY_CSV).get("epoch", [])),
        figures=[
            model_dir / n
            for n in (run_folder.ERROR_GALLERY_PNG, run_folder.GRADCAM_GALLERY_PNG, run_folder.RELIABILITY_PNG)
        ],
        examples=[examples[i] for i in ids[:8]],
    )
    low, high = metrics["roc_auc_ci95"]
    seen = " (--refit trained on these patches: not held out)" if config.refit else ""
    print(
        f"validation ROC AUC {metrics['roc_auc']:.4f} (95% CI {low:.4f}-{high:.4f}), accuracy "
        f"{metrics['accuracy']:.4f}{seen}; model, metrics and report in {model_dir}",
        flush=True,
    )
    return metrics
