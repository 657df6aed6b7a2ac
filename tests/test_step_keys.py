"""Every cached step's key covers the code its work runs, and nothing that only presents or ships results.

So editing a report, a plot, the publisher or the CLI recomputes no export,
reference, fusion, INT8 file, engine or score, while editing anything a step
runs recomputes that step (`tests/test_code_closure.py`: the closure follows
lazy and relative imports).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
import textwrap
from pathlib import Path

import pytest

import bertbuild
from bertbuild.code_closure import source_closure
from bertbuild.kinds import STEPS
from bertbuild.steps import CachedStep, Work, cached_step
from bertbuild.tasks import cached_steps

ROOT = Path(bertbuild.__file__).resolve().parent
PRESENTATION = ("reporting/", "artifacts/", "tasks/publish.py", "flows/", "commands/", "cli.py", "fleet/")
COMPUTING = ("export", "reference", "features", "fuse", "fp16", "bf16", "int8_source", "calibration", "int8",
             "sensitivity", "tune", "tune_logits", "tune_agreement", "engine", "evaluation", "validation")


def _key_files(step: CachedStep) -> set[str]:
    files = set(source_closure(importlib.import_module(m) for m in step.code))
    files |= {Path(importlib.import_module(m).__file__).resolve() for m in step.wiring}
    return {str(f.relative_to(ROOT)) for f in files}


def _body_imports(function) -> set[str]:
    """bertbuild modules imported inside `function`, and inside the same module's helpers it calls by name."""
    module = sys.modules[function.__module__]
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    found, helpers = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bertbuild"):
            parent = importlib.import_module(node.module)
            found |= {f"{node.module}.{a.name}" if hasattr(parent, "__path__")
                      and importlib.util.find_spec(f"{node.module}.{a.name}") is not None else node.module
                      for a in node.names}
        elif isinstance(node, ast.Name) and inspect.isfunction(getattr(module, node.id, None)):
            helper = getattr(module, node.id)
            if helper is not function and helper.__module__ == module.__name__:
                helpers.append(helper)
    for helper in helpers:
        found |= _body_imports(helper)
    return found


def test_every_step_has_its_own_name():
    steps = cached_steps()
    assert set(steps) <= set(STEPS)
    assert set(COMPUTING) <= set(steps), set(COMPUTING) - set(steps)


@pytest.mark.parametrize("name", COMPUTING)
def test_no_computing_step_reaches_reporting_publishing_or_the_cli(name):
    reached = sorted(f for f in _key_files(cached_steps()[name]) if f.startswith(PRESENTATION))
    assert not reached, f"{name}'s key covers {reached}"


def test_the_modules_a_step_body_imports_are_in_its_key():
    """A step that ran code its key does not cover would not recompute when that code changed."""
    from bertbuild.tasks import engines, model, precision, squad

    for module in (model, squad, precision, engines):
        for value in vars(module).values():
            step = getattr(value, "step", None)
            if not isinstance(step, CachedStep):
                continue
            body = inspect.unwrap(value.fn)
            covered = {f.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in _key_files(step)}
            missing = {m for m in _body_imports(body) if m.removeprefix("bertbuild.") not in covered}
            assert not missing, f"{step.name}: its body imports {sorted(missing)}, which its key does not cover"


def test_a_step_name_is_checked_and_the_run_is_a_named_parameter():
    with pytest.raises(ValueError, match="not in kinds.STEPS"):
        CachedStep("no-such-step", ("bertbuild.kinds",))
    with pytest.raises(TypeError, match="named `run`"):
        cached_step("fuse", task_name="x", code=("bertbuild.kinds",))(lambda context: Work(lambda out: {}))


def test_a_cached_step_measures_keys_and_reuses(tmp_path):
    """The decorator's whole recipe: journaled with its cache state, a second call a hit, other fields a miss."""
    from types import SimpleNamespace

    from bertbuild.resources import read_journal
    from bertbuild.step_cache import StepCache

    calls = []

    @cached_step("features", task_name="demo-step", code=("bertbuild.kinds",), libraries=("numpy",))
    def demo(value: int, run) -> Work:
        def produce(out: Path) -> dict:
            calls.append(value)
            (out / "v.txt").write_text(str(value))
            return {"path": str(out / "v.txt")}

        return Work(produce, fields={"value": value}, finish=lambda result: Path(result["path"]).read_text())

    run = SimpleNamespace(run_dir=tmp_path / "run", cache=StepCache(tmp_path / "cache", tmp_path / "scratch"))
    assert demo.fn(1, run) == "1" and demo.fn(1, run=run) == "1" and demo.fn(2, run) == "2"
    assert calls == [1, 2]
    assert [r["cached"] for r in read_journal(run.run_dir)] == [False, True, False]
    assert demo.step.name == "features" and demo.step.wiring == (__name__,)
