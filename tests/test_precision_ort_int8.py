"""The ONNX-Runtime-only INT8 file: com.microsoft (Q)Attention, same numbers as the standard Q/DQ file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bertbuild.precision.calibration import calibrate
from bertbuild.precision.calibration_set import calibration_set
from bertbuild.config.precision import Int8Config
from bertbuild.precision.int8 import quantize_int8, quantize_variant
from bertbuild.precision.ort_int8 import MS_DOMAIN, augment_heads, to_flash_attention, write_ort_int8
from bertbuild.precision.smoothing import smooth

CFG = Int8Config(samples=16, max_seq_length=128, batch_size=8).plain()


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


def test_flash_attention_rewrite_keeps_fp32_logits(tiny_onnx, samples):
    model, moved = to_flash_attention(onnx.load(str(tiny_onnx["fused"])))
    ops = [(n.domain or "", n.op_type) for n in model.graph.node]
    assert moved == 2 and ops.count((MS_DOMAIN, "MultiHeadAttention")) == 2 and ("", "Attention") not in ops
    assert ("", "Transpose") not in ops  # the head split and merge are inside the kernel
    attention = next(n for n in model.graph.node if n.op_type == "MultiHeadAttention")
    assert len(attention.input) == 4  # q, k, v, bias: no mask input, so ORT takes its flash path
    feed = next(samples.batches(8))
    assert feed["input_mask"].min() == 0  # real padding in the batch
    for a, b in zip(_logits(tiny_onnx["fused"], feed), _logits(model, feed)):
        assert np.abs(a - b).max() < 1e-4


def test_augmented_heads_by_hand():
    values = np.arange(6, dtype=np.float32).reshape(1, 6)  # 2 heads of 3
    assert augment_heads(values, 2, 9.0).tolist() == [[0, 1, 2, 9, 3, 4, 5, 9]]


def test_ort_file_matches_the_standard_int8_file(tiny_onnx, samples, calibration, tmp_path):
    report = write_ort_int8(tiny_onnx["fused"], tmp_path / "ort.onnx", calibration, CFG)
    ops = _ops(tmp_path / "ort.onnx")
    assert report.flash_attention == 2 and ops.count((MS_DOMAIN, "MultiHeadAttention")) == 2
    standard = quantize_int8(tiny_onnx["fused"], tmp_path, calibration, CFG)
    assert report.quantized_nodes == standard.quantized_nodes  # the same 12 MatMuls, Q/K/V included
    assert ops.count(("", "QuantizeLinear")) == standard.qdq_counts["u8s8"]["QuantizeLinear"]
    feed = next(samples.batches(8))
    reference, ours, theirs = (_logits(p, feed) for p in (tiny_onnx["fused"], tmp_path / "ort.onnx",
                                                           standard.paths["u8s8"]))
    for r, a, b in zip(reference, ours, theirs):
        # Same quantization of the same tensors: the two INT8 files agree far better than either with FP32
        # (not exactly: FP32 rounding differs in the attention kernel and LayerNorm, and can flip an INT8 rounding).
        assert np.abs(a - b).mean() < 0.25 * np.abs(r - b).mean()


def test_excluded_nodes_stay_fp32_in_the_ort_file(tiny_onnx, samples, calibration, tmp_path):
    first_q = calibration.targets[0]["node"]
    report = write_ort_int8(tiny_onnx["fused"], tmp_path / "ort.onnx", calibration, CFG, nodes_to_exclude=[first_q])
    model = onnx.load(str(tmp_path / "ort.onnx"))
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    node = next(n for n in model.graph.node if n.name == first_q)
    assert report.excluded_nodes == [first_q] and first_q not in report.quantized_nodes
    assert not set(node.input) & dq_outputs and report.flash_attention == 2


def test_layernorms_become_elementwise_and_smoothing_stays_a_mul(tiny_onnx, samples, tmp_path):
    cfg = CFG.model_copy(update={"smoothing_alpha": 0.5})
    smoothed = tmp_path / "smoothed.onnx"
    smooth(tiny_onnx["fused"], smoothed, samples, cfg)
    calibration = calibrate(smoothed, samples, cfg)
    report = write_ort_int8(smoothed, tmp_path / "ort.onnx", calibration, cfg)
    model = onnx.load(str(tmp_path / "ort.onnx"))
    ops = [n.op_type for n in model.graph.node]
    # 2 layers x 2 + the embedding LayerNorm, each now two ReduceMeans and elementwise ops.
    assert report.layernorms_unfused == 5 and "LayerNormalization" not in ops and ops.count("ReduceMean") == 10
    divisions = [n for n in model.graph.node if n.op_type == "Mul" and n.output[0].endswith("/smoothed")]
    assert len(divisions) == 4 and all(
        any(d.output[0] in n.input and n.op_type == "QuantizeLinear" for n in model.graph.node) for d in divisions)
    # The TensorRT file from the same smoothed graph stays standard ONNX, LayerNormalization included.
    quantize_variant(smoothed, tmp_path / "s8s8.onnx", calibration, cfg, "s8s8")
    assert all(domain == "" for domain, _ in _ops(tmp_path / "s8s8.onnx"))
    assert ("", "LayerNormalization") in _ops(tmp_path / "s8s8.onnx")
    unfolded = tmp_path / "u8s8.onnx"
    quantize_variant(smoothed, unfolded, calibration, cfg, "u8s8")
    feed = next(samples.batches(8))
    reference = _logits(tiny_onnx["fused"], feed)
    for r, a, b in zip(reference, _logits(tmp_path / "ort.onnx", feed), _logits(unfolded, feed)):
        assert np.abs(a - b).mean() < 0.25 * np.abs(r - b).mean()


def test_unfused_layernorm_is_the_same_function(tiny_onnx, samples):
    import onnx_graphsurgeon as gs

    from bertbuild.precision.ort_int8 import unfuse_layernorm

    graph = gs.import_onnx(onnx.load(str(tiny_onnx["fused"])))
    assert unfuse_layernorm(graph) == 5
    model = gs.export_onnx(graph.cleanup().toposort())
    feed = next(samples.batches(8))
    for a, b in zip(_logits(tiny_onnx["fused"], feed), _logits(model, feed)):
        assert np.abs(a - b).max() < 1e-4
