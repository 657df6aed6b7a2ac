"""Backends behind one interface: ONNX Runtime here, TensorRT on GPU hosts."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from bertbuild.runner import Profile
from bertbuild.backends.onnxrt import OnnxRuntimeRunner
from bertbuild.backends.registry import availability, get_backend
from bertbuild.cli import main
from bertbuild.config import EvalConfig
from bertbuild.errors import UserInputError
from bertbuild.evaluation.score import scoring_set
from bertbuild.evaluation.validate import validate

PROFILES = [Profile((1, 128), (4, 384), (8, 384))]
TRT_MISSING = not availability()["tensorrt"][0]
TRT_REASON = f"TensorRT backend not available here: {availability()['tensorrt'][1]}"


@pytest.fixture(scope="module")
def fp32_onnx(tiny_checkpoint, tmp_path_factory):
    from bertbuild.model.checkpoint import load_checkpoint
    from bertbuild.model.export import export_onnx

    return export_onnx(load_checkpoint(tiny_checkpoint), tmp_path_factory.mktemp("b") / "model-fp32.onnx").path


@pytest.fixture(scope="module")
def feeds(vocab_path):
    eval_set = scoring_set(EvalConfig(limit=6, batch_size=4), vocab_path, True)
    return list(eval_set.features.batches(4))


def test_onnxruntime_engine_builds_with_metadata_and_matches(fp32_onnx, feeds, tmp_path):
    backend = get_backend("onnxruntime", threads=1)
    engine = backend.build(fp32_onnx, "fp32", PROFILES, tmp_path)
    meta = json.loads(engine.metadata_path.read_text())
    assert engine.path.is_file() and meta["backend"] == "onnxruntime" and meta["precision"] == "fp32"
    assert meta["profiles"] == [{"min": [1, 128], "opt": [4, 384], "max": [8, 384]}]
    report = validate(OnnxRuntimeRunner(fp32_onnx), backend.load(engine.path), feeds, atol=1e-4, rtol=1e-3)
    assert report.passed and report.argmax_agreement == 1.0 and report.batches == len(feeds)


def test_damaged_engine_fails_validation(fp32_onnx, feeds, tmp_path):
    model = onnx.load(str(fp32_onnx))
    weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if len(t.dims) == 2 else 0)
    values = onnx.numpy_helper.to_array(weight) * -3.0
    weight.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weight.name))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    report = validate(OnnxRuntimeRunner(fp32_onnx), OnnxRuntimeRunner(damaged), feeds, atol=1e-4, rtol=1e-3)
    assert not report.passed
    assert max(report.max_abs_diff.values()) > 1e-3
    report.save(tmp_path / "v")
    assert "FAILED" in (tmp_path / "v.txt").read_text()


def test_unknown_backend_is_one_line():
    with pytest.raises(UserInputError, match="unknown backend 'tpu'"):
        get_backend("tpu")


@pytest.mark.skipif(not TRT_MISSING, reason="TensorRT is installed: the refusal path cannot be shown")
def test_tensorrt_config_refused_on_this_host(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"model:\n  source: generated:tiny\nengines:\n  backend: tensorrt\noutput_dir: {tmp_path}\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "backend 'tensorrt' is not available on this host" in err


def test_tensorrt_backend_says_why_and_fails_one_line_where_tensorrt_cannot_import(tmp_path):
    """With `import tensorrt` made impossible, the module still imports, lists itself as unavailable with
    the fix, and a build is a one-line MissingDependency, not an ImportError traceback."""
    code = """
import sys
sys.modules["tensorrt"] = None  # any `import tensorrt` now raises ImportError
from pathlib import Path
from bertbuild.backends.tensorrt import TensorRTBackend
from bertbuild.errors import MissingDependency
ok, why = TensorRTBackend().available()
print(ok, why)
try:
    TensorRTBackend().build(Path("x.onnx"), "fp32", [], Path("out"))
except MissingDependency as exc:
    print("MissingDependency:", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith("False ") and "pip install" in first
    assert second.startswith("MissingDependency: tensorrt") and "\n" not in second


@pytest.mark.gpu
@pytest.mark.skipif(TRT_MISSING, reason=TRT_REASON)
def test_tensorrt_engine_builds_and_matches(fp32_onnx, feeds, tmp_path):
    backend = get_backend("tensorrt")
    engine = backend.build(fp32_onnx, "fp32", PROFILES, tmp_path / "engines" / "fp32")
    meta = json.loads(engine.metadata_path.read_text())
    assert engine.path.suffix == ".plan" and meta["strongly_typed"] and meta["tensorrt"]
    assert Path(meta["timing_cache"]).is_file()
    report = validate(OnnxRuntimeRunner(fp32_onnx), backend.load(engine.path), feeds, atol=1e-3, rtol=1e-2)
    assert report.passed and report.argmax_agreement > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(TRT_MISSING, reason=TRT_REASON)
def test_tensorrt_timing_cache_reused_from_the_cache_root(fp32_onnx, tmp_path):
    from bertbuild.content_cache import default_cache_dir

    backend = get_backend("tensorrt")
    first = json.loads(backend.build(fp32_onnx, "fp32", PROFILES, tmp_path / "engines" / "a").metadata_path.read_text())
    cache = Path(first["timing_cache"])
    assert cache.is_file() and cache.parent == default_cache_dir() / "tensorrt"
    assert cache.name.startswith(f"timing-{first['tensorrt']}-") and tmp_path not in cache.parents
    stamp = cache.stat().st_mtime_ns
    second = json.loads(backend.build(fp32_onnx, "fp32", PROFILES, tmp_path / "engines" / "b").metadata_path.read_text())
    assert second["timing_cache"] == str(cache) and cache.stat().st_mtime_ns >= stamp
