"""`engines.backend: auto`, ONNX Runtime's GPU providers, and the TensorRT runner's profile choice, on any host.

Availability is faked both ways where the real answer depends on the host;
tests that need a real GPU provider skip with the reason the backend gives.
"""

from __future__ import annotations

import json
import logging
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from bertbuild.backends import onnxrt
from bertbuild.runner import Profile
from bertbuild.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeTensorRTBackend
from bertbuild.backends.registry import availability, get_backend, resolve_backend
from bertbuild.backends.tensorrt import TensorRTBackend, TensorRTRunner, timing_cache_path
from bertbuild.errors import MissingDependency, NotTensorRTReady, UserInputError
from bertbuild.model.signature import INPUT_NAMES

TWO_PROFILES = [Profile((1, 128), (4, 128), (4, 128)), Profile((1, 256), (8, 384), (16, 384))]


def _fake_tensorrt(monkeypatch, ok: bool):
    answer = (True, "TensorRT 10.14.1 on NVIDIA H100 80GB HBM3") if ok else (False, "no NVIDIA GPU visible")
    monkeypatch.setattr(TensorRTBackend, "available", lambda self: answer)


def test_auto_picks_tensorrt_when_it_imports_and_a_gpu_is_visible(monkeypatch, caplog):
    _fake_tensorrt(monkeypatch, ok=True)
    name, reason = resolve_backend("auto")
    assert name == "tensorrt" and "NVIDIA H100" in reason and reason.startswith("auto:")
    with caplog.at_level(logging.INFO, logger="bertbuild.backends.registry"):
        assert isinstance(get_backend("auto"), TensorRTBackend)
    assert "backend tensorrt: auto: TensorRT imports" in caplog.text


def test_auto_picks_openvino_on_a_cpu_host_where_it_runs(monkeypatch, caplog):
    _fake_tensorrt(monkeypatch, ok=False)
    name, reason = resolve_backend("auto")  # the real answer: OpenVINO is a dependency and runs on this CPU
    assert name == "openvino" and "no NVIDIA GPU visible" in reason and "OpenVINO" in reason
    with caplog.at_level(logging.INFO, logger="bertbuild.backends.registry"):
        assert get_backend("auto", threads=1).name == "openvino"
    assert "backend openvino: auto: not TensorRT" in caplog.text


def test_auto_falls_back_to_onnxruntime_and_says_why(monkeypatch, caplog):
    from bertbuild.backends.openvino import OpenVinoBackend

    _fake_tensorrt(monkeypatch, ok=False)
    monkeypatch.setattr(OpenVinoBackend, "available", lambda self: (False, "openvino is not installed"))
    name, reason = resolve_backend("auto")
    assert name == "onnxruntime" and "no NVIDIA GPU visible" in reason and "openvino is not installed" in reason
    with caplog.at_level(logging.INFO, logger="bertbuild.backends.registry"):
        backend = get_backend("auto", threads=1)
    assert type(backend) is OnnxRuntimeBackend and "using ONNX Runtime on the CPU" in caplog.text


def test_named_backends_pass_through_unresolved():
    assert resolve_backend("onnxruntime-cuda") == ("onnxruntime-cuda", "engines.backend is 'onnxruntime-cuda'")
    with pytest.raises(UserInputError, match=r"unknown backend 'tpu' \(known: .*onnxruntime-tensorrt.*auto\)"):
        get_backend("tpu")


@pytest.mark.parametrize("providers, gpu, expected", [
    (["CPUExecutionProvider"], {"gpu": "X"}, "no CUDAExecutionProvider; pip install 'bertbuild[gpu]'"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], {}, "no NVIDIA GPU visible"),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], {"gpu": "X"}, None),
])
def test_cuda_provider_availability_from_the_installed_build(monkeypatch, providers, gpu, expected):
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
    monkeypatch.setattr(onnxrt, "gpu_info", lambda: gpu)
    ok, why = availability()["onnxruntime-cuda"]
    assert ok is (expected is None) and (expected is None or expected in why)
    assert "no TensorrtExecutionProvider" in availability()["onnxruntime-tensorrt"][1]  # in none of these builds


def _tiny_model(path: Path) -> Path:
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["batch", "seq"]) for n in INPUT_NAMES]
    graph = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["start_logits"], to=TensorProto.FLOAT),
                               helper.make_node("Cast", ["input_mask"], ["end_logits"], to=TensorProto.FLOAT)],
                              "tiny", inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"])
                               for n in ("start_logits", "end_logits")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class _FakeSession:
    """Stands in for an InferenceSession on a GPU host: records what it was given."""

    created: list = []
    running: list | None = None  # providers it reports; None: the ones it was given

    def __init__(self, path, sess_options=None, providers=None):
        self.options, self.providers = sess_options, providers
        _FakeSession.created.append(self)

    def get_providers(self):
        names = [p[0] if isinstance(p, tuple) else p for p in self.providers]
        return self.running or names


@pytest.fixture
def fake_gpu_session(monkeypatch):
    _FakeSession.created, _FakeSession.running = [], None
    monkeypatch.setattr(onnxruntime, "InferenceSession", _FakeSession)
    monkeypatch.setattr(onnxrt, "gpu_info", lambda: {"gpu": "NVIDIA H100"})
    return _FakeSession


