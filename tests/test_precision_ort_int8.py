"""The ONNX-Runtime-only INT8 file: com.microsoft (Q)Attention, same numbers as the standard Q/DQ file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bertbuild.precision.calibration import calibrate, calibration_set
from bertbuild.precision.config import Int8Config
from bertbuild.precision.int8 import quantize_int8, quantize_variant
from bertbuild.precision.ort_int8 import MS_DOMAIN, to_contrib_attention, write_ort_int8
from bertbuild.precision.smoothing import smooth

CFG = Int8Config(samples=16, max_seq_length=128, batch_size=8)


@pytest.fixture(scope="module")
def samples(vocab_path):
    return calibration_set(CFG, vocab_path, lower_case=True)


@pytest.fixture(scope="module")
def calibration(tiny_onnx, samples):
    return calibrate(tiny_onnx["fused"], samples, CFG)


def _logits(path_or_model, feed):
    source = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feed)


def _ops(path):
    return [(n.domain or "", n.op_type) for n in onnx.load(str(path)).graph.node]


def test_contrib_attention_replaces_projections_and_keeps_fp32_logits(tiny_onnx, samples):
    model, replaced = to_contrib_attention(onnx.load(str(tiny_onnx["fused"])))
    ops = [(n.domain or "", n.op_type) for n in model.graph.node]
    assert ops.count((MS_DOMAIN, "Attention")) == 2 and ("", "Attention") not in ops
    assert ("", "Transpose") not in ops  # the head split and merge are inside the kernel
    assert all(len(matmuls) == 3 for matmuls in replaced.values())
    feed = next(samples.batches(8))
    for a, b in zip(_logits(tiny_onnx["fused"], feed), _logits(model, feed)):
        assert np.abs(a - b).max() < 1e-4


def test_ort_file_uses_qattention_and_matches_the_standard_int8_file(tiny_onnx, samples, calibration, tmp_path):
    report = write_ort_int8(tiny_onnx["fused"], tmp_path / "ort.onnx", calibration, CFG)
    ops = _ops(tmp_path / "ort.onnx")
    assert report.attention_int8 == 2 and report.attention_fp32 == 0
    assert ops.count((MS_DOMAIN, "QAttention")) == 2
    standard = quantize_int8(tiny_onnx["fused"], tmp_path, calibration, CFG).paths["u8s8"]
    assert report.quantized_nodes == quantize_int8(tiny_onnx["fused"], tmp_path, calibration, CFG).quantized_nodes
    feed = next(samples.batches(8))
    reference, ours, theirs = (_logits(p, feed) for p in (tiny_onnx["fused"], tmp_path / "ort.onnx", standard))
    for r, a, b in zip(reference, ours, theirs):
        # Same quantization of the same tensors: the two INT8 files agree far better than either with FP32.
        assert np.abs(a - b).max() < 0.25 * np.abs(r - b).max()


def test_an_excluded_projection_keeps_that_layer_attention_fp32(tiny_onnx, samples, calibration, tmp_path):
    model, replaced = to_contrib_attention(onnx.load(str(tiny_onnx["fused"])))
    first_q = next(iter(replaced.values()))[0]
    report = write_ort_int8(tiny_onnx["fused"], tmp_path / "ort.onnx", calibration, CFG, nodes_to_exclude=[first_q])
    ops = _ops(tmp_path / "ort.onnx")
    assert report.attention_int8 == 1 and report.attention_fp32 == 1 and report.excluded_nodes == [first_q]
    assert ops.count((MS_DOMAIN, "QAttention")) == 1 and ops.count((MS_DOMAIN, "Attention")) == 1


def test_smoothing_folds_into_per_channel_quantize(tiny_onnx, samples, tmp_path):
    cfg = CFG.model_copy(update={"smoothing_alpha": 0.5})
    smoothed = tmp_path / "smoothed.onnx"
    smooth(tiny_onnx["fused"], smoothed, samples, cfg)
    calibration = calibrate(smoothed, samples, cfg)
    report = write_ort_int8(smoothed, tmp_path / "ort.onnx", calibration, cfg)
    model = onnx.load(str(tmp_path / "ort.onnx"))
    assert report.smoothing_folded == 4 and not [n for n in model.graph.node if n.op_type == "Mul"
                                                   and n.output[0].endswith("/smoothed")]
    per_channel = [n for n in model.graph.node if n.op_type == "QuantizeLinear"
                   and any(a.name == "axis" for a in n.attribute)]
    assert len(per_channel) == 4
    # The TensorRT file from the same smoothed graph stays standard ONNX, with the Mul in place.
    standard = quantize_variant(smoothed, tmp_path / "s8s8.onnx", calibration, cfg, "s8s8")
    assert standard and all(domain == "" for domain, _ in _ops(tmp_path / "s8s8.onnx"))
    unfolded = tmp_path / "u8s8.onnx"
    quantize_variant(smoothed, unfolded, calibration, cfg, "u8s8")
    feed = next(samples.batches(8))
    reference = _logits(tiny_onnx["fused"], feed)
    for r, a, b in zip(reference, _logits(tmp_path / "ort.onnx", feed), _logits(unfolded, feed)):
        # x * (1/s) / d and x / (d * s) round alike but for the odd element on a rounding boundary.
        assert np.abs(a - b).mean() < 0.25 * np.abs(r - b).mean()
