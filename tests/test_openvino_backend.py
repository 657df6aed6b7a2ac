"""The OpenVINO backend: engines from the portable files, honest compute precision, no telemetry.

Real OpenVINO on the tiny model's files. What depends on the CPU (BF16 needs
AVX512_BF16 or AMX) skips with the reason OpenVINO gives, and the refusal
itself is tested with the capabilities faked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertbuild.backends import openvino as ovb
from bertbuild.runner import read_metadata
from bertbuild.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeRunner
from bertbuild.backends.registry import get_backend, int8_variant, runtime_fields
from bertbuild.config import EvalConfig
from bertbuild.errors import UserInputError
from bertbuild.evaluation.score import scoring_set

CAPS = ovb.capabilities()
NO_BF16 = not ovb.can_compute("bf16", CAPS)[0]
BF16_REASON = f"this CPU cannot compute BF16: {ovb.can_compute('bf16', CAPS)[1]}"


@pytest.fixture(scope="module")
def feeds(vocab_path):
    return list(scoring_set(EvalConfig(limit=6, batch_size=4), vocab_path, True).features.batches(4))


def _logits(runner, feeds) -> np.ndarray:
    with runner:
        return np.concatenate([value.ravel() for f in feeds for value in runner.infer(f).values()])


def test_fp32_engine_is_ir_that_matches_onnxruntime_and_computes_in_fp32(tiny_trt_files, feeds, tmp_path):
    backend = get_backend("openvino", threads=1)
    engine = backend.build(tiny_trt_files["fp32"], "fp32", [], tmp_path)
    assert engine.path.suffix == ".xml" and engine.path.with_suffix(".bin").is_file()
    record = read_metadata(engine.path)
    assert record["inference_precision_hint"] == "f32" and record["compute_precision"] == "fp32"
    assert record["openvino"].startswith("2026.") and record["weights_file"] == engine.path.with_suffix(".bin").name
    # Every compute layer runs FP32, also on a CPU whose default would be BF16.
    assert {p for layer in record["layer_precisions"].values() for p in layer} <= {"fp32", "int8"}
    ours = _logits(backend.load(engine.path), feeds)
    reference = _logits(OnnxRuntimeRunner(tiny_trt_files["fp32"], threads=1), feeds)
    assert np.abs(ours - reference).max() < 1e-4


def test_weights_are_written_as_they_are(tiny_trt_files, tmp_path):
    """save_model's default would halve FP32 weights to FP16 on disk; the FP32 engine keeps them FP32."""
    import onnx

    engine = get_backend("openvino").build(tiny_trt_files["fused"], "fused-fp32", [], tmp_path)
    weights = sum(np.prod(t.dims) * 4 for t in onnx.load(str(tiny_trt_files["fused"])).graph.initializer
                  if t.data_type == onnx.TensorProto.FLOAT)
    assert engine.path.with_suffix(".bin").stat().st_size >= 0.95 * weights


@pytest.mark.skipif("BF16" not in CAPS, reason="the CPU's BF16 default only exists on a CPU with BF16")
def test_the_fp32_hint_is_needed_on_this_cpu(tiny_trt_files):
    """What the explicit hint guards against: left alone, OpenVINO computes an FP32 file in BF16 here."""
    core = ovb.import_openvino().Core()
    assert str(core.get_property("CPU", "INFERENCE_PRECISION_HINT")) == "<Type: 'bfloat16'>"
    default = core.compile_model(core.read_model(str(tiny_trt_files["fused"])), "CPU")
    assert ovb.compute_label(ovb.layer_precisions(default)) == "bf16"


def test_int8_runs_the_portable_signed_file_as_int8_kernels(tiny_trt_files, feeds, tmp_path):
    assert int8_variant("openvino", "ort") == "s8s8"  # whatever the config names for ONNX Runtime
    engine = get_backend("openvino", threads=1).build(tiny_trt_files["s8s8"], "int8", [], tmp_path, "fp32")
    record = read_metadata(engine.path)
    assert record["compute_precision"] == "int8+fp32" and record["float_parts"] == "fp32"
    assert record["layer_precisions"]["FullyConnected"].get("int8", 0) >= 2 * 4  # 2 layers x 4 GEMMs at least
    ours = _logits(get_backend("openvino").load(engine.path), feeds)
    reference = _logits(OnnxRuntimeRunner(tiny_trt_files["fused"], threads=1), feeds)
    assert np.abs(ours - reference).mean() < 0.5  # INT8's validation tolerance (mean error)


