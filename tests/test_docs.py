"""The docs stay true: every flag a fenced command in README.md, docs/*.md and BUILD.md uses exists in that
command, every `make` target and variable exists, and every relative link points at a file and heading.

A command's flags are read from the command itself, run once with `--helpfull` (absl) or `--help` (argparse),
so the test follows the flags wherever the code defines them. A failure names the line:
"README.md line 42: pcam-validate has no flag --data_dir".
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_runs import REPO

COMMAND_DOCS = ["README.md", "BUILD.md", *sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))]
LINK_DOCS = [*COMMAND_DOCS, "ARCHITECTURE.md"]
README_MAX_LINES = 160

# Fenced blocks read as shell: ```sh, ```bash, ```shell, ```console (only its `$ ` lines) and bare ```.
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
# Commands the docs name that are not this project's: skipped, on purpose. Anything else unknown fails.
OTHER_COMMANDS = {
    "pip",  # installing
    "git",
    "kaggle",  # downloading the competition's files
    "gsutil",
    "gunzip",
    "unzip",
    "docker",  # worker images, job servers, TF Serving
    "curl",  # a request to TF Serving
    "kubectl",
    "export",  # TF_CONFIG for multi-worker training
    ".",  # . .venv/bin/activate
    "source",
    "cd",
    "tensorboard",
}
# `python -m` modules from other packages.
OTHER_MODULES = {
    "build",  # python -m build --sdist
    "pip",
    "venv",
    "pytest",
    "apache_beam.runners.worker.worker_pool_main",
    "apache_beam.runners.portability.local_job_service_main",
}
PROJECT_PACKAGES = {"beam_jobs", "pcam_tfds", "trainer"}
PYTHONS = {"python", "python3", "python3.11", ".venv/bin/python"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
ENV = {
    **os.environ,
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
}


# --- Reading the docs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    argv: tuple[str, ...]  # without the environment assignments before it

    def where(self) -> str:
        return f"{self.doc} line {self.line}"


def fenced_blocks(text: str) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """(language, [(line number, line), ...]) of each fenced code block of a Markdown text."""
    lang, body = None, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*(```|~~~)\s*([\w+-]*)", line)
        if fence and lang is None:
            lang, body = fence.group(2).lower(), []
        elif fence and not fence.group(2):
            yield lang, body
            lang = None
        elif lang is not None:
            body.append((number, line))


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def logical_lines(lang: str, body: list[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """(first line number, tokens) of each shell line: `\\` continuations joined, a quote left open runs on."""
    pending, start = "", 0
    for number, line in body:
        if not pending:
            if lang == "console":
                if not line.lstrip().startswith("$ "):
                    continue
                line = line.lstrip()[2:]
            start = number
        text = pending + line
        if text.rstrip().endswith("\\"):
            pending = text.rstrip()[:-1] + " "
            continue
        try:
            tokens = _tokens(text)
        except ValueError:  # "No closing quotation": the quoted text goes on on the next line
            pending = text + "\n"
            continue
        pending = ""
        if tokens:
            yield start, tokens
    if pending:  # a quote never closed, or a `\\` on the block's last line
        yield start, []


def split_commands(tokens: list[str]) -> Iterator[list[str]]:
    """The simple commands of a shell line (split at && || ; | &), redirections and env assignments dropped."""
    command, skip_next = [], False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in SEPARATORS:
            if command:
                yield command
            command = []
        elif token.startswith((">", "<")):
            skip_next = True
        elif not command and ENV_ASSIGNMENT.match(token):
            continue
        else:
            command.append(token)
    if command:
        yield command


def doc_commands(doc: str, text: str) -> Iterator[Command]:
    for lang, body in fenced_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for line, tokens in logical_lines(lang, body):
            if not tokens:
                yield Command(doc, line, ())
            for argv in split_commands(tokens):
                yield Command(doc, line, tuple(argv))


def flags_used(args: tuple[str, ...] | list[str]) -> list[str]:
    """`--name` of every `--name`, `--name=value` and `[--name]`; a bare `--` ends the flags."""
    names = []
    for arg in args:
        arg = arg.strip("[]")
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            names.append(arg[2:].split("=", 1)[0])
    return names


# --- What the commands accept --------------------------------------------------------------------------------


def console_scripts() -> dict[str, str]:
    """{"pcam-train": "trainer.__main__:main", ...} from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def module_file(module: str) -> Path | None:
    base = REPO / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__main__.py"):
        if path.is_file():
            return path
    return None