def test_tensorrt_provider_saves_no_optimized_model(fake_gpu_session, tmp_path, monkeypatch):
    cache_root = tmp_path / "cache"
    monkeypatch.setenv("BERTBUILD_CACHE", str(cache_root))
    source = _tiny_model(tmp_path / "model-fp16.onnx")
    engine = OnnxRuntimeTensorRTBackend(threads=1).build(source, "fp16", TWO_PROFILES, tmp_path / "engines")
    session = fake_gpu_session.created[0]
    assert session.options.optimized_model_filepath == ""  # ORT cannot save compiled TensorRT nodes
    assert engine.path.read_bytes() == source.read_bytes() and engine.path.parent == tmp_path / "engines"
    meta = json.loads(engine.metadata_path.read_text())
    assert meta["optimized_model_saved"] is False and "cannot save" in meta["why_not_saved"]
    name, options = session.providers[0]
    assert name == "TensorrtExecutionProvider" and session.providers[1:] == ["CUDAExecutionProvider",
                                                                              "CPUExecutionProvider"]
    assert Path(options["trt_engine_cache_path"]) == cache_root / "onnxruntime-tensorrt"
    # One range spanning both profiles: batch 1..16, seq 128..384.
    assert options["trt_profile_min_shapes"].split(",") == [f"{n}:1x128" for n in INPUT_NAMES]
    assert options["trt_profile_max_shapes"].split(",") == [f"{n}:16x384" for n in INPUT_NAMES]
    runner = OnnxRuntimeTensorRTBackend().load(engine.path)
    assert runner.providers[0][1] == options and runner.optimization == "all"


def test_provider_fallback_is_refused_in_one_line(fake_gpu_session, tmp_path):
    fake_gpu_session.running = ["CPUExecutionProvider"]  # e.g. libnvinfer missing: ORT silently used the CPU
    with pytest.raises(MissingDependency, match="could not start TensorrtExecutionProvider"):
        OnnxRuntimeTensorRTBackend().build(_tiny_model(tmp_path / "m.onnx"), "fp32", TWO_PROFILES, tmp_path)


def test_cpu_backend_still_saves_its_optimized_model(tmp_path):
    engine = get_backend("onnxruntime", threads=1).build(_tiny_model(tmp_path / "m.onnx"), "fp32", TWO_PROFILES,
                                                         tmp_path / "e")
    meta = json.loads(engine.metadata_path.read_text())
    assert engine.path.name == "m.ort.onnx" and meta["optimized_model_saved"] is True
    assert meta["providers"] == ["CPUExecutionProvider"]


def _feed(batch, seq):
    return {name: np.zeros((batch, seq), np.int32) for name in INPUT_NAMES}


def test_tensorrt_runner_picks_the_profile_that_fits_the_feed(tmp_path):
    runner = TensorRTRunner(tmp_path / "m.plan", TWO_PROFILES)  # never activated: no GPU needed
    assert runner.profile_for(_feed(4, 128)) == 0
    assert runner.profile_for(_feed(8, 384)) == 1 and runner.profile_for(_feed(1, 300)) == 1
    with pytest.raises(ValueError, match=r"no optimization profile covers batch 32 x seq 384"):
        runner.profile_for(_feed(32, 384))


def test_tensorrt_runner_reads_profiles_from_the_engine_record(tmp_path):
    plan = tmp_path / "m.plan"
    (tmp_path / "m.plan.json").write_text(json.dumps({"profiles": [p.to_json() for p in TWO_PROFILES]}))
    assert TensorRTBackend().load(plan).profiles == TWO_PROFILES


def test_timing_cache_is_keyed_by_version_and_gpu_under_the_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BERTBUILD_CACHE", str(tmp_path))
    path = timing_cache_path("10.14.1.48", "NVIDIA H100 80GB HBM3")
    assert path == tmp_path / "tensorrt" / "timing-10.14.1.48-nvidia-h100-80gb-hbm3.cache"


def test_tensorrt_build_refuses_an_unready_file_before_touching_the_gpu(monkeypatch, tiny_trt_files, tmp_path):
    import bertbuild._lazy

    fake = types.SimpleNamespace(__version__="10.14.1.48")
    monkeypatch.setattr(bertbuild._lazy, "require", lambda name: fake)
    with pytest.raises(NotTensorRTReady, match=r"int8-u8s8.onnx is not ready for TensorRT 10.14: node"):
        TensorRTBackend().build(tiny_trt_files["u8s8"], "int8", TWO_PROFILES, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing built, nothing written


# --- real GPU providers (skip with the backend's own reason elsewhere) ----------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("name", ["onnxruntime-cuda", "onnxruntime-tensorrt"])
def test_gpu_provider_engine_matches_cpu(name, tiny_trt_files, tmp_path):
    ok, why = availability()[name]
    if not ok:
        pytest.skip(f"{name} not available here: {why}")
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.config import EvalConfig
    from bertbuild.evaluation.score import scoring_set
    from bertbuild.evaluation.validate import validate
    from bertbuild.model.checkpoint import vocab_and_case

    feeds = list(scoring_set(EvalConfig(limit=6, max_seq_length=128, batch_size=4),
                                  *vocab_and_case(tiny_trt_files["checkpoint"])).features.batches(4))
    backend = get_backend(name)
    engine = backend.build(tiny_trt_files["fused"], "fused-fp32", TWO_PROFILES, tmp_path)
    report = validate(OnnxRuntimeRunner(tiny_trt_files["fused"]), backend.load(engine.path), feeds,
                      atol=1e-3, rtol=1e-2)
    assert report.passed and json.loads(engine.metadata_path.read_text())["providers"][0] == backend.providers[0]
