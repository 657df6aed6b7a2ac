"""Each fusion pass on its own hand-built graph (no TensorFlow): it fuses, counts, and keeps the outputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import fusion_graphs
from bertbuild.fuse import run_passes


def _outputs(model, feed) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["y"], feed)[0]


def _feed(model, batch=3, seq=5) -> dict:
    rng = np.random.default_rng(1)
    hidden = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    feed = {"x": rng.normal(size=(batch, seq, hidden)).astype(np.float32)}
    if len(model.graph.input) > 1:  # attention: the last two positions of the second row are padding
        mask = np.ones((batch, seq), np.int32)
        mask[1, -2:] = 0
        feed["input_mask"] = mask
    return feed


@pytest.mark.parametrize("name, build, fused_op", [
    ("layernorm", fusion_graphs.layernorm, "LayerNormalization"),
    ("gelu", fusion_graphs.gelu, "Gelu"),
    ("attention", fusion_graphs.attention, "Attention"),
    ("attention-bsh", fusion_graphs.attention, "Attention"),
])
def test_pass_fuses_its_pattern_and_keeps_the_outputs(name, build, fused_op):
    model = build()
    fused, report = run_passes(model, order=(name,))
    assert report.passes == {name: 1}
    assert report.count(fused_op) == 1
    feed = _feed(model)
    assert np.abs(_outputs(model, feed) - _outputs(fused, feed)).max() <= 1e-5


@pytest.mark.parametrize("name, build", [("layernorm", fusion_graphs.gelu), ("gelu", fusion_graphs.layernorm),
                                         ("attention", fusion_graphs.layernorm)])
def test_pass_leaves_other_patterns_alone(name, build):
    model = build()
    fused, report = run_passes(model, order=(name,))
    assert report.passes == {name: 0}
    assert sorted(n.op_type for n in fused.graph.node) == sorted(n.op_type for n in model.graph.node)


def test_attention_without_a_known_head_count_is_left_alone():
    """The head count must be readable from the Reshape: a computed shape is not fused."""
    from onnx import helper

    model = fusion_graphs.attention()
    graph = model.graph
    shape = next(init for init in graph.initializer if init.name == "heads_shape")
    graph.initializer.remove(shape)
    graph.input.append(helper.make_tensor_value_info("heads_shape", 7, [4]))  # INT64, given at run time
    _, report = run_passes(model, order=("attention",))
    assert report.passes == {"attention": 0}