@pytest.mark.skipif(NO_BF16, reason=BF16_REASON)
def test_bf16_engines_where_the_cpu_has_it(tiny_trt_files, feeds, tmp_path):
    backend = get_backend("openvino", threads=1)
    bf16 = backend.build(tiny_trt_files["bf16"], "bf16", [], tmp_path / "bf16")
    assert read_metadata(bf16.path)["compute_precision"] == "bf16"
    int8 = backend.build(tiny_trt_files["s8s8"], "int8", [], tmp_path / "int8", "bf16")
    assert read_metadata(int8.path)["compute_precision"] == "int8+bf16"
    reference = _logits(OnnxRuntimeRunner(tiny_trt_files["fused"], threads=1), feeds)
    assert np.abs(_logits(backend.load(bf16.path), feeds) - reference).mean() < 0.25  # BF16's tolerance


def test_bf16_is_refused_in_one_line_where_it_cannot_run(monkeypatch, tiny_trt_files, tmp_path):
    ok, why = OnnxRuntimeBackend().supports("bf16")
    assert not ok and "no BF16 arithmetic" in why
    monkeypatch.setattr(ovb, "capabilities", lambda: ["FP32", "INT8"])
    ok, why = get_backend("openvino").supports("bf16")
    assert not ok and "AVX512_BF16 or AMX" in why and "\n" not in why
    with pytest.raises(UserInputError, match="cannot build a bf16 engine here"):
        get_backend("openvino").build(tiny_trt_files["bf16"], "bf16", [], tmp_path)


def test_the_flow_skips_an_engine_its_backend_cannot_compute_with_a_one_line_reason():
    from bertbuild.backends.registry import computable

    kept, skipped = computable("onnxruntime", ["fp32", "bf16", "int8"])
    assert kept == ["fp32", "int8"]
    assert skipped == {"onnxruntime-bf16": "ONNX Runtime's CPU provider has no BF16 arithmetic"}


@pytest.mark.parametrize("layers, label", [
    ({"FullyConnected": {"int8": 42, "bf16": 1}, "Subgraph": {"bf16": 6}, "Eltwise": {"bf16": 40, "int8": 6}},
     "int8+bf16"),
    ({"FullyConnected": {"int8": 42, "fp32": 1}, "MVN": {"fp32": 13}}, "int8+fp32"),
    ({"FullyConnected": {"bf16": 37}, "MVN": {"bf16": 13}, "Eltwise": {"int8": 6}}, "bf16"),
    ({"FullyConnected": {"fp32": 37}, "Subgraph": {"fp32": 6}}, "fp32"),
    ({"FullyConnected": {"fp16": 37}, "MVN": {"fp32": 13}, "Subgraph": {"fp32": 30}}, "fp16+fp32"),
    ({}, "unknown"),
])
def test_compute_label_names_the_gemms_and_the_float_parts(layers, label):
    assert ovb.compute_label(layers) == label


@pytest.mark.parametrize("precision, float_parts, hint", [
    ("fp32", None, "f32"), ("fused-fp32", None, "f32"), ("fp16", None, "f16"), ("bf16", None, "bf16"),
    ("int8", None, "f32"), ("int8", "fp32", "f32"), ("int8", "bf16", "bf16"),
])
def test_each_engine_asks_for_the_precision_its_file_carries(precision, float_parts, hint):
    assert ovb.inference_precision(precision, float_parts, ["FP32", "BF16", "FP16", "INT8"]) == hint


def test_fp16_runs_at_fp32_where_the_cpu_has_no_fp16_arithmetic(monkeypatch):
    """Most CPUs lack FP16 arithmetic: the FP16 file still gets an engine, at the f32 hint, and says so."""
    assert ovb.inference_precision("fp16", None, ["FP32", "INT8"]) == "f32"
    monkeypatch.setattr(ovb, "capabilities", lambda: ["FP32", "INT8"])
    assert get_backend("openvino").supports("fp16") == (True, "")
    assert not get_backend("openvino").supports("bf16")[0]


