"""The source files a module can import from its own package: the code a cached step's result depends on.

A step's cache key covers the bytes of every module of the package that its
code can reach, found by reading `import` statements (at the top and inside
functions: this project imports heavy modules lazily) and following them
transitively. A list kept by hand falls behind the first time someone moves a
helper; the closure cannot.

Written here because importlib and modulefinder answer a different question:
`sys.modules` holds what ran so far (not what could run), and `modulefinder`
executes nothing but walks the whole standard library and every third-party
package too, seconds per step, where only our own package changes between runs.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Iterable


def source_closure(modules: Iterable[ModuleType]) -> list[Path]:
    """Every source file of the modules' own top-level package(s) they can import, sorted, the modules included."""
    seen: set[Path] = set()
    todo: list[tuple[str, Path]] = []
    for module in modules:
        top = module.__name__.partition(".")[0]
        root = _package_root(top)
        todo.append((top, Path(module.__file__).resolve()))
        if root is not None:
            todo.extend((top, init) for init in _parent_inits(module.__name__, root))
    while todo:
        top, path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        root = _package_root(top)
        if root is None:
            continue
        info = path.stat()
        for name in _imported_names(str(path), info.st_size, info.st_mtime_ns, _module_name(path, root, top)):
            if name == top or name.startswith(top + "."):
                todo.extend((top, found) for found in _files_of(name, root, top))
    return sorted(seen)


def _package_root(top: str) -> Path | None:
    """The folder of top-level package `top` (None for a plain module, which imports nothing of ours)."""
    package = sys.modules.get(top)
    if package is None or getattr(package, "__path__", None) is None:
        return None
    return Path(next(iter(package.__path__))).resolve()


def _module_name(path: Path, root: Path, top: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([top, *parts])


def _parent_inits(name: str, root: Path) -> list[Path]:
    """Importing a.b.c runs a/__init__.py and a/b/__init__.py first."""
    parts = name.split(".")[1:-1]
    return [p for i in range(len(parts) + 1) if (p := root.joinpath(*parts[:i], "__init__.py")).is_file()]


def _files_of(name: str, root: Path, top: str) -> list[Path]:
    """The file that defines module `name` (and its packages' __init__ files); `from a import b` may name a module."""
    relative = name.split(".")[1:]
    found = []
    for candidate in (root.joinpath(*relative).with_suffix(".py") if relative else None,
                      root.joinpath(*relative, "__init__.py")):
        if candidate is not None and candidate.is_file():
            found.append(candidate.resolve())
    found += _parent_inits(name + ".x", root) if found else []
    return found


def statements(source: bytes | str, module_name: str, is_package: bool) -> list[tuple[str, tuple[str, ...], int]]:
    """Every import statement in a module's source, at any depth: (module, names imported from it, line).

    `import a.b` gives ("a.b", (), line); `from .x import y, z` gives the absolute x with ("y", "z"). The one
    reader of imports: the step keys follow it, and the import-graph test draws the package's layers with it.
    """
    package = module_name if is_package else module_name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this file's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.append((base, tuple(alias.name for alias in node.names), node.lineno))
    return found


@lru_cache(maxsize=1024)
def _imported_names(path: str, size: int, mtime_ns: int, module_name: str) -> tuple[str, ...]:
    """Dotted names a source file imports anywhere in it (each `from x import y` gives x and x.y)."""
    names: list[str] = []
    for base, imported, _ in statements(Path(path).read_bytes(), module_name, path.endswith("__init__.py")):
        names += [base, *(f"{base}.{name}" for name in imported if name != "*")]
    return tuple(names)
