"""Cache keys cover the code by construction: one byte changed in a transitively imported module recomputes."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from bertbuild.code_closure import source_closure
from bertbuild.step_cache import StepCache, step_key


@pytest.fixture()
def package(tmp_path, monkeypatch):
    """`closurepkg`: `step` imports `helpers` inside a function only; `helpers` imports `.deep` relatively."""
    root = tmp_path / "closurepkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "step.py": "def run():\n    from closurepkg.sub import helpers\n    return helpers.value()\n",
        "sub/__init__.py": "",
        "sub/helpers.py": "from . import deep\n\ndef value():\n    return deep.VALUE\n",
        "sub/deep.py": "VALUE = 1\n",
        "unrelated.py": "import json\n",
    }
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield root
    for name in [n for n in sys.modules if n == "closurepkg" or n.startswith("closurepkg.")]:
        del sys.modules[name]


def test_the_closure_follows_lazy_and_relative_imports_and_nothing_else(package):
    step = importlib.import_module("closurepkg.step")
    names = {p.relative_to(package).as_posix() for p in source_closure([step])}
    assert names == {"__init__.py", "step.py", "sub/__init__.py", "sub/helpers.py", "sub/deep.py"}


def test_one_byte_in_a_transitively_imported_module_makes_the_step_recompute(package, tmp_path):
    step = importlib.import_module("closurepkg.step")
    cache = StepCache(root=tmp_path / "cache", scratch=tmp_path / "scratch")
    runs = []

    def produce(out):
        runs.append(1)
        (out / "result.txt").write_text("done")
        return {"path": str(out / "result.txt")}

    def build():
        return cache.run("demo", step_key("demo", modules=[step]), produce)

    build()
    build()
    assert len(runs) == 1  # the second is a hit
    deep = package / "sub" / "deep.py"
    deep.write_text(deep.read_text().replace("1", "2"))  # one byte, two imports away, behind a lazy import
    build()
    assert len(runs) == 2
    (package / "unrelated.py").write_text("import os\n")  # not reachable from the step: still a hit
    build()
    assert len(runs) == 2


def test_the_evaluation_key_covers_post_processing_and_metrics():
    from bertbuild.evaluation import score

    names = {p.as_posix().rsplit("bertbuild/", 1)[1] for p in source_closure([score])}
    assert {"squad/postprocess.py", "squad/metrics.py", "evaluation/score.py"} <= names
