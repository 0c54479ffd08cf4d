"""The console scripts of setup.cfg: every command has one, each starts, and a user's mistake is one line and status 2."""

from __future__ import annotations

import configparser
import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cli_runs import REPO

COMMANDS = {
    "pcam-validate": "beam_jobs.validate",
    "pcam-stats": "beam_jobs.stats",
    "pcam-eda": "beam_jobs.eda",
    "pcam-synthetic": "pcam_tfds.synthetic",
    "pcam-build": "pcam_tfds.build",
    "pcam-train": "trainer.__main__",
    "pcam-predict": "trainer.inference.predict",
    "pcam-evaluate": "trainer.inference.evaluate",
    "pcam-tune": "trainer.tuning.tune",
    "pcam-compare": "trainer.evaluation.compare",
    "pcam-export": "trainer.inference.export",
    "pcam-slide": "trainer.slides",
    "pcam-gpu-check": "trainer.training.gpu_check",
}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _declared() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=")) for line in lines)


# pip's wrapper of a console script (what `pip install -e .` writes into the environment's bin/).
_WRAPPER = """#!{python}
import sys
from {module} import {function}
if __name__ == '__main__':
    sys.exit({function}())
"""


@functools.cache
def _scripts() -> Path:
    """The console scripts of this checkout's setup.cfg, written as pip writes them: the ones installed in bin/
    may come from another checkout or an older install of it (pip install -e . refreshes them)."""
    folder = Path(tempfile.mkdtemp(prefix="pcam-console-scripts-"))
    for name, target in _declared().items():
        module, function = target.split(":")
        path = folder / name
        path.write_text(_WRAPPER.format(python=sys.executable, module=module, function=function))
        path.chmod(0o755)
    return folder


def _script(name: str) -> str:
    return str(_scripts() / name)


def _run(*args: str, env=ENV) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=REPO, env=env, check=False)


def test_every_command_has_a_console_script_with_a_main():
    assert _declared() == {name: f"{module}:main" for name, module in COMMANDS.items()}


def test_every_console_script_starts_and_shows_its_help():
    # All at once: most of the time is importing, which the processes do side by side.
    procs = {
        name: subprocess.Popen(
            [_script(name), "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV
        )
        for name in COMMANDS
    }
    failed = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0 or "--" not in out:
            failed[name] = f"exit {proc.returncode}: {err[-1000:]}"
    assert not failed, failed


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["pcam-predict", "--output=s.csv", "--data_dir=d"], "--model_dir"),
        (["pcam-predict", "--model_dir=r", "--output=s.csv", "--data_dir=d", "--input_dir=i"], "input_dir"),
        (["pcam-predict", "--model_dir", "r1", "r2", "--output=s.csv", "--data_dir=d", "--hard_labels=f1"], "ensemble"),
        (["pcam-predict", "--model_dir=r", "--output=s.csv", "--data_dir=d", "--batch_size=0"], "--batch_size"),
        (["pcam-compare", "--output_dir=out"], "run folders"),
        (["pcam-export", "--model_dir=r"], "--output_dir"),
        (["pcam-slide", "--slide=s.svs", "--output_dir=out"], "--model_dir"),
        (["pcam-evaluate", "--output_dir=out"], "--model_dir"),
        (["pcam-tune", "--data_dir=d"], "--tuner_dir"),
        (["pcam-train", "--model=baseline", "--data_dir=d", "--model_dir=m", "--augment=heavy"], "--augment"),
    ],
    ids=["missing", "exclusive", "threshold", "range", "no-runs", "export", "slide", "evaluate", "tune", "train"],
)
def test_a_user_mistake_is_one_line_and_status_2(args, named):
    proc = _run(_script(args[0]), *args[1:])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], lines