def parse_absl_help(text: str) -> set[str]:
    """Flag names of absl's --helpfull: `  --name: ...`, `  --[no]name: ...` (both spellings), `  -v,--name: ...`."""
    names = set()
    for no, name in re.findall(r"^  (?:-\S,)?--(\[no\])?([\w-]+):", text, re.M):
        names |= {name, f"no{name}"} if no else {name}
    return names


def parse_argparse_help(text: str) -> set[str]:
    """Flag names of argparse's --help: the option lines (`  -c X, --config X   help`) after `options:`."""
    names, in_options = set(), False
    for line in text.splitlines():
        if re.match(r"^(options|optional arguments):", line):
            in_options = True
        option = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if in_options and option:
            names |= set(re.findall(r"--([A-Za-z0-9][\w-]*)", option.group(1)))
    return names


@dataclass(frozen=True)
class Flags:
    """What a command accepts; `error` instead when its help could not be read."""

    names: frozenset[str] = frozenset()
    error: str = ""


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300, check=False)


def read_flags(prefix: list[str], beam_job: bool) -> Flags:
    """The flags of the command PREFIX (an argv without arguments) from its own help; a Beam job also takes every
    Beam pipeline option (it hands the flags it does not know to PipelineOptions)."""
    proc = _run([*prefix, "--help"])
    if "Try --helpfull to get a list of all flags." in proc.stdout:  # absl: --help lists the main module's alone
        proc = _run([*prefix, "--helpfull"])
        names = parse_absl_help(proc.stdout)
    else:
        names = parse_argparse_help(proc.stdout)
    if proc.returncode != 0 or not names:
        return Flags(error=f"its help exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    if beam_job:
        names |= beam_options()
    return Flags(frozenset(names))


_BEAM_OPTIONS = """
from apache_beam.options import pipeline_options
# As PipelineOptions.get_all_options builds its parser: every registered options class on Beam's parser.
parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)
for cls in pipeline_options.PipelineOptions.__subclasses__():
    cls._add_argparse_args(parser)
print("\\n".join(s for action in parser._actions for s in action.option_strings))
"""


def beam_options() -> set[str]:
    proc = _run([sys.executable, "-c", _BEAM_OPTIONS])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {s[2:] for s in proc.stdout.split() if s.startswith("--")}


def is_beam_job(module: str) -> bool:
    """A Beam job parses its own flags with parse_known_args and hands the rest to PipelineOptions (STYLE.md)."""
    path = module_file(module)
    return path is not None and "parse_known_args" in path.read_text()


@dataclass(frozen=True)
class Target:
    """A command the docs name, and the argv that runs its help."""

    name: str  # as the failure messages call it: "pcam-train", "python -m trainer", "tfds build"
    prefix: tuple[str, ...]
    beam_job: bool


def script_target(name: str, entry_point: str) -> Target:
    # The entry point itself, not .venv/bin/NAME, so a script setup.cfg gained since the last install is found.
    module, func = entry_point.split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {func}; sys.exit({func}())"
    return Target(name, (sys.executable, "-c", code), is_beam_job(module))


def makefile() -> tuple[set[str], set[str]]:
    """(targets, variables) of the Makefile; a variable is one it assigns or one a recipe reads."""
    text = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.M))
    variables = set(re.findall(r"^([A-Za-z_]\w*)\s*[?:+]?=", text, re.M)) | set(
        re.findall(r"\$\(([A-Z_][A-Z0-9_]*)\)", text)
    )
    return targets, variables


