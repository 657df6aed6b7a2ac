"""SmoothQuant-style smoothing: an FP32-equivalent rewrite that flattens outlier channels before INT8."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from bertbuild.precision.calibration import calibrate
from bertbuild.precision.calibration_set import calibration_set
from bertbuild.config.precision import Int8Config
from bertbuild.precision.int8 import quantize_variant
from bertbuild.precision.smoothing import channel_absmax, smooth, smoothing_groups, smoothing_scales

CFG = Int8Config(samples=16, max_seq_length=128, batch_size=8, smoothing_alpha=0.5, outlier_channels=0)


@pytest.fixture(scope="module")
def samples(vocab_path):
    return calibration_set(CFG, vocab_path, lower_case=True)


def _logits(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_scales_by_hand():
    # a = (4, 1, 0), w = (1, 4, 2), alpha 0.5: s = sqrt(a) / sqrt(w) = (2, 0.5, -> 1 for a channel that never fires)
    scales = smoothing_scales(np.array([4.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0]), 0.5)
    assert scales == pytest.approx([2.0, 0.5, 1.0])
    assert smoothing_scales(np.array([9.0]), np.array([3.0]), 1.0) == pytest.approx([9.0])
    with pytest.raises(ValueError):
        smoothing_scales(np.ones(1), np.ones(1), 1.5)


def test_smoothing_keeps_fp32_logits_and_the_residual(tiny_onnx, samples, tmp_path):
    out = tmp_path / "smoothed.onnx"
    report = smooth(tiny_onnx["fused"], out, samples, CFG)
    model = onnx.load(str(out))
    # 2 layers x (LN -> QKV, LN -> FFN in); the QA head's input is left alone.
    assert len(report.tensors) == 4
    divisions = {n.output[0]: n for n in model.graph.node if n.op_type == "Mul" and n.output[0].endswith("/smoothed")}
    assert len(divisions) == 4
    readers = [n for n in model.graph.node for name in n.input if name in divisions]
    assert readers and all(n.op_type == "MatMul" for n in readers)
    # The residual Add still reads the original LayerNorm output.
    for activation in report.tensors:
        consumers = [n.op_type for n in model.graph.node if activation in n.input]
        assert "Add" in consumers and "MatMul" not in consumers
    feed = next(samples.batches(8))
    for a, b in zip(_logits(tiny_onnx["fused"], feed), _logits(out, feed)):
        assert np.abs(a - b).max() < 1e-3


def test_smoothing_flattens_an_outlier_channel_and_cuts_int8_error(tiny_onnx, samples, tmp_path):
    """Give one LayerNorm an outlier channel (x30), as real BERT checkpoints have; smoothing must help INT8."""
    model = onnx.load(str(tiny_onnx["fused"]))
    groups = smoothing_groups(model, ("LayerNormalization",))
    target = next(iter(groups))
    layer_norm = next(n for n in model.graph.node if n.output[0] == target)
    inits = {i.name: i for i in model.graph.initializer}
    for name in layer_norm.input[1:3]:  # gamma and beta
        value = numpy_helper.to_array(inits[name]).copy()
        value[7] *= 30.0
        inits[name].CopyFrom(numpy_helper.from_array(value, name))
    outlier = tmp_path / "outlier.onnx"
    onnx.save(model, str(outlier))

    smoothed = tmp_path / "outlier-smoothed.onnx"
    smooth(outlier, smoothed, samples, CFG)
    before = channel_absmax(outlier, [target], samples, 8)[target]
    after = channel_absmax(smoothed, [target + "/smoothed"], samples, 8)[target + "/smoothed"]
    assert before.max() / np.median(before) > 3 * after.max() / np.median(after)

    feed = next(samples.batches(8))
    reference = _logits(outlier, feed)
    errors = {}
    for name, source, cfg in (("plain", outlier, CFG.plain()), ("smoothed", smoothed, CFG)):
        calibration = calibrate(source, samples, cfg)
        quantize_variant(source, tmp_path / f"{name}-int8.onnx", calibration, cfg, "u8s8")
        got = _logits(tmp_path / f"{name}-int8.onnx", feed)
        errors[name] = np.mean([np.abs(a - b).mean() for a, b in zip(reference, got)])
    assert errors["smoothed"] < 0.8 * errors["plain"]


def test_smoothing_needs_an_alpha(tiny_onnx, samples, tmp_path):
    with pytest.raises(ValueError, match="smoothing is off"):
        smooth(tiny_onnx["fused"], tmp_path / "x.onnx", samples, CFG.model_copy(update={"smoothing_alpha": None}))
