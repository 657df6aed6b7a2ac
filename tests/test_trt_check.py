"""Static TensorRT readiness: one hand-made bad graph per rule fails with one line; the project's own files pass."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bertbuild.runner import Profile
from bertbuild.cli import main
from bertbuild.errors import NotTensorRTReady, UserInputError
from bertbuild.model.signature import INPUT_NAMES
from bertbuild.trt_check import VERSIONS, check_onnx, host_version, load_matrix, matrix_version_for

F32, I8, U8, I32 = TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32


def _bert_inputs(dims=("batch", "seq")):
    return [helper.make_tensor_value_info(name, I32, list(dims)) for name in INPUT_NAMES]


def _save(tmp_path, nodes, inputs=(), outputs=(), initializers=(), opset=23, extra_opsets=(), bert_inputs=None,
          check=True):
    """A small model with the three BERT inputs (unused, as the profiles expect them) plus what the test needs."""
    graph = helper.make_graph(list(nodes), "bad", [*(bert_inputs if bert_inputs is not None else _bert_inputs()),
                                                   *inputs], list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    if check:
        onnx.checker.check_model(model)  # valid ONNX: only TensorRT's rules may fail it
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    return path


def _vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, list(dims))


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _one_line(path, rule, where, version="11", profiles=None):
    report = check_onnx(path, version, profiles)
    assert not report.ready
    assert len(report.findings) == 1, report.findings
    line = report.findings[0]
    assert "\n" not in line and f"'{where}'" in line and f"{rule}:" in line, line
    return line


# --- one bad graph per rule ---------------------------------------------------------------------------

def test_opset_beyond_the_parser(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="relu")],
                 [_vi("x", F32, [2, 8])], [_vi("y", F32, [2, 8])], opset=25)
    assert "opset 25" in _one_line(path, "opset", "opset")
    assert "opset 25 is outside TensorRT 10.14's 9..23" in _one_line(path, "opset", "opset", "10.14")


def test_com_microsoft_op(tmp_path):
    node = helper.make_node("FusedMatMul", ["a", "b"], ["y"], name="ort_fused", domain="com.microsoft")
    path = _save(tmp_path, [node], [_vi("a", F32, [2, 8]), _vi("b", F32, [8, 4])], [_vi("y", F32, [2, 4])],
                 extra_opsets=[helper.make_opsetid("com.microsoft", 1)], check=False)
    assert "contrib" in _one_line(path, "domain", "ort_fused")


@pytest.mark.parametrize("op, inputs, out_type", [
    ("MatMulInteger", [("a", I8, [2, 8]), ("b", I8, [8, 4])], I32),
    ("QLinearMatMul", [("a", I8, [2, 8]), ("a_s", F32, []), ("a_z", I8, []), ("b", I8, [8, 4]), ("b_s", F32, []),
                       ("b_z", I8, []), ("y_s", F32, []), ("y_z", I8, [])], I8),
    ("DynamicQuantizeLinear", [("a", F32, [2, 8])], U8),
])
def test_operators_the_parser_does_not_import(tmp_path, op, inputs, out_type):
    outputs = ["y", "y_scale", "y_zp"] if op == "DynamicQuantizeLinear" else ["y"]
    node = helper.make_node(op, [name for name, _, _ in inputs], outputs, name="int_op")
    path = _save(tmp_path, [node], [_vi(*i) for i in inputs], [_vi("y", out_type, [2, 4] if op != "DynamicQuantizeLinear" else [2, 8])])
    for version in VERSIONS:
        assert "not supported by TensorRT" in _one_line(path, "operator", "int_op", version)


def test_element_type_outside_the_op_column(tmp_path):
    # MatMul takes FP32/FP16/BF16 only: an INT32 MatMul is valid ONNX and unsupported by the parser.
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="int_matmul")
    path = _save(tmp_path, [node], [_vi("a", I32, [2, 8]), _vi("b", I32, [8, 4])], [_vi("y", I32, [2, 4])])
    line = _one_line(path, "dtype", "int_matmul")
    assert "A 'a' is INT32" in line and "takes BF16, FP16, FP32" in line


def test_graph_io_type_tensorrt_has_no_binding_for(tmp_path):
    path = _save(tmp_path, [], [_vi("s", TensorProto.UINT16, [2])], [_vi("s", TensorProto.UINT16, [2])])
    assert "UINT16 is not a TensorRT network type" in _one_line(path, "dtype", "s")


def test_layernorm_statistics_outputs(tmp_path):
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y", "mean"], name="ln", axis=-1)
    path = _save(tmp_path, [node], [_vi("x", F32, [2, 8])], [_vi("y", F32, [2, 8])],
                 [_const("g", np.ones(8, np.float32)), _const("b", np.zeros(8, np.float32))])
    assert "'mean' must be left empty" in _one_line(path, "outputs", "ln")


def _qdq_graph(tmp_path, zero_point, scale=np.float32(0.1), activation_dq_per_channel=False):
    """x -> Q -> DQ -> y; the Q/DQ pair is what the rule looks at."""
    inits = [_const("s", scale), _const("z", zero_point)]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant", axis=1),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dequant", axis=1)]
    if activation_dq_per_channel:  # per-tensor Q, per-channel DQ of the same activation
        inits += [_const("s_ch", np.full(8, 0.1, np.float32)), _const("z_ch", np.zeros(8, np.int8))]
        nodes[1] = helper.make_node("DequantizeLinear", ["q", "s_ch", "z_ch"], ["y"], name="dequant", axis=1)
    return _save(tmp_path, nodes, [_vi("x", F32, [2, 8])], [_vi("y", F32, [2, 8])], inits)


def test_qdq_nonzero_zero_point(tmp_path):
    path = _qdq_graph(tmp_path, np.int8(3))
    report = check_onnx(path)
    assert [line.split(":")[0] for line in report.findings] == ["node 'quant' (QuantizeLinear)",
                                                                "node 'dequant' (DequantizeLinear)"]
    assert all("qdq:" in line and "is [3], TensorRT needs 0" in line for line in report.findings)


def test_qdq_uint8_fails_like_a_u8s8_file(tmp_path):
    path = _qdq_graph(tmp_path, np.uint8(0))
    report = check_onnx(path)
    assert len(report.findings) == 2 and all("UINT8 quantization is not supported" in f for f in report.findings)


def test_qdq_per_channel_on_an_activation(tmp_path):
    path = _qdq_graph(tmp_path, np.int8(0), activation_dq_per_channel=True)
    assert "per-channel scale (axis 1) on an activation" in _one_line(path, "qdq", "dequant")


def test_qdq_per_channel_weight_and_zero_point_zero_pass(tmp_path):
    weight = _const("w", np.ones((8, 4), np.int8))
    inits = [weight, _const("ws", np.full(4, 0.1, np.float32)), _const("wz", np.zeros(4, np.int8)),
             _const("s", np.float32(0.1)), _const("z", np.int8(0))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xd"], name="dequant"),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dequant_w", axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm")]
    path = _save(tmp_path, nodes, [_vi("x", F32, [2, 8])], [_vi("y", F32, [2, 4])], inits)
    assert check_onnx(path).ready


def test_qdq_zero_point_computed_at_run_time(tmp_path):
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant")]
    path = _save(tmp_path, nodes, [_vi("x", F32, [2, 8]), _vi("z", I8, [])], [_vi("q", I8, [2, 8])],
                 [_const("s", np.float32(0.1))])
    assert "not a constant" in _one_line(path, "qdq", "quant")


def _attention(tmp_path, q_dims=(2, 4, 16, 8), mask=("m", F32, (2, 1, 16, 16)), extra_inputs=(), outputs=("y",),
               **attrs):
    rank3 = len(q_dims) == 3
    inputs = [_vi("q", F32, q_dims), _vi("k", F32, q_dims), _vi("v", F32, q_dims)]
    names = ["q", "k", "v"]
    if mask is not None:
        inputs.append(_vi(*mask))
        names.append(mask[0])
    for name, dims in extra_inputs:
        names += [name] if mask is not None or len(names) > 3 else ["", name]
        inputs.append(_vi(name, F32, dims))
    node = helper.make_node("Attention", names, list(outputs), name="attn", **attrs)
    graph_outputs = [_vi("y", F32, q_dims)] + [_vi(o, F32, []) for o in outputs[1:] if o]
    return _save(tmp_path, [node], inputs, graph_outputs, check=not rank3 or "q_num_heads" in attrs)


def test_attention_as_our_fuse_pass_writes_it_passes(tmp_path):
    assert check_onnx(_attention(tmp_path, scale=0.35)).ready
    assert check_onnx(_attention(tmp_path, mask=("m", TensorProto.BOOL, (2, 1, 16, 16)), is_causal=0)).ready


@pytest.mark.parametrize("case, expected", [
    (dict(q_dims=(2, 16, 32), q_num_heads=4, kv_num_heads=4), "Q, K, V must be 4-D (got Q 3-D, K 3-D, V 3-D)"),
    (dict(softcap=30.0), "attribute softcap=30.0 is not supported"),
    (dict(softmax_precision=1), "attribute softmax_precision=1 is not supported"),
    (dict(extra_inputs=[("past_k", (2, 4, 3, 8))]), "input past_key is not supported"),
    (dict(outputs=("y", "present_k")), "output present_key is not supported"),
    (dict(mask=("m", F32, (2, 16, 16))), "mask 'm' has rank 3, TensorRT needs 4-D"),
    (dict(mask=("m", I32, (2, 1, 16, 16))), "mask 'm' is INT32"),
    (dict(mask=("m", F32, (2, 3, 16, 16))), "does not broadcast"),
])
def test_attention_forms_tensorrt_does_not_build(tmp_path, case, expected):
    assert expected in _one_line(_attention(tmp_path, **case), "attention", "attn")


def test_unnamed_dynamic_axis(tmp_path):
    inputs = _bert_inputs()
    inputs[1] = _vi("segment_ids", I32, ["batch", None])
    path = _save(tmp_path, [], bert_inputs=inputs)
    assert "seq axis is dynamic but unnamed" in _one_line(path, "profiles", "segment_ids")


def test_fixed_axis_must_fit_every_profile(tmp_path):
    path = _save(tmp_path, [], bert_inputs=_bert_inputs(("batch", 128)))
    report = check_onnx(path)  # the default profile spans seq 128..384
    assert len(report.findings) == 3 and all("seq axis is fixed at 128" in f for f in report.findings)
    pinned = [Profile((1, 128), (8, 128), (16, 128))]
    assert check_onnx(path, profiles=pinned).ready


def test_input_the_profiles_cannot_bind(tmp_path):
    inputs = [i for i in _bert_inputs() if i.name != "input_mask"]
    path = _save(tmp_path, [], inputs=[_vi("attention_mask", I32, ["batch", "seq"])], bert_inputs=inputs)
    report = check_onnx(path)
    assert report.findings == [
        "model 'inputs': profiles: the profiles bind input_mask, which the model does not have",
        "input 'attention_mask': profiles: dynamic, but no profile gives it shapes",
    ]


# --- the project's own files ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["fp32", "fused", "fp16", "s8s8"])
@pytest.mark.parametrize("version", VERSIONS)
def test_project_tensorrt_files_are_ready(tiny_trt_files, kind, version):
    report = check_onnx(tiny_trt_files[kind], version)
    assert report.ready, report.findings
    assert report.nodes_checked > 50 and "onnx/onnx-tensorrt docs/operators.md @ fa5aa9f61e77" in report.source


def test_fused_file_really_has_the_attention_the_rule_checks(tiny_trt_files):
    ops = {n.op_type for n in onnx.load(str(tiny_trt_files["fused"])).graph.node}
    assert {"Attention", "LayerNormalization", "Gelu"} <= ops


def test_fuse_pass_bsh_layout_fails_where_the_matrix_asks_for_4d(tiny_trt_files, tmp_path):
    # The matrix documents 4-D Q/K/V only; the 3-D "bsh" layout is for ONNX Runtime, not for TensorRT.
    from bertbuild.fuse import DEFAULT_ORDER, fuse_onnx

    order = tuple("attention-bsh" if name == "attention" else name for name in DEFAULT_ORDER)
    fuse_onnx(tiny_trt_files["fp32"], tmp_path / "bsh.onnx", num_layers=2, order=order)
    report = check_onnx(tmp_path / "bsh.onnx", "10.14")
    assert len(report.findings) == 2  # one line per Attention node, one node per layer
    assert all("attention: Q, K, V must be 4-D (got Q 3-D" in line for line in report.findings)


def test_u8s8_file_fails_on_every_qdq_node(tiny_trt_files):
    report = check_onnx(tiny_trt_files["u8s8"])
    model = onnx.load(str(tiny_trt_files["u8s8"]))
    activation_qdq = {n.name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                      and n.input[0] not in {i.name for i in model.graph.initializer}}
    assert not report.ready and len(report.findings) == len(activation_qdq)
    assert all("qdq: UINT8 quantization is not supported" in line for line in report.findings)
    with pytest.raises(NotTensorRTReady, match=r"not ready for TensorRT 11: node .*\(and \d+ more"):
        report.require_ready()


# --- the matrix data and the command ---------------------------------------------------------------------

def test_matrix_files_name_their_source_and_differ_where_the_releases_do():
    old, new = load_matrix("10.14"), load_matrix("11")
    for matrix in (old, new):
        assert matrix.source["repo"] == "onnx/onnx-tensorrt" and matrix.source["path"] == "docs/operators.md"
        assert len(matrix.source["commit"]) == 40 and matrix.derivation
        assert matrix.operators["Attention"].supported  # added in 10.14
        assert not any(matrix.operators[op].supported for op in ("MatMulInteger", "QLinearMatMul",
                                                                  "DynamicQuantizeLinear"))
    assert not old.operators["RMSNormalization"].supported and new.operators["RMSNormalization"].supported
    assert old.builder["precision_flags"] and not new.builder["precision_flags"]  # removed in TensorRT 11
    assert not new.builder["int8_calibrators"]
    assert matrix_version_for("10.14.1.48") == "10.14" and matrix_version_for("11.1.0.106") == "11"
    with pytest.raises(UserInputError, match="older than 10.14"):
        matrix_version_for("10.13.2")


def test_host_version_reads_package_metadata_without_importing_tensorrt(monkeypatch):
    from importlib import metadata

    import bertbuild.trt_check.matrix as matrix

    versions = {"tensorrt-cu12": "10.14.1.48"}

    def version(name):
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(matrix.metadata, "version", version)
    assert host_version() == "10.14"
    versions.clear()
    assert host_version() == "11"  # no TensorRT here: check against the newest


def test_checking_leaves_the_model_and_its_weights_intact(tiny_trt_files):
    from bertbuild.trt_check.graph import GraphView, load_model

    model = load_model(tiny_trt_files["s8s8"])
    before = model.SerializeToString()
    view = GraphView(model)  # shape inference runs without the weights' bytes, which are put back
    assert model.SerializeToString() == before
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    assert view.constant(weight.name).tobytes() == weight.raw_data and view.info(weight.name).rank == 2


def test_cli_prints_one_line_per_offending_node_and_exits_1(tmp_path, capsys):
    path = _qdq_graph(tmp_path, np.int8(5))
    assert main(["trt-check", str(path), "--trt", "10.14", "--json", str(tmp_path / "r.json")]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [line for line in check_onnx(path, "10.14").findings] and len(out.splitlines()) == 2
    assert "NOT ready for TensorRT 10.14" in err
    assert json.loads((tmp_path / "r.json").read_text())["ready"] is False


def test_cli_passes_the_fused_file_with_profiles_from_a_config(tiny_trt_files, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  source: generated:tiny\nengines:\n  profiles:\n"
                      "    - {min: [1, 32], opt: [4, 128], max: [8, 128]}\neval:\n  max_seq_length: 128\n"
                      "  batch_size: 8\nbenchmark:\n  batch: 8\n  seq: 128\n")
    assert main(["trt-check", str(tiny_trt_files["fused"]), "--config", str(config)]) == 0
    assert "ready for TensorRT 11" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"not a protobuf", "not an ONNX model")])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "x.onnx"
    if content is not None:
        path.write_bytes(content)
    assert main(["trt-check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