# --- Checking one command ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What to check of one doc command: its target's flags, or a problem found without running anything."""

    command: Command
    target: Target | None = None
    args: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def classify(command: Command, scripts: dict[str, str], make: tuple[set[str], set[str]]) -> Check | None:
    """The check of COMMAND; None for a command that is not this project's (OTHER_COMMANDS)."""
    where = command.where()
    if not command.argv:
        return Check(command, problems=(f"{where}: a quote or a `\\` continuation is never closed",))
    program, *args = command.argv
    if program.startswith("pcam-"):
        if program not in scripts:
            return Check(command, problems=(f"{where}: {program} is not a console script in setup.cfg",))
        return Check(command, script_target(program, scripts[program]), tuple(args))
    if program in PYTHONS or program.endswith("/python"):
        if "-m" not in args or args.index("-m") + 1 >= len(args):
            return Check(
                command, problems=(f"{where}: `{shlex.join(command.argv)}`: only `python -m MODULE` is checked",)
            )
        module, rest = args[args.index("-m") + 1], args[args.index("-m") + 2 :]
        if module in OTHER_MODULES:
            return None
        if module.split(".")[0] not in PROJECT_PACKAGES:
            return Check(
                command, problems=(f"{where}: python -m {module}: not this project's; add it to OTHER_MODULES",)
            )
        if module_file(module) is None:
            return Check(command, problems=(f"{where}: python -m {module}: no such module",))
        target = Target(f"python -m {module}", (sys.executable, "-m", module), is_beam_job(module))
        return Check(command, target, tuple(rest))
    if program == "tfds":
        if args[:1] != ["build"]:
            return Check(command, problems=(f"{where}: tfds {' '.join(args[:1])}: only `tfds build` is checked",))
        tfds = str(Path(sys.executable).with_name("tfds"))
        return Check(command, Target("tfds build", (tfds, "build"), False), tuple(args[1:]))
    if program == "make":
        targets, variables = make
        problems = []
        for arg in args:
            if ENV_ASSIGNMENT.match(arg):
                if arg.split("=")[0] not in variables:
                    problems.append(f"{where}: the Makefile has no variable {arg.split('=')[0]}")
            elif not arg.startswith("-") and arg not in targets:
                problems.append(f"{where}: the Makefile has no target {arg}")
        return Check(command, problems=tuple(problems))
    if program in OTHER_COMMANDS:
        return None
    unknown = (
        f"{where}: unknown command {program!r}: add it to OTHER_COMMANDS if it is not this project's, "
        "or fence the block as ```text if it is not a command"
    )
    return Check(command, problems=(unknown,))


def problems_of(check: Check, flags: dict[Target, Flags]) -> list[str]:
    if check.problems or check.target is None:
        return list(check.problems)
    used = flags_used(check.args)
    if not used:
        return []
    accepted = flags[check.target]
    if accepted.error:
        return [f"{check.command.where()}: {check.target.name}: {accepted.error}"]
    return [
        f"{check.command.where()}: {check.target.name} has no flag --{name}"
        for name in used
        if name not in accepted.names
    ]


def all_checks() -> dict[str, list[Check]]:
    scripts, make = console_scripts(), makefile()
    checks = {}
    for doc in COMMAND_DOCS:
        found = (classify(c, scripts, make) for c in doc_commands(doc, (REPO / doc).read_text()))
        checks[doc] = [c for c in found if c is not None]
    return checks


@pytest.fixture(scope="module")
def checks() -> dict[str, list[Check]]:
    return all_checks()


@pytest.fixture(scope="module")
def flags(checks) -> dict[Target, Flags]:
    """Each named command's flags, its help read once; the commands side by side (most of the time is imports)."""
    targets = sorted({c.target for found in checks.values() for c in found if c.target and flags_used(c.args)}, key=str)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(targets, pool.map(lambda t: read_flags(list(t.prefix), t.beam_job), targets), strict=True))


