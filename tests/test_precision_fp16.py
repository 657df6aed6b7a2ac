"""FP16 with FP32 islands: LayerNorm and the QA head stay FP32, I/O types unchanged, logits close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bertbuild.config.precision import Fp16Config
from bertbuild.precision.fp16 import convert_to_fp16


@pytest.fixture(scope="module")
def feeds(tiny_onnx):
    from bertbuild.model.checkpoint import vocab_and_case
    from bertbuild.config import EvalConfig
    from bertbuild.evaluation.score import scoring_set

    features = scoring_set(EvalConfig(limit=6, max_seq_length=128), *vocab_and_case(tiny_onnx["checkpoint"])).features
    return list(features.batches(4))


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [session.run(None, feed) for feed in feeds]
    return [np.concatenate([o[i] for o in outputs]) for i in range(len(outputs[0]))]


def _elem_types(values):
    return {v.name: v.type.tensor_type.elem_type for v in values}


def _float_input_type(model, node):
    """Element type of the node's first input after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _elem_types([*inferred.graph.value_info, *inferred.graph.input])
    types |= {init.name: init.data_type for init in inferred.graph.initializer}
    return types[node.input[0]]


@pytest.mark.parametrize("source", ["fused", "fp32"])
def test_fp16_file_keeps_io_layernorm_and_head_fp32_and_matches(tiny_onnx, feeds, tmp_path, source):
    out = tmp_path / "model-fp16.onnx"
    report = convert_to_fp16(tiny_onnx[source], out, Fp16Config())
    original, converted = onnx.load(str(tiny_onnx[source])), onnx.load(str(out))
    onnx.checker.check_model(converted, full_check=True)

    assert _elem_types(converted.graph.input) == _elem_types(original.graph.input)  # int32 stays int32
    assert set(_elem_types(converted.graph.output).values()) == {TensorProto.FLOAT}
    halves = [i for i in converted.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert len(halves) >= 12 and report.initializers_converted == len(halves)
    # 2 layers x 2 LayerNorms + the embedding LayerNorm: fused ops or unfused chains, all FP32.
    assert report.layernorm_islands == 5
    by_name = {n.name: n for n in converted.graph.node}
    for node in converted.graph.node:
        if node.op_type == "LayerNormalization":
            assert node.name in report.fp32_nodes and _float_input_type(converted, node) == TensorProto.FLOAT
    head = [by_name[name] for name in report.fp32_nodes if by_name[name].op_type == "MatMul"]
    assert head, "the QA head MatMul stays FP32"
    assert sum(n.op_type == "MatMul" for n in converted.graph.node if n.name not in report.fp32_nodes) >= 12

    fp32, fp16 = _run(tiny_onnx[source], feeds), _run(out, feeds)
    for a, b in zip(fp32, fp16):
        assert np.isfinite(b).all() and b.dtype == np.float32
        assert np.abs(a - b).max() < 0.01
        assert (a.argmax(axis=1) == b.argmax(axis=1)).mean() == 1.0


def test_head_may_go_fp16_when_asked(tiny_onnx, tmp_path):
    kept = convert_to_fp16(tiny_onnx["fused"], tmp_path / "a.onnx", Fp16Config())
    dropped = convert_to_fp16(tiny_onnx["fused"], tmp_path / "b.onnx", Fp16Config(keep_logits_fp32=False))
    matmuls = {n.name for n in onnx.load(str(tmp_path / "a.onnx")).graph.node if n.op_type == "MatMul"}
    assert matmuls & set(kept.fp32_nodes) and not matmuls & set(dropped.fp32_nodes)


def test_out_of_range_constants_clip_to_fp16_max_instead_of_inf(tmp_path):
    """A -1e9 attention-mask constant must become -65504: -inf * 0 would be NaN."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    keep = helper.make_tensor_value_info("keep", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    one, big = numpy_helper.from_array(np.float32(1.0), "one"), numpy_helper.from_array(np.float32(-1e9), "big")
    graph = helper.make_graph([
        helper.make_node("Sub", ["one", "keep"], ["masked"], name="sub"),
        helper.make_node("Mul", ["masked", "big"], ["bias"], name="mul"),
        helper.make_node("Add", ["x", "bias"], ["y"], name="add"),
    ], "mask", [x, keep], [y], [one, big])
    source = tmp_path / "mask.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]), str(source))
    report = convert_to_fp16(source, tmp_path / "mask-fp16.onnx", Fp16Config(keep_logits_fp32=False))
    assert report.values_clipped == 1
    session = ort.InferenceSession(str(tmp_path / "mask-fp16.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.array([1.5, 0.0], np.float32), "keep": np.array([1.0, 0.0], np.float32)})
    assert out.dtype == np.float32 and out[0] == 1.5 and out[1] == -65504.0


@pytest.mark.parametrize("source", ["fused", "fp32"])
def test_softmax_runs_in_fp32_read_off_the_graph(tiny_onnx, tmp_path, source):
    """Fused: each Attention (softmax inside) reads and writes FLOAT. Unfused: each Softmax does."""
    out = tmp_path / "model-fp16.onnx"
    report = convert_to_fp16(tiny_onnx[source], out, Fp16Config())
    model = onnx.load(str(out))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _elem_types([*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output])
    attentions = [n for n in model.graph.node if n.op_type == "Attention"]
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    kept = attentions if source == "fused" else softmaxes
    assert len(kept) == 2 and not (softmaxes if source == "fused" else attentions)
    assert report.fp32_attention == (2 if source == "fused" else 0)
    for node in kept:
        floats = [name for name in [*node.input, *node.output] if name and name in types]
        assert floats and all(types[name] == TensorProto.FLOAT for name in floats)
        assert not any(a.name == "softmax_precision" for a in node.attribute)  # TensorRT refuses it
    # ...while the weight GEMMs around them are FP16.
    matmul_types = {types.get(n.output[0]) for n in model.graph.node if n.op_type == "MatMul"}
    assert TensorProto.FLOAT16 in matmul_types


def test_softmax_may_go_fp16_when_not_kept(tiny_onnx, tmp_path):
    report = convert_to_fp16(tiny_onnx["fused"], tmp_path / "a.onnx", Fp16Config(keep_fp32_ops=()))
    attentions = [n for n in onnx.load(str(tmp_path / "a.onnx")).graph.node if n.op_type == "Attention"]
    assert report.fp32_attention == 0
    assert attentions and all(types_of(tmp_path / "a.onnx")[n.input[0]] == TensorProto.FLOAT16 for n in attentions)


def types_of(path) -> dict:
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    return _elem_types([*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output])


def test_bf16_file_has_the_same_islands_in_bfloat16_and_matches_on_openvino(tiny_onnx, feeds, tmp_path):
    """BF16 is the FP16 conversion to the other 16-bit type: same FP32 islands, bfloat16 elsewhere.

    ONNX Runtime's CPU provider has no BF16 kernels for these ops, so the file is run on OpenVINO
    at the BF16 hint where the CPU has it, else at FP32 (the file's weights and casts all the same).
    """
    from bertbuild.backends.openvino import OpenVinoRunner, can_compute, capabilities
    from bertbuild.precision.fp16 import convert_to_bf16

    fp16 = convert_to_fp16(tiny_onnx["fused"], tmp_path / "model-fp16.onnx", Fp16Config())
    bf16 = convert_to_bf16(tiny_onnx["fused"], tmp_path / "model-bf16.onnx", Fp16Config())
    converted = onnx.load(str(tmp_path / "model-bf16.onnx"))
    onnx.checker.check_model(converted, full_check=True)
    assert bf16.fp32_nodes == fp16.fp32_nodes and bf16.casts_inserted == fp16.casts_inserted
    types = {i.data_type for i in converted.graph.initializer if i.data_type != TensorProto.INT64}
    assert TensorProto.BFLOAT16 in types and TensorProto.FLOAT16 not in types
    assert set(_elem_types(converted.graph.output).values()) == {TensorProto.FLOAT}
    for node in converted.graph.node:
        if node.op_type == "LayerNormalization":
            assert _float_input_type(converted, node) == TensorProto.FLOAT

    hint = "bf16" if can_compute("bf16", capabilities())[0] else "f32"
    with OpenVinoRunner(tmp_path / "model-bf16.onnx", hint) as runner:
        outputs = [runner.infer(feed) for feed in feeds]
    got = [np.concatenate([o[name] for o in outputs]) for name in ("start_logits", "end_logits")]
    for a, b in zip(_run(tiny_onnx["fused"], feeds), got):
        assert np.isfinite(b).all() and np.abs(a - b).mean() < 0.25  # BF16's validation tolerance


def test_bf16_keeps_values_past_the_fp16_range(tmp_path):
    """BF16 has FP32's exponent: a -1e9 mask constant stays about -1e9, nothing is clipped."""
    import ml_dtypes

    from bertbuild.precision.fp16 import convert_to_bf16

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "big"], ["y"], name="mul")], "g", [x], [y],
                              [numpy_helper.from_array(np.float32(-1e9), "big")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)]), str(tmp_path / "g.onnx"))
    report = convert_to_bf16(tmp_path / "g.onnx", tmp_path / "g-bf16.onnx", Fp16Config(keep_logits_fp32=False))
    (big,) = onnx.load(str(tmp_path / "g-bf16.onnx")).graph.initializer
    assert report.values_clipped == 0 and big.data_type == TensorProto.BFLOAT16
    assert float(numpy_helper.to_array(big).astype(np.float32)) == float(np.float32(ml_dtypes.bfloat16(-1e9)))
