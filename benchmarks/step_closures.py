"""How much of the package each cached step's key covers: the modules whose bytes recompute it when edited.

    .venv/bin/python benchmarks/step_closures.py

One line per step (`bertbuild.tasks.cached_steps`): the number of bertbuild
modules in its code key (the import closure of the modules it declares, plus
its task module's own file), and any of them that is reporting, publishing or
the command line, which no step that computes may reach.
"""

from __future__ import annotations

from pathlib import Path

import bertbuild
from bertbuild.code_closure import source_closure
from bertbuild.tasks import cached_steps

ROOT = Path(bertbuild.__file__).resolve().parent
# What only presents or ships results: editing it must recompute nothing.
PRESENTATION = ("reporting/", "artifacts/", "tasks/publish.py", "flows/", "commands/", "cli.py", "fleet/")


def step_modules(step) -> list[str]:
    """The package-relative source files in `step`'s code key."""
    import importlib

    files = set(source_closure(importlib.import_module(m) for m in step.code))
    files |= {Path(importlib.import_module(m).__file__).resolve() for m in step.wiring}
    return sorted(str(f.relative_to(ROOT)) for f in files)


def presentation_reached(step) -> list[str]:
    return [m for m in step_modules(step) if m.startswith(PRESENTATION)]


def main() -> None:
    total = sum(1 for _ in ROOT.rglob("*.py"))
    print(f"{'step':15} {'modules':>9}  reaches presentation")
    for name, step in sorted(cached_steps().items()):
        print(f"{name:15} {len(step_modules(step)):>4}/{total}  {', '.join(presentation_reached(step)) or '-'}")


if __name__ == "__main__":
    main()
