"""One flag system: every trainer command's flags are its config's fields, made by trainer.config.cli alone, and a
flag name that two commands share means one thing, with one help text and one default (trainer.config.options)."""

from __future__ import annotations

import ast
import configparser
import dataclasses
import importlib

import pytest
from absl import flags
from cli_runs import REPO

from trainer.config import cli, options
from trainer.config.options import option
from trainer.config.train_config import TrainConfig


def _configs() -> dict[str, type]:
    """The config whose fields are each trainer command's flags."""
    from trainer.evaluation.compare import CompareConfig
    from trainer.inference.evaluate import EvaluateConfig
    from trainer.inference.export import ExportConfig
    from trainer.inference.predict import PredictConfig
    from trainer.slides.command import SlideCommand
    from trainer.training.gpu_check import GpuCheckConfig
    from trainer.tuning.tune_config import TuneOptions

    return {
        "pcam-train": TrainConfig,
        "pcam-predict": PredictConfig,
        "pcam-evaluate": EvaluateConfig,
        "pcam-export": ExportConfig,
        "pcam-compare": CompareConfig,
        "pcam-gpu-check": GpuCheckConfig,
        "pcam-tune": TuneOptions,
        "pcam-slide": SlideCommand,
    }


def _trainer_scripts() -> dict[str, str]:
    """{console script: module} of the trainer's commands in setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    scripts = dict((part.strip() for part in line.split("=")) for line in lines)
    return {name: target.split(":")[0] for name, target in scripts.items() if target.startswith("trainer")}


def _flags_of(module: str) -> flags.FlagValues:
    """The flags the command module defines, on a FlagValues of their own."""
    fv = flags.FlagValues()
    importlib.import_module(module).define_flags(fv)
    return fv


@pytest.fixture(scope="module")
def command_flags() -> dict[str, flags.FlagValues]:
    return {name: _flags_of(module) for name, module in _trainer_scripts().items()}


def test_no_trainer_module_defines_a_flag_by_hand():
    """flags.DEFINE_* is called in trainer.config.cli alone; every command names its config instead."""
    by_hand = []
    for path in sorted((REPO / "trainer").rglob("*.py")):
        if path == REPO / "trainer" / "config" / "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", None) or getattr(node.func, "id", "")
                if name.startswith("DEFINE") or name.startswith("mark_flag"):
                    by_hand.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not by_hand, by_hand


def test_each_commands_flags_are_its_configs_fields(command_flags):
    """Walks the console scripts: each command's flags are exactly the fields of its config (by flag name), each
    flag made from its field: help, default, choices; and the required ones are required."""
    configs = _configs()
    assert set(command_flags) == set(configs)
    for name, fv in command_flags.items():
        fields = {cli.flag_name(f): f for f in cli.flag_fields(configs[name])}
        assert set(fv) == set(fields), name
        for flag, field in fields.items():
            meta = field.metadata
            assert meta["help"] in fv[flag].help, (name, flag)  # enums prefix their choices, multi flags add a note
            if meta["choices"] is not None:
                assert tuple(fv[flag].parser.enum_values) == meta["choices"], (name, flag)
            default = None if meta["flag_default"] is dataclasses.MISSING else meta["flag_default"]
            if isinstance(default, tuple):
                default = [str(v) for v in default] or None
            assert fv[flag].default == default, (name, flag)
        # A value each required flag accepts (an enum's first choice).
        required = {
            flag: (field.metadata["choices"] or ["x"])[0]
            for flag, field in fields.items()
            if field.metadata["required"]
        }
        module = _trainer_scripts()[name]
        _flags_of(module)(["prog", *(f"--{flag}={v}" for flag, v in required.items())])  # all given: it parses
        for flag in required:
            without = _flags_of(module)
            with pytest.raises(flags.IllegalFlagValueError, match=flag):
                without(["prog", *(f"--{other}={v}" for other, v in required.items() if other != flag)])


def _definition(flag) -> str:
    return repr((flag.help, flag.default, flag.flag_type(), getattr(flag.parser, "enum_values", None)))


def test_a_flag_name_shared_by_commands_has_one_definition(command_flags):
    """The same name in two commands has one help text, default and kind: declared once, in trainer.config.options.
    The names that differ on purpose are options.DIFFERS_BY_COMMAND, each with its reason, and they do differ."""
    by_name: dict[str, dict[str, tuple]] = {}
    for command, fv in command_flags.items():
        for name in fv:
            by_name.setdefault(name, {})[command] = _definition(fv[name])
    shared = {name: defs for name, defs in by_name.items() if len(defs) > 1}
    drift = {name: defs for name, defs in shared.items() if len(set(defs.values())) > 1}
    assert set(drift) == set(options.DIFFERS_BY_COMMAND), sorted(set(drift) ^ set(options.DIFFERS_BY_COMMAND))
    # The commands that read runs agree among themselves (one factory each), whatever pcam-train's flag says.
    for name in ("model_dir", "batch_size"):
        readers = {by_name[name][c] for c in ("pcam-predict", "pcam-evaluate", "pcam-slide")}
        assert len(readers) == 1, name
    assert {"data_dir", "dataset", "tta", "calibrate", "input_dir", "seed", "augment"} <= set(shared)


def test_calibrate_means_the_same_in_every_command(command_flags):
    """Settled drift: --calibrate was off in pcam-predict and pcam-evaluate and on in pcam-export; now it is off in
    all three, so a default export serves what a default pcam-predict writes."""
    values = {c: command_flags[c]["calibrate"].default for c in ("pcam-predict", "pcam-evaluate", "pcam-export")}
    assert values == {"pcam-predict": False, "pcam-evaluate": False, "pcam-export": False}


def test_every_flag_of_pcam_train_is_made_from_its_field():
    """Help, choices and default live with the TrainConfig field (option); the flag is made from them."""
    fv = flags.FlagValues()
    cli.define(fv, TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag, meta = fv[field.name], field.metadata
        assert flag.help.endswith(meta["help"]) and len(meta["help"]) > 20, field.name  # enums prefix the choices
        expected = None if meta["flag_default"] is dataclasses.MISSING else meta["flag_default"]
        if field.name == "filters":
            expected = [str(v) for v in expected]
        assert flag.default == expected, field.name
        if meta["choices"] is not None:
            assert tuple(flag.parser.enum_values) == meta["choices"], field.name


def test_a_new_option_is_one_field():
    """A field declared with option becomes a flag of its kind with its help and default; a field without help
    text is refused, so no flag goes undocumented."""

    @dataclasses.dataclass(frozen=True)
    class WithMore:
        warmup_epochs: int = option(2, "Epochs of linear warm-up.", lower_bound=0)
        mixup: float | None = option(None, "Mixup's alpha; none = off.")
        tags: tuple[int, ...] = option((1, 2), "Some integers.")
        undocumented: int = dataclasses.field(default=0)

    fv = flags.FlagValues()
    fields = {f.name: f for f in dataclasses.fields(WithMore)}
    for name in ("warmup_epochs", "mixup", "tags"):
        cli.define_field(fv, fields[name])
    fv(["prog", "--warmup_epochs=5", "--tags=3,4"])
    assert (fv.warmup_epochs, fv.mixup, fv.tags) == (5, None, ["3", "4"])
    assert fv["warmup_epochs"].help == "Epochs of linear warm-up." and fv["mixup"].parser.flag_type() == "float"
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["prog", "--warmup_epochs=-1"])
    with pytest.raises(ValueError, match="no help text"):
        cli.define_field(fv, fields["undocumented"])


def test_a_repeated_flag_takes_the_positional_arguments_too():
    """--model_dir a --model_dir b c: the runs a, b and c (options.model_dirs); a required flag is required;
    positional arguments that no field takes are a user's mistake."""
    from trainer.errors import UsageError

    @dataclasses.dataclass(frozen=True)
    class Runs:
        model_dirs: tuple[str, ...] = options.model_dirs()
        output_dir: str = options.output_dir("the results")

    fv = flags.FlagValues()
    cli.define(fv, Runs)
    args = fv(["prog", "--model_dir=a", "--model_dir", "b", "c", "--output_dir=out"])[1:]
    assert cli.make(fv, Runs, args) == Runs(("a", "b", "c"), "out")
    missing = flags.FlagValues()
    cli.define(missing, Runs)
    with pytest.raises(flags.IllegalFlagValueError, match="model_dir"):
        missing(["prog", "--output_dir=out"])

    @dataclasses.dataclass(frozen=True)
    class Plain:
        output_dir: str = options.output_dir("the results")

    plain = flags.FlagValues()
    cli.define(plain, Plain)
    plain(["prog", "--output_dir=out"])
    with pytest.raises(UsageError, match="unexpected arguments: extra"):
        cli.make(plain, Plain, ["extra"])


