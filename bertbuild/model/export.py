"""TensorFlow QA graph -> ONNX with tf2onnx, dynamic `batch` and `seq` axes.

Why freeze first: `tf2onnx.convert.from_function` on TF 2.21 leaves captured
constants as extra graph inputs. Freezing the concrete function into a
GraphDef and converting that gives a self-contained model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from bertbuild._lazy import import_tensorflow, require
from bertbuild.model.checkpoint import Checkpoint
from bertbuild.model.bert_graph import INPUT_NAMES, OUTPUT_NAMES, inference_function

DEFAULT_OPSET = 17
DYNAMIC_AXES = ("batch", "seq")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    seconds: float
    nodes: int


def _frozen_graph_def(function):
    tf = import_tensorflow()
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    concrete = function.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    return frozen.graph.as_graph_def(), inputs, outputs, concrete.structured_outputs


def _rename_io(model: onnx.ModelProto, mapping: dict[str, str]) -> None:
    """Give graph inputs/outputs their clean names (tf2onnx keeps ':0' suffixes)."""
    for node in model.graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = mapping.get(value.name, value.name)


def _order_outputs(model: onnx.ModelProto) -> None:
    """TF returns dict outputs sorted by key; users expect (start, end)."""
    by_name = {value.name: value for value in model.graph.output}
    ordered = [onnx.ValueInfoProto.FromString(by_name[n].SerializeToString()) for n in OUTPUT_NAMES]
    del model.graph.output[:]
    model.graph.output.extend(ordered)


def _name_dynamic_axes(model: onnx.ModelProto) -> None:
    """Every input and output is [batch, seq]; name both axes the same everywhere.

    tf2onnx invents a different symbol per tensor (unk__12, ...), which makes
    ONNX Runtime's quantization shape inference treat them as unrelated.
    """
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, DYNAMIC_AXES):
            dim.ClearField("dim_value")
            dim.dim_param = name


def export_onnx(checkpoint: Checkpoint, out_path: Path | str, opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export the checkpoint's QA graph to `out_path` and check it with onnx.checker."""
    tf2onnx = require("tf2onnx")
    start = time.perf_counter()
    function = inference_function(checkpoint.weights, checkpoint.config)
    graph_def, inputs, outputs, structured = _frozen_graph_def(function)
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def, input_names=inputs, output_names=outputs, opset=opset,
    )
    mapping = {tf_name: clean for tf_name, clean in zip(inputs, INPUT_NAMES)}
    # structured outputs is a dict name -> symbolic tensor; map by tensor name.
    for clean in OUTPUT_NAMES:
        mapping[structured[clean].name] = clean
    _rename_io(model, mapping)
    _order_outputs(model)
    _name_dynamic_axes(model)
    model.producer_name = "bertbuild"
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return ExportResult(out_path, opset, time.perf_counter() - start, len(model.graph.node))
