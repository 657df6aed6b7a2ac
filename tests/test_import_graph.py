"""The package's structure: every module imports, no import cycle between modules or between packages,
no private name imported across modules.

Packages (`bertbuild.artifacts`, ...) and top-level modules (`bertbuild.config`) are the floors of the
layout: with no cycle between them they stack in layers, each importing only those below it.

The graph is read from the source with `ast`, function-local imports
included: a cycle hidden behind a lazy import is still a cycle (it only
moves the failure from import time to the first call). `from pkg import mod`
is an edge to the submodule `pkg.mod`, as import-graph tools count it.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import bertbuild
from bertbuild._lazy import is_installed
from bertbuild.code_closure import statements
from bertbuild.errors import MissingDependency

ROOT = Path(bertbuild.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, line) for every bertbuild import in `path`, at any depth
    (read by `code_closure.statements`, the reader the step keys use)."""
    found = []
    for base, names, line in statements(path.read_text(), name, path.name == "__init__.py"):
        if not names:
            found.append((base, [], line))
        for alias in names:
            submodule = f"{base}.{alias}"
            found.append((submodule, [], line) if submodule in modules else (base, [alias], line))
    return [(target, names, line) for target, names, line in found if target.split(".")[0] == "bertbuild"]


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the modules it imports, and every private name imported from another module."""
    modules = _modules()
    edges: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        for target, names, line in _imports(name, path, modules):
            while target and target not in modules:  # `import bertbuild.x.y` of a name inside x.y
                target = target.rpartition(".")[0]
            if target and target != name:
                edges[name].add(target)
            private += [f"{path.relative_to(ROOT.parent)}:{line} imports {n} from {target}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path per cycle found by depth-first search (a -> b -> ... -> a)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return cycles


def test_every_module_imports():
    names = sorted(info.name for info in pkgutil.walk_packages(bertbuild.__path__, "bertbuild."))
    assert set(names) | {"bertbuild"} == set(_modules())
    for name in names:
        try:
            importlib.import_module(name)
        except MissingDependency:  # an optional extra (tf) not installed: that module says how to get it
            assert not is_installed("tensorflow"), name


def test_no_import_cycle_and_no_private_name_across_modules():
    edges, private = _graph()
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
    assert not private, "private names imported across modules:\n" + "\n".join(private)


def _floor(module: str) -> str:
    """The package or top-level module a module belongs to: bertbuild.artifacts.store -> bertbuild.artifacts."""
    return ".".join(module.split(".")[:2])


def _package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """Floor -> the floors it imports (the package `bertbuild` itself, which holds no code, left out)."""
    floors: dict[str, set[str]] = {}
    for source, targets in edges.items():
        if source == "bertbuild":
            continue
        floors.setdefault(_floor(source), set())
        for target in targets:
            if target != "bertbuild" and _floor(target) != _floor(source):
                floors[_floor(source)].add(_floor(target))
    for targets in list(floors.values()):
        for target in targets:
            floors.setdefault(target, set())
    return floors


def test_no_import_cycle_between_packages():
    edges, _ = _graph()
    floors = _package_edges(edges)
    cycles = _cycles(floors)
    witnesses = {(a, b): sorted(f"{s} -> {t}" for s, ts in edges.items() for t in ts
                                if _floor(s) == a and _floor(t) == b) for a in floors for b in floors[a]}
    assert not cycles, "package cycles:\n" + "\n".join(
        " -> ".join(cycle) + "\n    " + "; ".join(witnesses[(x, y)][0] for x, y in zip(cycle, cycle[1:]))
        for cycle in cycles)


def test_the_lowest_floors_import_nothing_of_the_domain():
    """The config, the shared names, the cache's entries and the step cache sit below every domain package."""
    edges, _ = _graph()
    floors = _package_edges(edges)
    leaves = {"bertbuild.kinds", "bertbuild.shapes", "bertbuild.locations", "bertbuild.errors",
              "bertbuild.content_cache"}
    assert floors["bertbuild.config"] <= leaves, floors["bertbuild.config"]
    assert all(not floors[leaf] - {"bertbuild.errors"} for leaf in leaves), {leaf: floors[leaf] for leaf in leaves}
    domain = {"bertbuild.artifacts", "bertbuild.evaluation", "bertbuild.backends", "bertbuild.precision",
              "bertbuild.tasks", "bertbuild.flows", "bertbuild.commands", "bertbuild.runs"}
    assert not floors["bertbuild.step_cache"] & domain, floors["bertbuild.step_cache"]


def test_package_floors_are_found_across_modules():
    """The package check itself: a ring through two packages is a cycle even when no module cycle exists."""
    edges = {"bertbuild.a.x": {"bertbuild.b.y"}, "bertbuild.b.y": set(), "bertbuild.b.z": {"bertbuild.a.w"},
             "bertbuild.a.w": set()}
    assert not _cycles(edges)
    assert _cycles(_package_edges(edges)) == [["bertbuild.a", "bertbuild.b", "bertbuild.a"]]


def test_the_check_sees_lazy_imports_and_relative_ones(tmp_path):
    """The reader itself: a cycle closed by a function-local or relative import is found."""
    package = tmp_path / "bertbuild" / "demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from bertbuild.demo import b\n")
    (package / "b.py").write_text("def f():\n    from . import a\n    from .a import _hidden\n")
    modules = {"bertbuild.demo": package / "__init__.py", "bertbuild.demo.a": package / "a.py",
               "bertbuild.demo.b": package / "b.py"}
    found = {name: [(t, n) for t, n, _ in _imports(name, path, modules)] for name, path in modules.items()}
    assert found["bertbuild.demo.a"] == [("bertbuild.demo.b", [])]
    assert found["bertbuild.demo.b"] == [("bertbuild.demo.a", []), ("bertbuild.demo.a", ["_hidden"])]
    edges = {"bertbuild.demo.a": {"bertbuild.demo.b"}, "bertbuild.demo.b": {"bertbuild.demo.a"}}
    assert _cycles(edges) == [["bertbuild.demo.a", "bertbuild.demo.b", "bertbuild.demo.a"]]


# The layers that compute: presentation (`bertbuild.reporting`) sits above them, so none of them may import it.
COMPUTING = ("evaluation", "artifacts", "precision", "backends", "model", "fuse", "squad", "fetch", "serving",
             "runs", "step_cache", "config")


def test_no_computing_module_imports_reporting():
    edges, _ = _graph()
    below = [name for name in edges if name.split(".")[1:2] and name.split(".")[1] in COMPUTING]
    offending = [f"{name} imports {target}" for name in sorted(below) for target in sorted(edges[name])
                 if target == "bertbuild.reporting" or target.startswith("bertbuild.reporting.")]
    assert below and not offending, "\n".join(offending)


def test_the_artifacts_package_imports_nothing():
    """Importing one artifacts module must not load the others (and the store's fsspec) with it."""
    edges, _ = _graph()
    assert edges["bertbuild.artifacts"] == set()