def test_tune_and_gpu_check_options_set_the_train_config_field_of_their_name():
    """What pcam-tune and pcam-gpu-check share with pcam-train reaches the trials' and the step's TrainConfig by
    name (no mapping line each); pcam-tune's own are its search folder and SearchSettings."""
    from trainer.training.gpu_check import GpuCheckConfig
    from trainer.tuning import tune_config

    train = {f.name for f in dataclasses.fields(TrainConfig)}
    tune = {f.name for f in dataclasses.fields(tune_config.TuneOptions)}
    assert tune - train == {"tuner_dir", *tune_config.SEARCH_FIELDS}
    check = {f.name for f in dataclasses.fields(GpuCheckConfig)}
    assert check - train == {"models", "steps", "input_batches", "image_size", "synthetic_records", "output_json"}


def test_the_search_settings_flags_are_made_from_their_fields():
    """pcam-tune's own settings (tuner, space, ...) are SearchSettings fields with their help and choices; a search
    built from their flags' defaults equals one built with the library's defaults."""
    from trainer.tuning import tune_config

    fv = flags.FlagValues()
    cli.define(fv, tune_config.SearchSettings)
    fv(["prog", "--tuner=hyperband"])
    settings = cli.values(fv, tune_config.SearchSettings)
    assert set(settings) == set(tune_config.SEARCH_FIELDS)
    assert tune_config.TuneConfig.of("t", "d", **settings) == tune_config.TuneConfig.of("t", "d", tuner="hyperband")
    space = next(f for f in dataclasses.fields(tune_config.SearchSettings) if f.name == "space")
    assert fv["space"].help.endswith(space.metadata["help"])
