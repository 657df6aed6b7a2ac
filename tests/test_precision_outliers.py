"""Outlier-channel decomposition: FP32-equivalent, recorded in the file, left out of the INT8 range."""

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
from bertbuild.precision.outliers import outlier_channels, split_outliers
from bertbuild.precision.smoothing import channel_absmax, smoothing_groups

CFG = Int8Config(samples=16, max_seq_length=128, batch_size=8, smoothing_alpha=None, outlier_channels=2)


@pytest.fixture(scope="module")
def samples(vocab_path):
    return calibration_set(CFG, vocab_path, lower_case=True)


def _logits(path, feed):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.fixture(scope="module")
def massive(tiny_onnx, tmp_path_factory):
    """The tiny model with one GELU channel made massive (its FFN-in column x12), as in real checkpoints."""
    model = onnx.load(str(tiny_onnx["fused"]))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    gelu = next(n for n in model.graph.node if n.op_type == "Gelu")
    bias_add = producer[gelu.input[0]]
    matmul = next(producer[name] for name in bias_add.input if producer.get(name) and producer[name].op_type == "MatMul")
    weight = numpy_helper.to_array(inits[matmul.input[1]]).copy()
    weight[:, 5] *= 12.0
    inits[matmul.input[1]].CopyFrom(numpy_helper.from_array(weight, matmul.input[1]))
    path = tmp_path_factory.mktemp("massive") / "model-fused.onnx"
    onnx.save(model, str(path))
    return path, gelu.output[0]


def test_split_is_fp32_equivalent_and_recorded(massive, samples, tmp_path):
    path, activation = massive
    report = split_outliers(path, tmp_path / "split.onnx", samples, CFG)
    model = onnx.load(str(tmp_path / "split.onnx"))
    assert set(report.channels) == set(smoothing_groups(onnx.load(str(path)), ("Gelu",)))  # every FFN-out input
    assert 5 in report.channels[activation] and all(len(c) == 2 for c in report.channels.values())
    assert outlier_channels(model) == report.channels
    assert 0 < report.side_macs_share < 0.02
    feed = next(samples.batches(8))
    for a, b in zip(_logits(path, feed), _logits(tmp_path / "split.onnx", feed)):
        assert np.abs(a - b).max() < 1e-4
    # The INT8 MatMul's weight rows for the split channels are zero.
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    readers = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[0] == activation]
    assert len(readers) == 1 and not inits[readers[0].input[1]][report.channels[activation]].any()


def test_calibration_leaves_split_channels_out_and_int8_improves(massive, samples, tmp_path):
    path, activation = massive
    split_outliers(path, tmp_path / "split.onnx", samples, CFG)
    peak = channel_absmax(path, [activation], samples, 8)[activation]
    plain = calibrate(path, samples, CFG)
    split = calibrate(tmp_path / "split.onnx", samples, CFG)
    assert plain.ranges[activation].max == pytest.approx(peak.max(), rel=1e-5)
    assert split.ranges[activation].max == pytest.approx(np.sort(peak)[-3], rel=1e-5)  # the third-largest channel
    feed = next(samples.batches(8))
    reference = _logits(path, feed)
    errors = {}
    for name, source, calibration, cfg in (("plain", path, plain, CFG.plain()),
                                           ("split", tmp_path / "split.onnx", split, CFG)):
        quantize_variant(source, tmp_path / f"{name}-int8.onnx", calibration, cfg, "u8s8")
        got = _logits(tmp_path / f"{name}-int8.onnx", feed)
        errors[name] = np.mean([np.abs(a - b).mean() for a, b in zip(reference, got)])
    assert errors["split"] < 0.8 * errors["plain"]


def test_outlier_split_and_smoothing_may_not_share_ops(tiny_onnx, samples, tmp_path):
    from bertbuild.precision.recipe import build_int8

    cfg = CFG.model_copy(update={"smoothing_alpha": 0.5, "smoothing_after": ("Gelu",)})
    with pytest.raises(ValueError, match="different ops"):
        build_int8(tiny_onnx["fused"], tmp_path, samples, cfg)


def test_the_side_matmul_is_quantized_with_its_own_range(massive, samples, tmp_path):
    path, activation = massive
    split_outliers(path, tmp_path / "split.onnx", samples, CFG)
    calibration = calibrate(tmp_path / "split.onnx", samples, CFG)
    side = f"{activation}/outlier_channels"
    assert side in calibration.ranges and calibration.ranges[side].max > calibration.ranges[activation].max
    quantized = quantize_variant(tmp_path / "split.onnx", tmp_path / "int8.onnx", calibration, CFG, "u8s8")
    assert sum(name.endswith("/outliers") for name in quantized) == 2  # one per layer: every weight MatMul is INT8
