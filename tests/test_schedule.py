"""The learning-rate schedules (arithmetic, a budget-bound run, resuming mid-schedule) and the H&E augmentation."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import augment, data, run_folder
from trainer.config import defaults, train_config, validation
from trainer.training import loop, recipe
from trainer.training import schedule as schedule_lib
from trainer.training.schedule import Schedule

# Step arithmetic.


def test_cosine_warms_up_then_decays_to_zero_on_its_last_step():
    s = Schedule.cosine(peak=1e-3, steps_per_epoch=10, epochs=5)  # 50 steps, warm-up 5
    assert (s.warmup_steps, s.decay_start, s.total_steps, s.total_epochs) == (5, 5, 50, 5)
    assert s.rate(0) == pytest.approx(1e-3 / 5)
    assert s.rate(4) == pytest.approx(1e-3)
    assert s.rate(5) == pytest.approx(1e-3)
    assert s.rate(5 + 45 // 2) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 22 / 45)))
    assert s.rate(49) == pytest.approx(0.5e-3 * (1 + math.cos(math.pi * 44 / 45)))
    assert s.rate(50) == 0.0 and s.rate(80) == 0.0
    rates = [s.rate(i) for i in range(5, 51)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # monotone after the warm-up


def test_warmup_is_a_tenth_of_the_steps_at_most_one_epoch():
    assert Schedule.cosine(1.0, steps_per_epoch=100, epochs=30).warmup_steps == 100
    assert Schedule.cosine(1.0, steps_per_epoch=100, epochs=3).warmup_steps == 30
    assert Schedule.constant(2.0, 7).rate(0) == Schedule.constant(2.0, 7).rate(10_000) == 2.0


def test_budget_schedule_is_flat_until_planned_then_decays_from_the_end_of_calibration():
    s = Schedule.budget(peak=1.0, steps_per_epoch=10)
    assert (s.warmup_steps, s.decay_start, s.planned) == (10, 20, False)
    assert s.rate(9) == 1.0 and s.rate(500) == 1.0
    planned = s.with_epochs(6)
    assert (planned.total_steps, planned.total_epochs, planned.decay_start) == (60, 6, 20)
    assert planned.rate(19) == 1.0
    assert planned.rate(40) == pytest.approx(0.5)  # half-way through the decay
    assert planned.rate(60) == 0.0
    assert Schedule.from_dict(json.loads(json.dumps(planned.to_dict()))) == planned
    # A plan never ends inside the calibration epochs.
    assert s.with_epochs(1).total_epochs == schedule_lib.CALIBRATION_EPOCHS


def test_epochs_affordable_takes_the_tightest_limit_and_the_safety_margin():
    cost = {"wall_s": 10.0, "cpu_s": 20.0}
    assert schedule_lib.epochs_affordable(cost, {"wall_s": 100.0, "cpu_s": None}, safety=1.0) == 10
    assert schedule_lib.epochs_affordable(cost, {"wall_s": 100.0, "cpu_s": 100.0}, safety=1.0) == 5
    assert schedule_lib.epochs_affordable(cost, {"wall_s": 100.0, "cpu_s": 100.0}, safety=0.95) == 4
    assert schedule_lib.epochs_affordable(cost, {"wall_s": -5.0, "cpu_s": None}, safety=1.0) == 0
    with pytest.raises(ValueError, match="needs a time budget"):
        schedule_lib.epochs_affordable(cost, {"wall_s": None, "cpu_s": None}, safety=1.0)


class _FakeBudget:
    wall_s = None

    def __init__(self, cpu_s, used):
        self.cpu_s, self._used = cpu_s, used

    def used(self):
        return {"wall_s": 0.0, "cpu_s": self._used}


def test_a_refined_plan_keeps_the_rate_continuous_and_ends_at_zero():
    budget = _FakeBudget(cpu_s=100.0, used=20.0)
    cb = schedule_lib.ScheduleCallback(Schedule.budget(1.0, steps_per_epoch=10), budget=budget, safety=0.95)
    cb._costs = [{"wall_s": 1.0, "cpu_s": 10.0}]
    cb._plan(2)  # 80 s left at 10 s an epoch: 0.95 * 8 -> 7 more, 9 in all
    first = cb.schedule
    assert (first.total_epochs, first.decay_start) == (9, 20)
    # Epoch 3 cost 20 s (the machine got busier): mean 15 s, 70 s left -> 4 more, 7 in all.
    cb._costs.append({"wall_s": 1.0, "cpu_s": 20.0})
    budget._used = 30.0
    cb._plan(3)
    refined = cb.schedule
    assert (refined.total_epochs, refined.decay_start, refined.total_steps) == (7, 30, 70)
    assert refined.rate(30) == pytest.approx(first.rate(30))  # continuous at the anchor
    rates = [refined.rate(i) for i in range(30, 71)]
    assert all(a >= b for a, b in zip(rates, rates[1:])) and refined.rate(70) == 0.0
    cb._costs.append({"wall_s": 1.0, "cpu_s": 15.0})
    budget._used = 45.0  # mean 15 s, 55 s left -> 3 more, 7 in all: unchanged
    cb._plan(4)
    assert cb.schedule == refined
    budget._used = 99.0  # nothing left: the plan ends after this epoch instead of decaying further
    cb._costs.append({"wall_s": 1.0, "cpu_s": 15.0})
    cb._plan(5)
    assert cb.schedule.total_steps == 50 and cb.schedule.total_epochs == 5
    # A plan that has reached its end is never extended (its rate is already 0).
    cb.set_model(type("M", (), {"stop_training": False})())
    cb._epoch, cb._epoch_start = 4, (0.0, 0.0)
    budget._used = 0.0
    cb.on_epoch_end(4)
    assert cb.schedule.total_epochs == 5 and cb.model.stop_training


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"schedule": "budget", "epochs": None}, "--schedule=budget needs a time budget"),
        ({"schedule": "cosine", "epochs": None}, "--epochs is required with --schedule=cosine"),
        ({"schedule": "linear"}, "--schedule='linear' is not allowed"),
        ({"ema": 1.0}, "--ema=1.0 must be 0 (off) or a momentum in (0, 1)"),
        ({"label_smoothing": 0.5}, "--label_smoothing=0.5 must be in [0, 0.5)"),
        ({"mixed_precision": "int8"}, "--mixed_precision='int8' is not allowed"),
        ({"refit": True}, "--refit with --early_stopping_patience=3: a refit trains on the validation split"),
    ],
)
def test_config_rejects_bad_schedule_settings(kw, message):
    cfg = train_config.TrainConfig(model="baseline", data_dir="/d", model_dir="/m", **kw)
    with pytest.raises(ValueError) as info:
        validation.validate(cfg)
    assert message in str(info.value)


def test_averaged_weights_warm_up_their_momentum():
    opt = recipe.make_optimizer("adam", 1e-3, ema=0.999)
    var = tf.Variable(tf.zeros([2]))
    opt.build([var])
    assert float(opt.ema_momentum) == pytest.approx(1 / 10)  # step 0
    opt.iterations.assign(10_000)
    assert float(opt.ema_momentum) == pytest.approx(0.999)
    assert opt.get_config()["ema_momentum"] == 0.999
    assert not recipe.make_optimizer("adam", 1e-3).use_ema


# Training runs.


def _run_config(pcam_data, run_dir, **kw) -> train_config.TrainConfig:
    values = dict(
        model="baseline",
        data_dir=str(pcam_data["tfds"]),
        model_dir=str(run_dir),
        batch_size=16,
        augment="none",
        shuffle_buffer=64,
        verbose="0",
        early_stopping_patience=0,
        ema=0.99,
    )
    values.update(kw)
    return validation.validate(train_config.TrainConfig(**values))


def _log(run_dir) -> list[dict]:
    with open(run_dir / run_folder.HISTORY_CSV) as f:
        return list(csv.DictReader(f))


def test_budget_run_ends_on_the_last_step_of_its_schedule(pcam_data, tmp_path, monkeypatch):
    # A generous margin, so that a slow epoch on a loaded CI machine cannot make the budget stop it first.
    monkeypatch.setattr(schedule_lib, "DEFAULT_SAFETY", 0.5)
    cfg = _run_config(pcam_data, tmp_path, schedule="budget", epochs=None, max_cpu_minutes=0.5)
    loop.run(cfg)
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    plan = Schedule.from_dict(state["schedule"])
    rows = _log(tmp_path)
    assert plan.kind == "budget" and plan.total_epochs >= schedule_lib.CALIBRATION_EPOCHS
    assert len(rows) == plan.total_epochs and state["phase_done"] and state["epoch"] == plan.total_epochs
    per_epoch = recipe.steps_per_epoch(cfg, data.num_examples(data.load_builder(cfg.data_dir, cfg.dataset), "train"))
    assert plan.steps_per_epoch == per_epoch and plan.total_steps == plan.total_epochs * per_epoch
    logged = [float(r["learning_rate"]) for r in rows]
    # The plan may have been refined after later epochs: rows since its last anchor follow it exactly.
    anchor = plan.decay_start // per_epoch
    assert logged[anchor:] == pytest.approx([plan.rate((i + 1) * per_epoch - 1) for i in range(anchor, len(rows))])
    assert all(a >= b for a, b in zip(logged[1:], logged[2:]))  # falls monotonically after the warm-up
    assert logged[-1] < 0.01 * cfg.learning_rate  # annealed: the last step is the schedule's last
    assert (tmp_path / "metrics.json").exists()


def test_resume_mid_schedule_continues_the_same_learning_rate_curve(pcam_data, tmp_path, crash_after):
    whole = _run_config(pcam_data, tmp_path / "whole", schedule="cosine", epochs=4)
    loop.run(whole)
    parted = dataclasses.replace(whole, model_dir=str(tmp_path / "parted"))
    with pytest.raises(RuntimeError, match="simulated interruption after epoch 2"):
        loop.run(parted, callbacks=[crash_after(2)])
    assert len(_log(tmp_path / "parted")) == 2
    loop.run(parted)
    rates = [[float(r["learning_rate"]) for r in _log(tmp_path / name)] for name in ("whole", "parted")]
    assert len(rates[0]) == 4 and rates[1] == pytest.approx(rates[0])


def test_resumed_budget_run_follows_its_stored_plan(pcam_data, tmp_path, monkeypatch, crash_after):
    monkeypatch.setattr(schedule_lib, "DEFAULT_SAFETY", 0.5)
    cfg = _run_config(pcam_data, tmp_path, schedule="budget", epochs=None, max_cpu_minutes=0.5)
    with pytest.raises(RuntimeError, match="simulated interruption after epoch 3"):
        loop.run(cfg, callbacks=[crash_after(3)])
    plan = Schedule.from_dict(json.loads((tmp_path / "state" / "state.json").read_text())["schedule"])
    loop.run(dataclasses.replace(cfg, max_cpu_minutes=5.0))  # a new budget: same plan
    rows = _log(tmp_path)
    assert len(rows) == plan.total_epochs
    assert [float(r["learning_rate"]) for r in rows][3:] == pytest.approx(
        [plan.rate((i + 1) * plan.steps_per_epoch - 1) for i in range(3, len(rows))]
    )
    final = Schedule.from_dict(json.loads((tmp_path / "state" / "state.json").read_text())["schedule"])
    assert final == plan  # a resumed run follows the stored plan and does not refine it


def test_refit_trains_on_train_and_validation_and_keeps_the_last_weights(pcam_data, tmp_path, capsys):
    cfg = _run_config(pcam_data, tmp_path, schedule="cosine", epochs=3, ema=0.0, refit=True)
    loop.run(cfg)
    builder = data.load_builder(cfg.data_dir, cfg.dataset)
    both = data.num_examples(builder, "train") + data.num_examples(builder, "validation")
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert Schedule.from_dict(state["schedule"]).steps_per_epoch == math.ceil(both / cfg.batch_size)
    # Each epoch reads every labelled patch once (the pipeline asserts its batch count).
    ds, *_ = loop._datasets(cfg, builder, tf.distribute.get_strategy(), loop.distribute.SINGLE)
    assert sum(len(labels) for _, labels in ds) == both

    def weights(path):
        model = recipe.build_model(cfg, weights=None)
        loop._load_weights(model, path)
        return model.get_weights()

    # No epoch is chosen on validation patches it trained on: the saved model is the last epoch's.
    last = weights(tmp_path / "state" / state["weights"])
    for saved, kept in zip(weights(tmp_path / run_folder.BEST_WEIGHTS), last):
        np.testing.assert_array_equal(saved, kept)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["held_out"] is False and metrics["set"] == "validation"
    assert not (tmp_path / "calibration.json").exists()  # a temperature fitted on seen patches: none
    assert "validation (trained on, not held out)" in (tmp_path / "classification_report.txt").read_text()
    assert "--refit trained on these patches: not held out" in capsys.readouterr().out


def test_refit_callbacks_save_every_epoch_and_normal_runs_the_best(pcam_data, tmp_path):
    from keras.callbacks import ModelCheckpoint

    progress = loop.phases.Progress(tmp_path / "state")
    for refit in (False, True):
        cfg = _run_config(pcam_data, tmp_path, schedule="cosine", epochs=2, refit=refit)
        phase = loop.phases.plan_phases(cfg)[0]
        callbacks = loop._phase_callbacks(cfg, tmp_path, phase, 0, progress.enter(0), progress, 5, None)
        (checkpoint,) = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
        assert checkpoint.save_best_only is not refit


def test_refit_turns_off_the_default_early_stopping(parse_flags):
    cfg = parse_flags("--refit", "--epochs=5")
    assert (cfg.refit, cfg.schedule, cfg.early_stopping_patience) == (True, "constant", 0)
    assert parse_flags("--refit", "--max_cpu_minutes=30").schedule == "budget"
    with pytest.raises(ValueError, match="--refit with --early_stopping_patience=2"):
        parse_flags("--refit", "--epochs=5", "--early_stopping_patience=2")


# H&E stain augmentation.


def _patches(n=4, seed=0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3)), tf.uint8)


def test_rgb_hed_rgb_round_trips():
    images = tf.cast(_patches(), tf.float32)
    back = augment.hed_to_rgb(augment.rgb_to_hed(images))
    np.testing.assert_allclose(back.numpy(), images.numpy(), atol=1e-2)
    # White has no stain; a haematoxylin-only pixel separates into haematoxylin alone.
    np.testing.assert_allclose(augment.rgb_to_hed(tf.fill([1, 1, 3], 255.0)).numpy(), 0.0, atol=1e-6)
    purple = augment.hed_to_rgb(tf.constant([[[0.8, 0.0, 0.0]]]))
    np.testing.assert_allclose(augment.rgb_to_hed(purple).numpy(), [[[0.8, 0.0, 0.0]]], atol=1e-4)


def test_hed_jitter_is_the_identity_at_strength_zero():
    images = _patches()
    out = augment.hed_jitter(images, tf.constant([1, 2]), scale=0.0, shift=0.0, brightness=0.0, contrast=0.0)
    np.testing.assert_allclose(out.numpy(), images.numpy().astype(np.float32), atol=1e-2)


def test_hed_jitter_stays_in_range_and_is_seeded():
    images = _patches(n=16)
    seed = tf.constant([3, 4])
    out = augment.hed_jitter(images, seed, scale=0.9, shift=2.0, brightness=0.5, contrast=0.9)
    assert out.dtype == tf.float32 and float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    default = augment.hed_jitter(images, seed)
    np.testing.assert_array_equal(default.numpy(), augment.hed_jitter(images, seed).numpy())
    assert not np.array_equal(default.numpy(), augment.hed_jitter(images, tf.constant([3, 5])).numpy())
    # The stain scale acts per image: each image of a batch of identical ones gets its own colour.
    same = tf.repeat(images[:1], 8, axis=0)
    varied = augment.hed_jitter(same, seed, brightness=0.0, contrast=0.0).numpy()
    assert len({round(float(v), 3) for v in varied.mean(axis=(1, 2, 3))}) == 8


def test_hed_augmentation_runs_inside_tf_data():
    fn = augment.make_augment_fn("hed", seed=0)
    ds = tf.data.Dataset.from_tensors(_patches(n=8)).map(lambda x: fn(x, tf.constant([0, 1], tf.int64)))
    (batch,) = list(ds)
    assert batch.shape == (8, 16, 16, 3) and batch.dtype == tf.float32
    eager = fn(_patches(n=8), tf.constant([0, 1], tf.int64))
    np.testing.assert_allclose(batch.numpy(), eager.numpy(), atol=1e-3)


# Flags -> recipe.


@pytest.fixture()
def parse_flags():
    from absl import flags

    import trainer.__main__ as main_module

    def parse(*args):
        fv = flags.FlagValues()
        main_module.define_flags(fv)
        fv(["trainer", "--model=baseline", "--data_dir=/d", "--model_dir=/m", *args])
        return main_module.config_from_flags(fv, gpu=False)

    return parse


def test_a_budget_without_epochs_gets_the_budget_schedule(parse_flags):
    cfg = parse_flags("--max_cpu_minutes=30")
    assert (cfg.schedule, cfg.epochs, cfg.early_stopping_patience, cfg.ema) == ("budget", None, 0, 0.999)
    cfg = parse_flags("--max_cpu_minutes=30", "--epochs=5")
    assert (cfg.schedule, cfg.epochs, cfg.ema) == ("constant", 5, 0.0)
    cfg = parse_flags()
    assert (cfg.schedule, cfg.epochs, cfg.early_stopping_patience, cfg.ema) == ("constant", 10, 3, 0.0)
    cfg = parse_flags("--schedule=cosine", "--ema=0.99")
    assert (cfg.schedule, cfg.epochs, cfg.early_stopping_patience, cfg.ema) == ("cosine", 10, 0, 0.99)
    assert parse_flags("--max_cpu_minutes=30", "--ema=0").ema == 0.0
    assert parse_flags("--early_stopping_patience=4").early_stopping_patience == 4


def test_the_budget_recipe_sets_the_cnns_rate_and_dropout_and_flags_win(parse_flags, tmp_path):
    from trainer.config import defaults

    budget, seed = defaults.BUDGET_RECIPE, defaults.SEED_RECIPE
    assert (budget["learning_rate"], budget["dropout"]) != (seed["learning_rate"], seed["dropout"])
    cfg = parse_flags("--max_cpu_minutes=30")
    assert (cfg.learning_rate, cfg.dropout, cfg.ema) == (budget["learning_rate"], budget["dropout"], budget["ema"])
    assert cfg.label_smoothing == budget["label_smoothing"] > 0.0 == seed["label_smoothing"]
    assert (
        parse_flags().label_smoothing == 0.0 == parse_flags("--max_cpu_minutes=30", "--model=resnet50").label_smoothing
    )
    assert parse_flags("--max_cpu_minutes=30", "--label_smoothing=0").label_smoothing == 0.0
    cfg = parse_flags("--max_cpu_minutes=30", "--model=tuned")
    assert (cfg.learning_rate, cfg.dropout) == (budget["learning_rate"], budget["dropout"])
    cfg = parse_flags()  # no budget: the seed's values
    assert (cfg.learning_rate, cfg.dropout, cfg.ema) == (seed["learning_rate"], seed["dropout"], 0.0)
    cfg = parse_flags("--max_cpu_minutes=30", "--epochs=5")  # a fixed epoch count: constant schedule, seed values
    assert (cfg.learning_rate, cfg.dropout) == (seed["learning_rate"], seed["dropout"])
    # Transfer models keep the seed's head rate and dropout; the weight average follows the schedule.
    cfg = parse_flags("--max_cpu_minutes=30", "--model=resnet50", "--weights=none")
    assert (cfg.learning_rate, cfg.dropout, cfg.ema) == (seed["learning_rate"], seed["dropout"], budget["ema"])
    # Explicit flags win, and so does a tuning result over the recipe (but not over a flag).
    cfg = parse_flags("--max_cpu_minutes=30", "--learning_rate=1e-4", "--dropout=0.4")
    assert (cfg.learning_rate, cfg.dropout) == (1e-4, 0.4)
    hparams = tmp_path / "best.json"
    hparams.write_text('{"learning_rate": 0.0005, "dropout": 0.3}')
    cfg = parse_flags("--max_cpu_minutes=30", "--model=tuned", f"--hparams={hparams}")
    assert (cfg.learning_rate, cfg.dropout) == (0.0005, 0.3)
    cfg = parse_flags("--max_cpu_minutes=30", "--model=tuned", f"--hparams={hparams}", "--dropout=0.1")
    assert (cfg.learning_rate, cfg.dropout) == (0.0005, 0.1)


def test_mixed_precision_auto_picks_bfloat16_only_on_cpus_that_have_it(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert defaults.cpu_has_bfloat16(str(cpuinfo))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert not defaults.cpu_has_bfloat16(str(cpuinfo))
    assert not defaults.cpu_has_bfloat16(str(tmp_path / "missing"))
    monkeypatch.setattr(defaults, "cpu_has_bfloat16", lambda: False)
    assert defaults._precision("auto", gpu=False) == "off"
    assert defaults._precision("auto", gpu=True) == "float16"
    assert defaults._precision("on", gpu=False) == "float16"
    assert defaults._precision("bfloat16", gpu=False) == "bfloat16"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--filters=16,32",), "--filters does not apply to --model=baseline"),
        (("--dense=64", "--batch_norm"), "--dense, --batch_norm does not apply to --model=baseline"),
        (("--weights=none",), "--weights does not apply to --model=baseline"),
        (("--model=resnet50", "--filters=16"), "--filters does not apply to --model=resnet50"),
    ],
)
def test_a_model_flag_the_model_would_ignore_is_refused(parse_flags, args, named):
    from trainer import errors

    with pytest.raises(errors.UsageError, match=named):
        parse_flags(*args)


def test_model_flags_reach_the_models_that_take_them(parse_flags):
    cfg = parse_flags("--model=tuned", "--filters=16,32", "--dense=64", "--batch_norm")
    assert (cfg.filters, cfg.dense, cfg.batch_norm) == ((16, 32), 64, True)
    assert parse_flags("--model=resnet50", "--weights=none").weights == "none"


@pytest.mark.parametrize(
    "options",
    [
        {"max_cpu_minutes": 30},
        {"epochs": 3, "schedule": "cosine", "augment": "hed"},
        {"model": "tuned", "filters": (8, 16), "dense": 32, "refit": True, "max_minutes": 5},
        {"model": "resnet50", "weights": "none", "head_epochs": 0},
    ],
)
def test_a_library_caller_gets_the_config_pcam_train_makes_from_the_same_flags(parse_flags, options):
    """config.resolved is the command's own resolution: the same options as flags give the same TrainConfig."""
    options = {"model": "baseline", "data_dir": "/d", "model_dir": "/m", **options}

    def as_flag(name, value):
        if isinstance(value, bool):
            return f"--{name}" if value else f"--no{name}"
        return f"--{name}={','.join(map(str, value)) if isinstance(value, tuple) else value}"

    from_flags = parse_flags(*(as_flag(k, v) for k, v in options.items()))
    assert train_config.resolved(False, **options) == from_flags


def test_resolved_names_an_unknown_option_and_a_model_that_ignores_one():
    with pytest.raises(ValueError, match=r"unknown options \['epoch'\]"):
        train_config.resolved(False, model="baseline", data_dir="/d", model_dir="/m", epoch=3)
    with pytest.raises(ValueError, match="--filters=32: expected integers like 32,64,128"):
        train_config.resolved(False, model="tuned", data_dir="/d", model_dir="/m", filters=32)
    with pytest.raises(ValueError, match="--dense does not apply to --model=baseline"):
        train_config.resolved(False, model="baseline", data_dir="/d", model_dir="/m", dense=64)