def test_openvino_version_keys_only_the_steps_it_runs():
    import importlib.metadata

    assert runtime_fields("openvino") == {"openvino": importlib.metadata.version("openvino")}
    assert runtime_fields("onnxruntime") == {} and runtime_fields("tensorrt") == {}
    from bertbuild.tasks import cached_steps

    steps = cached_steps()  # the libraries each step names: OpenVINO in none (it keys through `runtime_fields`)
    assert not any("openvino" in step.libraries for step in steps.values())
    assert "prefect" not in {lib for step in steps.values() for lib in step.libraries}


def test_int8_float_parts_are_chosen_on_the_tune_split(monkeypatch):
    from bertbuild.flows import int8 as flow

    fp32 = {"answer_agreement": 0.93, "p50_ms": 300.0}

    def judge(agreement):
        return lambda path, parts: {"answer_agreement": agreement, "p50_ms": 200.0, "parts": parts}

    def passes(metrics):
        return metrics["answer_agreement"] >= 0.9

    monkeypatch.setattr(ovb.OpenVinoBackend, "supports", lambda self, p: (True, ""))
    chosen, best, report = flow._float_parts("x.onnx", fp32, judge(0.94), passes, "openvino", "auto")
    assert chosen == "bf16" and best["parts"] == "bf16" and report["fp32"] == fp32 and "93.00%" in report["why"]
    chosen, best, report = flow._float_parts("x.onnx", fp32, judge(0.85), passes, "openvino", "auto")
    assert chosen == "fp32" and best == fp32 and "fall short" in report["why"]
    chosen, _, report = flow._float_parts("x.onnx", fp32, judge(0.99), passes, "openvino", "fp32")
    assert chosen == "fp32" and "bf16" not in report
    monkeypatch.setattr(ovb.OpenVinoBackend, "supports", lambda self, p: (False, "no BF16 here"))
    chosen, best, report = flow._float_parts("x.onnx", fp32, judge(0.99), passes, "openvino", "auto")
    assert chosen == "fp32" and report["why"] == "no BF16 here"
    with pytest.raises(UserInputError, match="int8_float_parts is bf16, but no BF16 here"):
        flow._float_parts("x.onnx", fp32, judge(0.99), passes, "openvino", "bf16")
    assert flow.chooses_float_parts("openvino") and not flow.chooses_float_parts("onnxruntime")


_OURS = """
import json, socket, sys
from pathlib import Path

connects = []
real_connect = socket.socket.connect
socket.socket.connect = lambda self, address: (connects.append(repr(address)), real_connect(self, address))[1]

from bertbuild.backends.registry import get_backend

backend = get_backend("openvino", threads=1)
engine = backend.build(Path(sys.argv[1]), "fp32", [], Path(sys.argv[2]))
with backend.load(engine.path) as runner:
    pass
print(json.dumps({"connects": connects, "telemetry_module": repr(sys.modules.get("openvino_telemetry"))}))
"""


def test_openvino_sends_nothing_and_writes_no_telemetry_id(tiny_trt_files, tmp_path):
    """openvino requires openvino-telemetry, and a plain `import openvino` starts it: it writes a client id
    under ~/intel and sends an "import" event unless the user opted out or CI=true. The backend's import
    keeps it off for its own process (OpenVINO's no-op stub), without touching the user's settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # a user's shell
    plain_home, our_home = tmp_path / "plain", tmp_path / "ours"
    plain_home.mkdir(), our_home.mkdir()
    subprocess.run([sys.executable, "-c", "import openvino"], env={**env, "HOME": str(plain_home)}, check=True,
                   timeout=120)
    assert (plain_home / "intel" / "openvino_ga_cid").is_file()  # the control: telemetry starts on import
    done = subprocess.run([sys.executable, "-c", _OURS, str(tiny_trt_files["fp32"]), str(tmp_path / "engine")],
                          env={**env, "HOME": str(our_home)}, capture_output=True, text=True, timeout=120,
                          check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"connects": [], "telemetry_module": "None"}
    assert not (our_home / "intel").exists()


def test_an_unreadable_file_is_one_line(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserInputError, match="OpenVINO cannot read it"):
        ovb.OpenVinoRunner(bad).activate()


def test_backends_lists_openvino(capsys):
    from bertbuild.cli import main

    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("openvino ") and " available" in line for line in out.splitlines())
    assert "auto" in out and "-> openvino" in out
