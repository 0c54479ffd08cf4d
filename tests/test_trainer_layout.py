"""The trainer's shape: no import cycle among its modules (imports inside functions and the model registry's
lazy imports by name included), modules of at most 450 lines, a docstring on every package."""

from __future__ import annotations

import ast

from cli_runs import REPO

TRAINER = REPO / "trainer"


def _modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(TRAINER.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = ast.parse(path.read_text())
    return modules


def _imports(tree: ast.Module, modules: dict) -> set[str]:
    """The trainer modules `tree` imports: anywhere but under `if TYPE_CHECKING:`, and named in a string by a
    module that imports by name (importlib)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    by_name = "importlib" in ast.unparse(tree)
    names = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in modules else node.module)
        elif by_name and isinstance(node, ast.Constant) and node.value in modules:
            names.add(node.value)
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_trainer_modules():
    modules = _modules()
    graph = {name: _imports(tree, modules) - {name} for name, tree in modules.items()}
    assert graph["trainer.models"] >= {"trainer.models.baseline", "trainer.models.p4m"}  # the registry is read
    assert _cycles(graph) == []


def test_no_trainer_module_is_over_450_lines():
    long = {str(p.relative_to(REPO)): n for p in TRAINER.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_every_trainer_package_says_what_it_is():
    for init in TRAINER.rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), init
