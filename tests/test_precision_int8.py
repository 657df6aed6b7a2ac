"""INT8: calibration on the train half only, three methods, its written record, explicit Q/DQ in two variants."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bertbuild.precision.calibration import CALIBRATION_FILE, calibrate
from bertbuild.precision.calibration_set import calibration_set
from bertbuild.config.precision import Int8Config
from bertbuild.precision.int8 import quantize_int8, zero_points
from bertbuild.precision.range_stats import AbsHistogram, amax_entropy, amax_percentile
from bertbuild.precision.ranges import load_calibration
from bertbuild.precision.targets import quantization_targets

CFG = Int8Config(samples=24, max_seq_length=128, batch_size=8, method="percentile").plain()


@pytest.fixture(scope="module")
def samples(vocab_path):
    return calibration_set(CFG, vocab_path, lower_case=True)


@pytest.fixture(scope="module")
def calibration(tiny_onnx, samples, tmp_path_factory):
    return calibrate(tiny_onnx["fused"], samples, CFG, out_dir=tmp_path_factory.mktemp("calibration"))


@pytest.fixture(scope="module")
def quantized(tiny_onnx, calibration, tmp_path_factory):
    return quantize_int8(tiny_onnx["fused"], tmp_path_factory.mktemp("int8"), calibration, CFG)


def test_calibration_reads_only_train_half_questions(samples, vocab_path):
    from bertbuild.squad import data

    train, heldout = data.split_by_article(data.load_dataset())
    train_ids = {e.qid for e in data.examples_from(train)}
    heldout_ids = {e.qid for e in data.examples_from(heldout)}
    assert len(samples) == CFG.samples and samples.max_seq_length == 128
    assert samples.question_ids and set(samples.question_ids) <= train_ids
    assert not set(samples.question_ids) & heldout_ids
    # Seeded: the same config draws the same rows; another seed draws others.
    again = calibration_set(CFG, vocab_path, lower_case=True)
    other = calibration_set(CFG.model_copy(update={"seed": 1}), vocab_path, lower_case=True)
    assert again.fingerprint == samples.fingerprint and other.fingerprint != samples.fingerprint


def test_targets_are_weight_matmuls_except_the_head(tiny_onnx):
    model = onnx.load(str(tiny_onnx["fused"]))
    targets = quantization_targets(model, CFG)
    with_head = quantization_targets(model, CFG.model_copy(update={"quantize_head": True}))
    # Per layer: Q, K, V, attention output, FFN in, FFN out.
    assert len(targets) == 2 * 6 and len(with_head) == len(targets) + 1
    constants = {i.name for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    assert all(by_name[t.node].op_type == "MatMul" and by_name[t.node].input[1] in constants for t in targets)


def test_histogram_methods_on_a_known_distribution():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 200_000), [40.0, -35.0]])  # two outliers
    hist = AbsHistogram(2048)
    for chunk in np.array_split(values, 7):  # the edge grows as batches arrive
        hist.add(chunk)
    assert hist.low == pytest.approx(-35.0) and hist.high == pytest.approx(40.0)
    assert hist.counts.sum() == values.size
    p9999 = amax_percentile(hist, 99.99)
    assert 3.3 < p9999 < 4.6  # |N(0,1)| 99.99th percentile is 3.89
    entropy = amax_entropy(hist)
    assert 2.0 < entropy < 20.0  # clips the outliers, keeps the bulk


def test_methods_give_different_ranges_and_minmax_is_widest(tiny_onnx, samples, calibration):
    results = {m: calibrate(tiny_onnx["fused"], samples, CFG.model_copy(update={"method": m, "percentile": 99.0}))
               for m in ("minmax", "percentile", "entropy")}
    names = sorted(results["minmax"].ranges)
    amax = {m: np.array([c.ranges[n].amax for n in names]) for m, c in results.items()}
    assert (amax["minmax"] >= amax["percentile"] - 1e-6).all() and (amax["minmax"] >= amax["entropy"] - 1e-6).all()
    assert not np.allclose(amax["minmax"], amax["percentile"]) and not np.allclose(amax["entropy"], amax["percentile"])
    for method, result in results.items():
        assert result.method == method


def test_record_round_trips_and_calibrate_never_reads_an_earlier_one(tiny_onnx, samples, calibration, tmp_path):
    def ranges(c):
        return {k: dataclasses.asdict(v) for k, v in c.ranges.items()}

    path = calibration.cache_path
    assert path.endswith("/" + CALIBRATION_FILE)
    back = load_calibration(path)
    assert ranges(back) == ranges(calibration) and back.targets == calibration.targets
    assert back.question_ids == calibration.question_ids and back.summary() == calibration.summary()
    # Reuse is the flow's step cache's job: a record already in out_dir (here a planted one
    # claiming other ranges) is written over with what this model and these samples give.
    planted = load_calibration(path).to_json()
    planted["ranges"] = {name: {"min": -1.0, "max": 1.0, "amax": 1.0} for name in planted["ranges"]}
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps(planted))
    again = calibrate(tiny_onnx["fused"], samples, CFG, out_dir=tmp_path)
    assert ranges(again) == ranges(calibration) == ranges(load_calibration(tmp_path / CALIBRATION_FILE))
    changed = tmp_path / "changed.onnx"
    model = onnx.load(str(tiny_onnx["fused"]))
    model.doc_string = "other bytes"
    onnx.save(model, str(changed))
    assert calibrate(changed, samples, CFG).model_sha256 != calibration.model_sha256


def test_s8s8_is_symmetric_and_u8s8_unsigned(quantized):
    s8 = zero_points(quantized.paths["s8s8"], activations_only=True)
    u8 = zero_points(quantized.paths["u8s8"], activations_only=True)
    assert s8 and all(z.dtype == np.int8 and not z.any() for z in s8.values())
    assert u8 and all(z.dtype == np.uint8 for z in u8.values()) and any(z.any() for z in u8.values())
    weights = {k: z for k, z in zero_points(quantized.paths["s8s8"]).items() if k not in s8}
    assert weights and all(z.dtype == np.int8 and not z.any() for z in weights.values())
    for variant in ("s8s8", "u8s8"):
        counts = quantized.qdq_counts[variant]
        assert counts["QuantizeLinear"] == 8  # 2 layers x (LN out shared by QKV, context, LN out, GELU out)
        assert counts["DequantizeLinear"] == 8 + 12  # activations + one per weight
        onnx.checker.check_model(quantized.paths[variant], full_check=True)


def test_only_target_matmuls_read_quantized_tensors(quantized):
    model = onnx.load(quantized.paths["s8s8"])
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    readers = {n.name for n in model.graph.node for i in n.input if i in dq_outputs}
    assert readers == set(quantized.quantized_nodes)  # not the residual Add, not Shape


def test_int8_logits_close_to_fp32_and_excluded_nodes_stay_float(tiny_onnx, samples, calibration, quantized,
                                                               tmp_path):
    feed = next(samples.batches(8))
    reference = ort.InferenceSession(str(tiny_onnx["fused"]), providers=["CPUExecutionProvider"]).run(None, feed)
    for variant, path in quantized.paths.items():
        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)
        for a, b in zip(reference, got):
            assert 0 < np.abs(a - b).max() < 0.25, variant
    keep = quantized.quantized_nodes[:3]
    partial = quantize_int8(tiny_onnx["fused"], tmp_path, calibration, CFG, nodes_to_exclude=keep)
    assert partial.excluded_nodes == sorted(keep) and not set(keep) & set(partial.quantized_nodes)
    model = onnx.load(partial.paths["s8s8"])
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert all(not set(n.input) & dq_outputs for n in model.graph.node if n.name in keep)
    with pytest.raises(ValueError, match="nothing left to quantize"):
        quantize_int8(tiny_onnx["fused"], tmp_path, calibration, CFG, nodes_to_exclude=quantized.quantized_nodes)


def test_a_config_with_rewrites_refuses_an_unprepared_file(tiny_onnx, calibration, tmp_path):
    refused = r"smoothing \(alpha 0.7\) and the outlier split \(8 channels\).*prepare_source"
    with pytest.raises(ValueError, match=refused):
        quantize_int8(tiny_onnx["fused"], tmp_path, calibration, Int8Config())  # the defaults smooth and split
