"""Accuracy fallback: sensitivity ranking finds damaged nodes, and returning them to FP32 recovers the gate."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest

from bertbuild.precision.calibration import calibrate
from bertbuild.precision.calibration_set import calibration_set
from bertbuild.config.precision import FallbackConfig, Int8Config
from bertbuild.precision.fallback import exclusion_schedule, run_fallback
from bertbuild.precision.int8 import quantize_int8
from bertbuild.precision.ranges import TensorRange
from bertbuild.precision.sensitivity import fake_quantize_activation, rank_sensitivity

CFG = Int8Config(samples=16, max_seq_length=128, batch_size=8, method="percentile").plain()


def test_schedule_grows_by_step_within_node_and_try_budgets():
    ranking = [f"n{i}" for i in range(10)]
    assert exclusion_schedule(ranking, FallbackConfig(step=2, max_nodes=5, max_tries=9)) == \
        [ranking[:2], ranking[:4], ranking[:5]]
    assert exclusion_schedule(ranking, FallbackConfig(step=3, max_nodes=16, max_tries=2)) == [ranking[:3], ranking[:6]]
    assert exclusion_schedule(ranking, FallbackConfig(max_nodes=0)) == []
    assert exclusion_schedule(ranking[:2], FallbackConfig(step=2)) == [ranking[:1]]  # one node stays INT8
    assert exclusion_schedule(ranking[:1], FallbackConfig()) == []


def test_run_fallback_keeps_the_fastest_passing_try_and_reports_the_pareto_set():
    quantized = []

    def quantize(excluded):
        quantized.append(list(excluded))
        return f"try-{len(excluded)}"

    # try-2 passes but is slow; try-3 passes and is faster; try-1 fails (fastest of all).
    metrics = {"try-1": {"score": 80.0, "p50_ms": 10.0}, "try-2": {"score": 84.0, "p50_ms": 14.0},
               "try-3": {"score": 85.0, "p50_ms": 12.0}}
    cfg = FallbackConfig(step=1, max_nodes=3)
    report = run_fallback(quantize, metrics.get, lambda m: m["score"] >= 84, "abcd", cfg)
    assert quantized == [["a"], ["a", "b"], ["a", "b", "c"]]  # every scheduled try is measured
    assert report.passed and report.final_path == "try-3" and report.final_excluded == ["a", "b", "c"]
    assert [s.path for s in report.pareto("score", "p50_ms")] == ["try-1", "try-3"]  # try-2 is beaten by try-3

    failed = run_fallback(quantize, metrics.get, lambda m: False, "abcd", cfg)
    assert not failed.passed and failed.final_path == "try-3" and len(failed.steps) == 3
    assert failed.to_json()["steps"][2] == {"excluded": ["a", "b", "c"], "path": "try-3",
                                             "metrics": {"score": 85.0, "p50_ms": 12.0}, "passed": False}


def test_fake_quantization_matches_onnx_runtime_quantize_linear():
    from onnx import TensorProto, helper, numpy_helper

    x = np.linspace(-3, 5, 101, dtype=np.float32)
    for variant, low, high, zero_type in (("s8s8", -4.0, 4.0, np.int8), ("u8s8", -1.0, 4.0, np.uint8)):
        if variant == "s8s8":
            scale, zero = np.float32(4.0 / 127), zero_type(0)
        else:
            scale = np.float32(5.0 / 255)
            zero = zero_type(round(1.0 / float(scale)))
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [101])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [101])],
                                  [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.array(zero), "z")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        (expected,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x})
        np.testing.assert_allclose(fake_quantize_activation(x, low, high, variant), expected, atol=1e-6)


@pytest.fixture(scope="module")
def setup(tiny_onnx, vocab_path, tmp_path_factory):
    """A calibration with two single-reader activations' ranges shrunk 50x: those MatMuls clip badly."""
    samples = calibration_set(CFG, vocab_path, lower_case=True)
    good = calibrate(tiny_onnx["fused"], samples, CFG)
    readers = {}
    for target in good.targets:
        readers.setdefault(target["activation"], []).append(target["node"])
    single = [name for name, nodes in readers.items() if len(nodes) == 1]
    damaged_tensors = [single[0], single[-1]]  # first layer and last layer
    bad = copy.deepcopy(good)
    for name in damaged_tensors:
        r = bad.ranges[name]
        bad.ranges[name] = TensorRange(r.min / 50, r.max / 50, r.amax / 50)
    damaged_nodes = sorted(readers[name][0] for name in damaged_tensors)
    return {"samples": samples, "good": good, "bad": bad, "damaged": damaged_nodes,
            "out": tmp_path_factory.mktemp("fallback")}


@pytest.mark.parametrize("variant", ["s8s8", "u8s8"])
def test_sensitivity_ranks_damaged_nodes_first(tiny_onnx, setup, variant):
    ranked = rank_sensitivity(tiny_onnx["fused"], setup["bad"], setup["samples"], variant, batches=1)
    assert len(ranked) == 12 and all(r.noise_to_signal >= 0 for r in ranked)
    assert sorted(r.node for r in ranked[:2]) == setup["damaged"]
    healthy = rank_sensitivity(tiny_onnx["fused"], setup["good"], setup["samples"], variant, batches=1)
    assert ranked[0].noise_to_signal > 10 * max(r.noise_to_signal for r in healthy)


def test_fallback_returns_damaged_nodes_to_fp32_and_passes_a_tight_gate(tiny_onnx, setup):
    feeds = list(setup["samples"].batches(8))
    reference = ort.InferenceSession(str(tiny_onnx["fused"]), providers=["CPUExecutionProvider"])
    expected = [reference.run(None, feed) for feed in feeds]

    def logit_error(path):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        worst = max(float(np.abs(a - b).max()) for feed, ref in zip(feeds, expected)
                    for a, b in zip(session.run(None, feed), ref))
        return {"score": -worst, "max_abs_dlogit": worst, "p50_ms": 1.0}

    out = setup["out"]
    healthy = logit_error(quantize_int8(tiny_onnx["fused"], out / "good", setup["good"], CFG).paths["u8s8"])
    damaged = logit_error(quantize_int8(tiny_onnx["fused"], out / "bad", setup["bad"], CFG).paths["u8s8"])
    gate = 2 * healthy["max_abs_dlogit"]
    assert damaged["max_abs_dlogit"] > gate  # the damage is real: the INT8 file misses the gate

    ranking = [r.node for r in rank_sensitivity(tiny_onnx["fused"], setup["bad"], setup["samples"], "u8s8", 1)]
    report = run_fallback(
        lambda excluded: quantize_int8(tiny_onnx["fused"], out / f"try-{len(excluded)}", setup["bad"], CFG,
                                       excluded).paths["u8s8"],
        logit_error, lambda m: m["max_abs_dlogit"] <= gate, ranking, FallbackConfig(step=2, max_tries=2))
    assert report.passed and report.steps[0].passed
    assert sorted(report.steps[0].excluded) == setup["damaged"]
