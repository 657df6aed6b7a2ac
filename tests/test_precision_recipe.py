"""The INT8 recipe (smoothing, calibration, bias correction, three files) and bias correction itself."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from bertbuild.precision.bias_correction import correct_biases
from bertbuild.precision.calibration import calibrate
from bertbuild.precision.calibration_set import calibration_set
from bertbuild.config.precision import Int8Config
from bertbuild.precision.int8 import quantize_variant
from bertbuild.precision.recipe import build_int8, prepare_source, write_int8_files
from bertbuild.precision.smoothing import smoothing_groups

CFG = Int8Config(samples=32, max_seq_length=128, batch_size=8, method="percentile", percentile=99.0).plain()


@pytest.fixture(scope="module")
def samples(vocab_path):
    return calibration_set(CFG, vocab_path, lower_case=True)


def _widened(arrays):
    """[rows, seq] arrays of length-bucketed batches (seq varies) as one, zero-padded to the widest."""
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays])


def _logits(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs = [session.run(None, feed) for feed in feeds]
    return [_widened([r[i] for r in runs]) for i in range(2)]


@pytest.fixture(scope="module")
def outlier_model(tiny_onnx, tmp_path_factory):
    """The tiny model with one always-large LayerNorm channel, which percentile calibration clips."""
    model = onnx.load(str(tiny_onnx["fused"]))
    target = next(iter(smoothing_groups(model, ("LayerNormalization",))))
    layer_norm = next(n for n in model.graph.node if n.output[0] == target)
    inits = {i.name: i for i in model.graph.initializer}
    gamma, beta = (numpy_helper.to_array(inits[name]).copy() for name in layer_norm.input[1:3])
    gamma[7], beta[7] = gamma[7] * 4, 25.0
    for name, value in zip(layer_norm.input[1:3], (gamma, beta)):
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    path = tmp_path_factory.mktemp("outlier") / "model-fused.onnx"
    onnx.save(model, str(path))
    return path


def test_bias_correction_removes_the_mean_int8_shift(outlier_model, samples, tmp_path):
    calibration = calibrate(outlier_model, samples, CFG)
    report = correct_biases(outlier_model, tmp_path / "corrected.onnx", calibration, samples, "u8s8", 4, 8)
    assert len(report.corrected) == 12 and max(report.corrected.values()) > 0  # 2 layers x 6 biased MatMuls
    feeds = list(samples.batches(8))
    reference = _logits(outlier_model, feeds)
    bias = {}
    for name, source in (("plain", outlier_model), ("corrected", tmp_path / "corrected.onnx")):
        quantize_variant(source, tmp_path / f"{name}.onnx", calibration, CFG, "u8s8")
        got = _logits(tmp_path / f"{name}.onnx", feeds)
        mask = _widened([f["input_mask"] for f in feeds]).astype(bool)
        bias[name] = np.mean([abs(float((g - r)[mask].mean())) for g, r in zip(got, reference)])
    assert bias["corrected"] < 0.5 * bias["plain"]


def test_recipe_writes_three_files_with_every_technique(tiny_onnx, samples, tmp_path):
    cfg = CFG.model_copy(update={"smoothing_alpha": 0.5, "outlier_channels": 2, "bias_correction": True,
                                 "bias_correction_batches": 2})
    files = build_int8(tiny_onnx["fused"], tmp_path, samples, cfg)
    assert set(files.paths) == {"s8s8", "u8s8", "ort"}
    assert files.source.endswith("model-smoothed-outliers.onnx")
    assert {"smoothing", "outliers", "bias_correction_s8s8", "bias_correction_u8s8", "ort"} <= set(files.techniques)
    assert files.techniques["ort"]["flash_attention"] == 2 and files.techniques["ort"]["layernorms_unfused"] == 5
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(files.paths["s8s8"]).graph.node)
    feeds = list(samples.batches(8))[:2]
    reference = _logits(tiny_onnx["fused"], feeds)
    for variant, path in files.paths.items():
        for a, b in zip(reference, _logits(path, feeds)):
            assert np.abs(a - b).mean() < 0.05, variant


def test_fallback_rewrites_from_the_same_source_and_calibration(tiny_onnx, samples, tmp_path):
    cfg = CFG.model_copy(update={"smoothing_alpha": 0.5, "outlier_channels": 2})
    source, prepared = prepare_source(tiny_onnx["fused"], tmp_path, samples, cfg)
    assert set(prepared) == {"smoothing", "outliers"}
    calibration = calibrate(source, samples, cfg)
    first = write_int8_files(source, tmp_path / "all", calibration, cfg, variants=("u8s8", "ort"))
    again = write_int8_files(source, tmp_path / "fallback", calibration, cfg, variants=("u8s8", "ort"),
                             nodes_to_exclude=first.quantized_nodes[:2])
    assert again.excluded_nodes == sorted(first.quantized_nodes[:2])
    assert set(again.quantized_nodes) == set(first.quantized_nodes) - set(first.quantized_nodes[:2])
    with pytest.raises(ValueError, match="calibration samples"):
        write_int8_files(source, tmp_path / "bc", calibration, cfg.model_copy(update={"bias_correction": True}))
