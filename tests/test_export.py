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