# --- Tests ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", COMMAND_DOCS)
def test_every_command_in_the_docs_uses_flags_it_has(doc, checks, flags):
    assert checks[doc], f"{doc}: no command found in its fenced blocks"
    problems = [p for check in checks[doc] for p in problems_of(check, flags)]
    assert not problems, "\n" + "\n".join(problems)


def test_the_check_finds_a_wrong_flag_a_missing_command_and_a_missing_target():
    text = "\n".join(
        [
            "# Title",
            "```sh",
            "pcam-compare runs/* --output_dir=results --no_such_flag  # comment --not_a_flag",
            "pcam-nothing --x",
            "PYTHON=python3.11 make demo && make no-such-target NO_SUCH_VAR=1",
            "```",
            "```console",
            "$ pcam-compare \\",
            "    --output_dir=x",
            "an output line --not_a_flag",
            "```",
        ]
    )
    scripts, make = console_scripts(), makefile()
    found = [classify(c, scripts, make) for c in doc_commands("x.md", text)]
    assert [c.command.line for c in found] == [3, 4, 5, 5, 8]
    compare = found[0].target
    flags = {compare: read_flags(list(compare.prefix), compare.beam_job)}
    problems = [p for check in found for p in problems_of(check, flags)]
    assert problems == [
        "x.md line 3: pcam-compare has no flag --no_such_flag",
        "x.md line 4: pcam-nothing is not a console script in setup.cfg",
        "x.md line 5: the Makefile has no target no-such-target",
        "x.md line 5: the Makefile has no variable NO_SUCH_VAR",
    ]


def test_command_lines_are_split_as_a_shell_splits_them():
    body = list(enumerate(["A=1 pcam-build --x='a b' \\", "  --y=2 | tee log; make demo", "curl -d '{", "}' url"], 1))
    commands = [argv for _, tokens in logical_lines("sh", body) for argv in split_commands(tokens)]
    assert commands == [
        ["pcam-build", "--x=a b", "--y=2"],
        ["tee", "log"],
        ["make", "demo"],
        ["curl", "-d", "{\n}", "url"],
    ]
    assert flags_used(["--a=1", "[--b]", "-c", "pos", "--noflag", "--", "--after"]) == ["a", "b", "noflag"]


def test_the_readme_shows_every_console_script(checks):
    shown = {c.command.argv[0] for c in checks["README.md"]}
    missing = sorted(set(console_scripts()) - shown)
    assert not missing, f"README.md's path through the toolkit has no example of {', '.join(missing)}"


def test_readme_fits_a_newcomer():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md has {len(lines)} lines; the guides in docs/ take the rest"


# --- Links ---------------------------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation but - and _ dropped, spaces as -."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text()
    in_code = {number for _, body in fenced_blocks(text) for number, _ in body}
    found, counts = set(), {}
    for number, line in enumerate(text.splitlines(), 1):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and number not in in_code:
            anchor = github_anchor(heading.group(1))
            count = counts.get(anchor, 0)  # GitHub numbers a repeated heading: x, x-1, x-2
            found.add(f"{anchor}-{count}" if count else anchor)
            counts[anchor] = count + 1
    return found


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every inline and reference link outside code."""
    in_code = {number for _, body in fenced_blocks(text) for number, _ in body}
    for number, line in enumerate(text.splitlines(), 1):
        if number in in_code:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line):
            yield number, target
        reference = re.match(r"^\s*\[[^\]]+\]:\s*(\S+)", line)
        if reference:
            yield number, reference.group(1)


@pytest.mark.parametrize("doc", LINK_DOCS)
def test_every_relative_link_points_at_a_file_and_heading(doc):
    source = REPO / doc
    problems = []
    for number, target in links(source.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (source.parent / path_part).resolve() if path_part else source
        if not path.exists():
            problems.append(f"{doc} line {number}: {target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{doc} line {number}: {target}: {path.relative_to(REPO)} has no heading #{anchor}")
    assert not problems, "\n" + "\n".join(problems)
