"""TF -> ONNX export: names, dynamic axes, and parity with TensorFlow on real SQuAD features."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from bertbuild.backends.onnxrt import OnnxRuntimeRunner
from bertbuild.backends.tf_reference import TensorFlowRunner
from bertbuild.model.checkpoint import load_checkpoint
from bertbuild.config import EvalConfig
from bertbuild.evaluation.score import scoring_set, run_logits
from bertbuild.model.export import export_onnx


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    checkpoint = load_checkpoint(tiny_checkpoint)
    result = export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return checkpoint, result


def test_inputs_outputs_and_dynamic_axes(exported):
    _, result = exported
    model = onnx.load(str(result.path))
    onnx.checker.check_model(model)

    def io(values):
        return [
            (v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
            for v in values
        ]

    int32, float32 = onnx.TensorProto.INT32, onnx.TensorProto.FLOAT
    assert io(model.graph.input) == [
        ("input_ids", int32, ["batch", "seq"]),
        ("segment_ids", int32, ["batch", "seq"]),
        ("input_mask", int32, ["batch", "seq"]),
    ]
    assert io(model.graph.output) == [("start_logits", float32, ["batch", "seq"]),
                                      ("end_logits", float32, ["batch", "seq"])]
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == 17
    assert not model.graph.initializer or all(i.name not in {x.name for x in model.graph.input}
                                              for i in model.graph.initializer)


def test_onnx_matches_tensorflow_on_real_squad_features(exported, vocab_path):
    checkpoint, result = exported
    cfg = EvalConfig(limit=12, batch_size=4)  # held-out questions, seq 384, several windows
    eval_set = scoring_set(cfg, checkpoint.vocab_path, checkpoint.lower_case)
    tf_start, tf_end, _ = run_logits(TensorFlowRunner(checkpoint), eval_set.features, cfg.batch_size)
    ort_start, ort_end, _ = run_logits(OnnxRuntimeRunner(result.path), eval_set.features, cfg.batch_size)
    assert tf_start.shape == (len(eval_set.features), 384)
    assert np.abs(tf_start).max() > 0.1  # real, non-trivial logits
    diff = max(np.abs(tf_start - ort_start).max(), np.abs(tf_end - ort_end).max())
    assert diff <= 1e-4


def test_dynamic_shapes_run(exported):
    _, result = exported
    with OnnxRuntimeRunner(result.path) as runner:
        for batch, seq in ((1, 16), (3, 128)):
            feed = {n: np.ones((batch, seq), np.int32) for n in ("input_ids", "segment_ids", "input_mask")}
            out = runner.infer(feed)
            assert out["start_logits"].shape == (batch, seq)


def test_weights_are_initializers_named_after_the_checkpoint_never_graph_inputs(exported):
    checkpoint, result = exported
    model = onnx.load(str(result.path))
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    assert [value.name for value in model.graph.input] == ["input_ids", "segment_ids", "input_mask"]
    kernel = "bert/encoder/layer_1/intermediate/dense/kernel"
    np.testing.assert_array_equal(initializers[kernel], checkpoint.weights[kernel])
    # The SQuAD head is read transposed: folded into its initializer, no Transpose node on a weight remains.
    head = checkpoint.weights["cls/squad/output_weights"]
    np.testing.assert_array_equal(initializers["cls/squad/output_weights/transposed"], head.T)
    assert not [n for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in initializers]


def test_external_data_keeps_weights_beside_the_file_and_the_same_logits(exported, tiny_checkpoint, tmp_path):
    from bertbuild.model.checkpoint import inspect_checkpoint

    _, inline = exported
    # Streamed from the checkpoint files (no weights loaded beforehand), into `<file>.data`.
    result = export_onnx(inspect_checkpoint(tiny_checkpoint), tmp_path / "model.onnx", external_data=True)
    data = tmp_path / "model.onnx.data"
    assert result.external_data and data.is_file()
    assert data.stat().st_size > 3 * 2**20 > 100 * (tmp_path / "model.onnx").stat().st_size
    header = onnx.load(str(result.path), load_external_data=False)
    locations = {entry.value for init in header.graph.initializer for entry in init.external_data
                 if entry.key == "location"}
    assert locations == {"model.onnx.data"}  # relative: the pair can move together
    feed = {"input_ids": np.full((2, 24), 2023, np.int32), "segment_ids": np.zeros((2, 24), np.int32),
            "input_mask": np.ones((2, 24), np.int32)}
    a = OnnxRuntimeRunner(inline.path)
    b = OnnxRuntimeRunner(result.path)
    with a, b:
        out_a, out_b = a.infer(feed), b.infer(feed)
    for name in out_a:
        np.testing.assert_array_equal(out_a[name], out_b[name])
    # Written again without external data, the stale companion is removed.
    export_onnx(inspect_checkpoint(tiny_checkpoint), tmp_path / "model.onnx", external_data=False)
    assert not data.exists()
