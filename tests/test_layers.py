"""The import layers of the project, read from the source (every import, those inside functions included).

    pcam_tfds.core      the rules: neither Beam (but for remote paths, in fileio), TensorFlow, TFDS, Keras nor
                        any other package of the project
    beam_jobs           Beam jobs over the rules: imports pcam_tfds.core only
    pcam_tfds           the builders and the local executor: Beam (beam_jobs) only inside the Beam path's functions
    trainer             TensorFlow and Keras: pcam_tfds.core and the shared command plumbing (pcam_tfds.cli)

So no package imports one that imports it back, and a local build or the trainer never loads Beam
(tests/test_no_beam.py checks the second at run time).
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pcam_tfds", "beam_jobs", "trainer")
HEAVY = ("apache_beam", "tensorflow", "tensorflow_datasets", "keras")


def _layer(module: str) -> str | None:
    if module == "pcam_tfds.core" or module.startswith("pcam_tfds.core."):
        return "core"
    return next((p for p in PACKAGES if module == p or module.startswith(p + ".")), None)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported name, at module level) for every import in PATH; `from a import b` gives a.b."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.extend((name, id(node) in top) for name in names)
    return found


def _modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield ".".join(path.relative_to(ROOT).with_suffix("").parts), path


MODULES = dict(_modules())


def _edges() -> dict[tuple[str, str], list[str]]:
    edges = collections.defaultdict(list)
    for module, path in MODULES.items():
        for name, _ in _imports(path):
            target = _layer(name)
            if target and target != _layer(module):
                edges[(_layer(module), target)].append(f"{module} imports {name}")
    return edges


def test_the_layers_have_no_cycle():
    graph = collections.defaultdict(set)
    for a, b in _edges():
        graph[a].add(b)

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    cycles = [layer for layer in ("core", *PACKAGES) if reaches(layer, layer)]
    assert cycles == [], f"import cycles through {cycles}: {dict(_edges())}"


def _offending(layer: str, allowed) -> list[str]:
    bad = []
    for module, path in MODULES.items():
        if _layer(module) != layer:
            continue
        bad += [f"{module} imports {name}" for name, at_top in _imports(path) if not allowed(name, at_top)]
    return bad


def _is(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_core_imports_no_heavy_package_and_nothing_of_the_project_outside_itself():
    def allowed(name, at_top):  # Beam's FileSystems for remote paths, inside a function (fileio.filesystems)
        remote = _is(name, "apache_beam.io.filesystems") and not at_top
        return _layer(name) in (None, "core") and (remote or not _is(name, *HEAVY))

    assert _offending("core", allowed) == []
    beam_users = {m for m, path in MODULES.items() if _layer(m) == "core" for n, _ in _imports(path) if _is(n, *HEAVY)}
    assert beam_users == {"pcam_tfds.core.fileio"}


def test_beam_jobs_use_only_the_core_of_pcam_tfds():
    def allowed(name, _):
        return _layer(name) in (None, "core", "beam_jobs") and not _is(name, "tensorflow", "keras")

    assert _offending("beam_jobs", allowed) == []


def test_pcam_tfds_loads_beam_only_inside_the_beam_paths_functions():
    def allowed(name, at_top):
        if _layer(name) == "trainer":
            return False
        return not (at_top and (_is(name, "apache_beam") or _layer(name) == "beam_jobs"))

    assert _offending("pcam_tfds", allowed) == []


def test_the_trainer_uses_the_core_and_the_command_plumbing_only():
    def allowed(name, _):
        if _is(name, "apache_beam") or _layer(name) == "beam_jobs":
            return False
        return _layer(name) != "pcam_tfds" or _is(name, "pcam_tfds.cli")

    assert _offending("trainer", allowed) == []


@pytest.mark.parametrize(
    "source, layer_rule, expected",
    [
        ("import apache_beam\n", "core", ["m imports apache_beam"]),
        ("def f():\n    from beam_jobs import build_steps\n", "pcam_tfds", []),
        ("from beam_jobs import build_steps\n", "pcam_tfds", ["m imports beam_jobs.build_steps"]),
    ],
)
def test_the_scan_finds_imports_at_module_level_and_in_functions(tmp_path, source, layer_rule, expected):
    """The checks above would pass on a scanner that saw nothing; this one shows what it sees."""
    path = tmp_path / "m.py"
    path.write_text(source)
    found = _imports(path)
    if layer_rule == "core":
        bad = [f"m imports {n}" for n, _ in found if _is(n, *HEAVY)]
    else:
        bad = [f"m imports {n}" for n, top in found if top and _layer(n) == "beam_jobs"]
    assert bad == expected
