"""ONNX fusion: exact op counts, parity on real SQuAD windows, strict checker, opset 23, named axes."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bertbuild.errors import UserInputError, ValidationError
from bertbuild.fuse import (
    DEFAULT_ORDER, PASSES, FusionReport, check_fusion_counts, fuse_onnx, load_graph, run_passes,
)
from bertbuild.fuse.attention import fuse_attention
from bertbuild.fuse.gelu import fuse_gelu
from bertbuild.fuse.layernorm import fuse_layernorm


def _export(directory, vocab_path, layers, hidden_act="gelu"):
    from bertbuild.model.checkpoint import load_checkpoint
    from bertbuild.model.checkpoint_writer import save_checkpoint
    from bertbuild.model.export import export_onnx
    from bertbuild.model.random_checkpoint import random_weights, tiny_config

    with open(vocab_path, encoding="utf-8") as handle:
        vocab_size = sum(1 for _ in handle)
    config = dataclasses.replace(tiny_config(vocab_size, layers), hidden_act=hidden_act)
    save_checkpoint(directory / "ckpt", config, vocab_path, random_weights(config, seed=layers))
    return export_onnx(load_checkpoint(directory / "ckpt"), directory / "model.onnx").path


@pytest.fixture(scope="module")
def one_layer(tmp_path_factory, vocab_path):
    return _export(tmp_path_factory.mktemp("fuse1"), vocab_path, 1)


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory, vocab_path):
    return _export(tmp_path_factory.mktemp("fuse3"), vocab_path, 3)


@pytest.fixture(scope="module")
def tanh_layer(tmp_path_factory, vocab_path):
    return _export(tmp_path_factory.mktemp("fuset"), vocab_path, 1, hidden_act="gelu_tanh")


@pytest.fixture(scope="module")
def squad_features(vocab_path):
    from bertbuild.config import EvalConfig
    from bertbuild.evaluation.score import scoring_set

    return scoring_set(EvalConfig(limit=8, batch_size=4), vocab_path, True).features


def _logits(path, features):
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.evaluation.score import run_logits

    start, end, _ = run_logits(OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"]), features, 4)
    return start, end


def _io_dims(model):
    values = [*model.graph.input, *model.graph.output]
    return {v.name: [d.dim_param for d in v.type.tensor_type.shape.dim] for v in values}


@pytest.mark.parametrize("fixture, layers, approximate", [
    ("one_layer", 1, "none"), ("three_layers", 3, "none"), ("tanh_layer", 1, "tanh"),
])
def test_fused_model_counts_parity_checker_opset_axes(request, tmp_path, squad_features, fixture, layers, approximate):
    source = request.getfixturevalue(fixture)
    report = fuse_onnx(source, tmp_path / "fused.onnx", layers)
    fused = onnx.load(str(tmp_path / "fused.onnx"))

    assert report.passes == {"layernorm": 2 * layers + 1, "gelu": layers, "attention": layers}
    assert (report.count("Attention"), report.count("LayerNormalization"), report.count("Gelu")) == (
        layers, 2 * layers + 1, layers)
    assert report.attention_masks == 1  # one mask, computed once, shared by every layer
    for gone in ("Softmax", "Erf", "Tanh", "GlobalAveragePool", "Reciprocal", "Identity"):
        assert report.count(gone) == 0, gone
    assert {a.s.decode() for n in fused.graph.node if n.op_type == "Gelu" for a in n.attribute} == {approximate}
    onnx.checker.check_model(fused, full_check=True)
    assert {(o.domain or "ai.onnx"): o.version for o in fused.opset_import}["ai.onnx"] == 23
    assert report.opset == 23
    assert all(dims == ["batch", "seq"] for dims in _io_dims(fused).values())
    json.loads(report.to_json())

    reference, candidate = _logits(source, squad_features), _logits(tmp_path / "fused.onnx", squad_features)
    assert reference[0].shape == (len(squad_features), 384)
    delta = max(float(np.abs(a - b).max()) for a, b in zip(reference, candidate))
    assert delta <= 1e-4, delta


def test_disabled_pass_fails_the_count_check_loudly(one_layer, tmp_path):
    with pytest.raises(ValidationError) as info:
        fuse_onnx(one_layer, tmp_path / "fused.onnx", 1, disabled=("gelu",))
    message = str(info.value)
    assert "\n" not in message
    assert "expected 1 Attention, 3 LayerNormalization, 1 Gelu" in message
    assert "found 1 Attention, 3 LayerNormalization, 0 Gelu" in message
    assert not (tmp_path / "fused.onnx").exists()


def test_count_check_accepts_model_or_path_and_rejects_wrong_layer_count(one_layer, tmp_path):
    fuse_onnx(one_layer, tmp_path / "fused.onnx", 1)
    assert check_fusion_counts(tmp_path / "fused.onnx", 1)["LayerNormalization"] == 3
    assert check_fusion_counts(onnx.load(str(tmp_path / "fused.onnx")), 1)["Gelu"] == 1
    with pytest.raises(ValidationError, match="expected 2 Attention, 5 LayerNormalization, 2 Gelu"):
        check_fusion_counts(tmp_path / "fused.onnx", 2)
    with pytest.raises(ValidationError, match="found 0 Attention, 0 LayerNormalization, 0 Gelu"):
        check_fusion_counts(one_layer, 1)  # the unfused export


def test_each_pass_alone_returns_its_fusion_count_and_is_idempotent(three_layers):
    for function, expected in ((fuse_layernorm, 7), (fuse_gelu, 3), (fuse_attention, 3)):
        graph = load_graph(three_layers)
        assert function(graph) == expected, function.__name__
        graph.cleanup().toposort()
        assert function(graph) == 0, function.__name__


def test_bsh_attention_layout_matches_too(one_layer, squad_features, tmp_path):
    model, report = run_passes(one_layer, order=("layernorm", "gelu", "attention-bsh"))
    check_fusion_counts(report, 1)
    attention = next(n for n in model.graph.node if n.op_type == "Attention")
    assert {a.name: a.i for a in attention.attribute if a.name.endswith("num_heads")} == {
        "q_num_heads": 4, "kv_num_heads": 4}
    assert report.count("Transpose") == 0  # the head split and merge went into Attention
    onnx.save(model, str(tmp_path / "bsh.onnx"))
    reference, candidate = _logits(one_layer, squad_features), _logits(tmp_path / "bsh.onnx", squad_features)
    assert max(float(np.abs(a - b).max()) for a, b in zip(reference, candidate)) <= 1e-4


def test_run_passes_is_deterministic_and_leaves_its_input_alone(one_layer):
    original = onnx.load(str(one_layer))
    before = original.SerializeToString()
    first, _ = run_passes(original)
    second, _ = run_passes(one_layer)
    assert original.SerializeToString() == before
    assert [n.name for n in first.graph.node] == [n.name for n in second.graph.node]
    assert first.SerializeToString() == second.SerializeToString()
    names = [n.name for n in first.graph.node]
    assert "fused/Attention_0" in names and "fused/LayerNormalization_2" in names and "fused/Gelu_0" in names


def test_passes_run_in_the_declared_order_and_unknown_names_are_refused(one_layer, monkeypatch):
    from dataclasses import replace

    called = []

    def recording(name, function):
        def run(graph):
            called.append(name)
            return function(graph)
        return run

    for name in DEFAULT_ORDER:
        monkeypatch.setitem(PASSES, name, replace(PASSES[name], function=recording(name, PASSES[name].function)))
    run_passes(one_layer)
    assert called == list(DEFAULT_ORDER)
    with pytest.raises(UserInputError, match=r"unknown fusion pass\(es\) \['nope'\]"):
        run_passes(onnx.ModelProto(), order=("layernorm", "nope"))


# --- hand-written variants: other associations and spellings of the same math -------------------------


def _variant_model(expose_centred: bool = False) -> onnx.ModelProto:
    """LayerNorm with ReduceMean(axes input) + Pow + Div(1, .) + Mul(d, r) * gamma + (beta + .), then
    GELU as Div(x, sqrt2) and (x * (1 + erf)) * 0.5: spellings tf2onnx does not emit today."""
    def c(name, value):
        value = np.asarray(value)
        return numpy_helper.from_array(value.astype(np.float32) if value.dtype.kind == "f" else value, name)

    rng = np.random.default_rng(0)
    inits = [
        c("axes", np.array([-1], np.int64)), c("two", 2.0), c("eps", 1e-5), c("one", 1.0), c("half", 0.5),
        c("sqrt2", float(np.sqrt(2.0))), c("gamma", rng.normal(1, 0.1, 8).astype(np.float32)),
        c("beta", rng.normal(0, 0.1, 8).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"]),
        helper.make_node("Sub", ["x", "mean"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["one", "std"], ["r"]),
        helper.make_node("Mul", ["d", "r"], ["normed"]),
        helper.make_node("Mul", ["normed", "gamma"], ["scaled"]),
        helper.make_node("Add", ["beta", "scaled"], ["ln"]),
        helper.make_node("Div", ["ln", "sqrt2"], ["arg"]),
        helper.make_node("Erf", ["arg"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["ln", "erf1"], ["xe"]),
        helper.make_node("Mul", ["xe", "half"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, 8])]
    if expose_centred:
        outputs.append(helper.make_tensor_value_info("d", TensorProto.FLOAT, ["batch", 5, 8]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 8])]
    graph = helper.make_graph(nodes, "variants", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_other_spellings_of_layernorm_and_gelu_are_matched():
    model = _variant_model()
    fused, report = run_passes(model, order=("layernorm", "gelu"))
    assert report.passes == {"layernorm": 1, "gelu": 1}
    assert set(report.op_types) == {"LayerNormalization", "Gelu"}
    x = np.random.default_rng(1).normal(size=(3, 5, 8)).astype(np.float32)
    assert np.abs(_run(model, x)[0] - _run(fused, x)[0]).max() <= 1e-5


def test_layernorm_whose_intermediate_is_used_elsewhere_is_left_alone():
    fused, report = run_passes(_variant_model(expose_centred=True), order=("layernorm", "gelu"))
    assert report.passes == {"layernorm": 0, "gelu": 1}
    assert report.count("LayerNormalization") == 0 and report.count("ReduceMean") == 2


# --- thin wrappers -----------------------------------------------------------------------------------------


def test_prefect_task_returns_a_json_able_typed_result_and_caches_by_content(one_layer, tmp_path):
    from bertbuild.runs import open_run
    from bertbuild.step_results import OnnxFile
    from bertbuild.tasks.model import ModelInfo
    from bertbuild.tasks.precision import fuse

    run = open_run(tmp_path / "runs", "m", "r1", cache_dir=str(tmp_path / "cache"))
    model = ModelInfo("m", str(tmp_path), str(tmp_path / "vocab.txt"), True, num_layers=1)
    result = fuse.fn(OnnxFile(path=str(one_layer), precision="fp32"), model, run)
    assert Path(result.path).is_file() and result.cached is False and result.precision == "fused-fp32"
    assert result.report["op_types"]["Attention"] == 1
    assert OnnxFile.model_validate(json.loads(result.model_dump_json())) == result
    again = fuse.fn(OnnxFile(path=str(one_layer), precision="fp32"), model, run)
    assert again.cached is True and again.path == result.path and again.report == result.report


def test_passes_command_lists_the_default_order(capsys):
    from bertbuild.commands import passes

    parser = argparse.ArgumentParser()
    passes.add_parser(parser.add_subparsers())
    args = parser.parse_args(["passes"])
    assert args.handler(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[:3]] == list(DEFAULT_ORDER)
    assert "opset 23" in lines[-1]


def test_report_round_trips_through_json():
    report = FusionReport(passes={"gelu": 2}, op_types={"Gelu": 2}, opset=23, nodes_before=9, nodes_after=4,
                          attention_masks=0, disabled=("attention",))
    data = json.loads(report.to_json())
    assert data["disabled"] == ["attention"] and data["op_types"] == {"Gelu": 2}