@pytest.mark.parametrize("command", ["pcam-validate", "pcam-stats", "pcam-eda"])
def test_the_kaggle_folder_is_manual_dir_and_data_dir_is_refused_in_one_line(command, tmp_path, capsys):
    """--data_dir is the TFDS data folder in every command; the jobs that read the Kaggle-layout folder take it as
    --manual_dir, as pcam-build does, and refuse --data_dir (not hand it to Beam as an unknown option)."""
    import importlib

    refused = f"{command}: --data_dir names a TFDS data folder; give the Kaggle-layout folder as --manual_dir"
    out = tmp_path / "out"
    proc = _run(_script(command), f"--data_dir={tmp_path}", f"--output_dir={out}")
    assert (proc.returncode, proc.stderr.strip().splitlines(), proc.stdout) == (2, [refused], ""), proc.stderr[-2000:]
    assert not out.exists()
    parse_args = importlib.import_module(COMMANDS[command]).parse_args
    for args in (["--data_dir", str(tmp_path)], [f"--manual_dir={tmp_path}", "--data_dir"], ["--data=x"]):
        with pytest.raises(SystemExit) as e:
            parse_args([*args, f"--output_dir={out}"])
        assert (e.value.code, capsys.readouterr().err) == (2, refused + "\n"), args
    args, beam_args = parse_args([f"--manual_dir={tmp_path}", f"--output_dir={out}"])
    assert (args.manual_dir, beam_args) == (str(tmp_path), []) and not hasattr(args, "data_dir")


def test_pcam_traceback_shows_the_traceback_of_a_user_mistake():
    proc = _run(_script("pcam-compare"), "--output_dir=out", env={**ENV, "PCAM_TRACEBACK": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert "UsageError: give one or more run folders" in proc.stderr


# A trainer command, the function of it that the test replaces by one raising an internal ValueError, its flags.
_INTERNAL = {
    "pcam-train": ("trainer.data", "load_builder", ["--model=baseline", "--data_dir=d", "--model_dir=RUN"]),
    "pcam-tune": ("trainer.tuning.search", "run_search", ["--data_dir=d", "--tuner_dir=RUN"]),
    "pcam-evaluate": ("trainer.inference.evaluate", "evaluate_runs", ["--model_dir=r", "--output_dir=RUN"]),
    "pcam-predict": ("trainer.inference.predict", "prepare", ["--model_dir=r", "--output=s.csv", "--data_dir=d"]),
    "pcam-export": ("trainer.inference.export", "export", ["--model_dir=r", "--output_dir=RUN"]),
    "pcam-compare": ("trainer.evaluation.compare", "compare", ["r", "--output_dir=RUN"]),
    "pcam-gpu-check": ("trainer.training.gpu_check", "check", []),
}
_RAISE = """
import importlib, sys
module = importlib.import_module({module!r})
def boom(*args, **kwargs):
    raise ValueError("internal: a Keras-like ValueError")
setattr(module, {name!r}, boom)
sys.argv = [{command!r}, *{args!r}]
importlib.import_module({main!r}).main()
"""


def test_an_internal_value_error_keeps_its_traceback_and_exits_1(tmp_path):
    procs = {}
    for command, (module, name, args) in _INTERNAL.items():
        args = [a.replace("RUN", str(tmp_path / command)) for a in args]
        code = _RAISE.format(module=module, name=name, command=command, args=args, main=COMMANDS[command])
        procs[command] = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=ENV
        )
    wrong = {}
    for command, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        one_line = [line for line in err.splitlines() if line.startswith("error: ")]
        if proc.returncode != 1 or "Traceback" not in err or "ValueError: internal" not in err or one_line:
            wrong[command] = f"exit {proc.returncode}: {err[-1500:]}"
    assert not wrong, wrong


def test_pcam_traceback_shows_a_user_mistake_of_every_trainer_command(tmp_path):
    mistakes = {
        "pcam-train": ["--model=baseline", "--data_dir=d", f"--model_dir={tmp_path}", "--class_weights=x"],
        "pcam-tune": ["--data_dir=d", f"--tuner_dir={tmp_path}", "--max_trials=0"],
        "pcam-evaluate": ["--model_dir=r", f"--output_dir={tmp_path}"],
        "pcam-predict": ["--model_dir", "r1", "r2", "--output=s.csv", "--data_dir=d", "--hard_labels=f1"],
        "pcam-export": ["--model_dir=r", "--output_dir=out", "extra"],
        "pcam-compare": ["--output_dir=out"],
        "pcam-gpu-check": ["--models=vgg16"],
    }
    env = {**ENV, "PCAM_TRACEBACK": "1"}
    procs = {
        command: subprocess.Popen(
            [_script(command), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
        )
        for command, args in mistakes.items()
    }
    wrong = {}
    for command, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 1 or "Traceback" not in err or "UsageError: " not in err:
            wrong[command] = f"exit {proc.returncode}: {err[-1500:]}"
    assert not wrong, wrong


def test_importing_the_trainer_sets_no_environment_variable():
    code = "import os, trainer, trainer.config, trainer.errors; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=True)
    assert proc.stdout.strip() == "None"
