"""TensorFlow QA graph -> ONNX with tf2onnx, dynamic `batch` and `seq` axes, in bounded memory.

Why the weights are graph inputs while tf2onnx runs: freezing them into the
GraphDef as constants made TensorFlow and tf2onnx copy every weight many times
over (18 GB peak for BERT-base's 440 MB). Traced with each weight as a
placeholder of its exact shape, the graph tf2onnx converts holds no weight at
all; each placeholder then becomes an initializer, read from the checkpoint
one tensor at a time. Peak memory is about one copy of the weights (none past
the current tensor when they go to an external data file).

The only rewrite constant-folding used to do for us on weights is the
transpose of the SQuAD head (`matmul(..., transpose_b=True)`): a `Transpose`
fed by nothing but a weight is folded into the initializer here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from bertbuild import onnx_files, onnx_skeleton
from bertbuild._lazy import import_tensorflow, require
from bertbuild.model.checkpoint import BertConfig, CheckpointInfo, expected_shapes, open_reader, weight_bytes
from bertbuild.model.signature import INPUT_NAMES, OUTPUT_NAMES

DEFAULT_OPSET = 17
DYNAMIC_AXES = ("batch", "seq")


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    seconds: float
    nodes: int
    external_data: bool = False


def traced_graph(config: BertConfig, opset: int) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The QA graph converted by tf2onnx with every weight an input: (model, ONNX input -> Google name)."""
    tf = import_tensorflow()
    tf2onnx = require("tf2onnx")
    from bertbuild.model.bert_graph import qa_logits

    names = list(expected_shapes(config))
    shapes = expected_shapes(config)
    spec = [tf.TensorSpec([None, None], tf.int32, name=n) for n in INPUT_NAMES]
    spec += [tf.TensorSpec(shapes[n], tf.float32, name=f"weight_{i}") for i, n in enumerate(names)]

    # No autograph: every branch and loop here is on Python values (see bertbuild.arrays for why it matters).
    @tf.function(input_signature=spec, autograph=False)
    def qa(input_ids, segment_ids, input_mask, *values):
        start, end = qa_logits(dict(zip(names, values)), config, input_ids, segment_ids, input_mask)
        return {"start_logits": tf.identity(start), "end_logits": tf.identity(end)}

    concrete = qa.get_concrete_function()
    inputs = [t.name for t in concrete.inputs]
    outputs = [t.name for t in concrete.outputs]
    model, _ = tf2onnx.convert.from_graph_def(concrete.graph.as_graph_def(), input_names=inputs,
                                              output_names=outputs, opset=opset)
    mapping = dict(zip(inputs, INPUT_NAMES))
    for clean in OUTPUT_NAMES:  # structured outputs: name -> symbolic tensor
        mapping[concrete.structured_outputs[clean].name] = clean
    _rename_io(model, mapping)
    _order_outputs(model)
    _name_dynamic_axes(model)
    weight_inputs = {name: names[i] for i, name in enumerate(inputs[len(INPUT_NAMES):])}
    return model, weight_inputs


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
        if value.name not in INPUT_NAMES + OUTPUT_NAMES:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims, DYNAMIC_AXES):
            dim.ClearField("dim_value")
            dim.dim_param = name


def _folded_transposes(graph: onnx.GraphProto, weights: set[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Transpose nodes that are a weight's only reader: their output -> (weight, perm). The nodes are removed."""
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    folded, kept = {}, []
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in weights and readers[node.input[0]] == 1:
            perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), ())
            folded[node.output[0]] = (node.input[0], perm)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return folded


class _DataFile:
    """Tensors appended to one external data file as they are read, each at an aligned offset (mmap-friendly).

    Streaming them here, rather than letting `onnx_files.save` move them out of
    a model that holds them all, keeps at most one weight in memory.
    """

    ALIGN = onnx_skeleton.ALIGN

    def __init__(self, path: Path):
        self.path = path
        self._handle = open(path, "wb")

    def add(self, tensor: onnx.TensorProto, array: np.ndarray) -> None:
        offset = -(-self._handle.tell() // self.ALIGN) * self.ALIGN
        self._handle.seek(offset)
        data = np.ascontiguousarray(array).astype("<f4", copy=False).tobytes()
        self._handle.write(data)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.path.name), ("offset", str(offset)), ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value

    def close(self) -> None:
        self._handle.close()


def export_onnx(checkpoint: CheckpointInfo, out_path: Path | str, opset: int = DEFAULT_OPSET,
                external_data: bool | None = None, log: Callable[[str], None] | None = None) -> ExportResult:
    """Export the checkpoint's QA graph to `out_path` and check it with onnx.checker.

    `external_data`: True keeps every weight in `<file>.data` beside the model;
    None does so only when the weights would pass protobuf's 2 GB limit.
    Weights are read one at a time from the checkpoint (a `Checkpoint` with
    weights already loaded is used as it is).
    """
    log = log or (lambda message: None)
    start = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    config = checkpoint.config
    external = weight_bytes(config) >= onnx_files.LIMIT if external_data is None else external_data
    model, weight_inputs = traced_graph(config, opset)
    log(f"export: graph converted ({len(model.graph.node)} nodes) in {time.perf_counter() - start:.1f} s; "
        f"attaching {len(weight_inputs)} weights ({weight_bytes(config) / 2**20:.0f} MiB)"
        + (" as external data" if external else ""))
    graph = model.graph
    folded = _folded_transposes(graph, set(weight_inputs))
    transposed = {weight: (output, perm) for output, (weight, perm) in folded.items()}
    kept_inputs = [value for value in graph.input if value.name not in weight_inputs]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    # Initializers carry the checkpoint's names, so a reader of the ONNX file can tell which weight is which.
    renamed = {onnx_name: google for onnx_name, google in weight_inputs.items() if onnx_name not in transposed}
    renamed.update({output: f"{weight_inputs[weight]}/transposed" for weight, (output, _) in transposed.items()})
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]

    model.producer_name = "bertbuild"
    read = _tensor_reader(checkpoint)

    def weights():
        for onnx_name, google_name in weight_inputs.items():
            array = read(google_name)
            if onnx_name in transposed:
                onnx_name, perm = transposed[onnx_name]
                array = np.transpose(array, perm or None)
            yield renamed[onnx_name], np.ascontiguousarray(array, dtype=np.float32)

    if external:
        _write_external(model, weights(), out_path)
    else:
        _write_inline(model, weights(), out_path)
    onnx_files.check(out_path)
    return ExportResult(out_path, opset, time.perf_counter() - start, len(graph.node), external)


def _write_external(model: onnx.ModelProto, weights, out_path: Path) -> None:
    """Each weight appended to `<file>.data` as it is read; the .onnx holds references to it."""
    writer = _DataFile(onnx_files.data_path(out_path))
    try:
        for name, array in weights:
            tensor = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=array.shape)
            writer.add(tensor, array)
            model.graph.initializer.append(tensor)
            del array
    finally:
        writer.close()
    onnx_files.save(model, out_path, True)  # the weights are references already: the .onnx is written as it is


def _write_inline(model: onnx.ModelProto, weights, out_path: Path) -> None:
    """One .onnx file holding every weight, written with one weight in memory at a time.

    Why by hand: serializing a model that holds all its weights needs them
    twice (the message and its bytes). Protobuf merges repeated occurrences of
    an embedded message field on parsing, so the file is the weightless model
    followed by one `graph { initializer: ... }` field per weight: any ONNX
    reader parses it to the same model as if written in one piece.
    """
    tag = _varint((onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number << 3) | 2)  # length-delimited
    temporary = out_path.with_name(f".{out_path.name}.partial")
    try:
        with open(temporary, "wb") as handle:
            handle.write(model.SerializeToString())
            for name, array in weights:
                piece = onnx.GraphProto(initializer=[numpy_helper.from_array(array, name)]).SerializeToString()
                handle.write(tag + _varint(len(piece)) + piece)
                del piece, array
        onnx_files.data_path(out_path).unlink(missing_ok=True)  # never leave a stale companion beside it
        temporary.replace(out_path)
    finally:
        temporary.unlink(missing_ok=True)


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _tensor_reader(checkpoint: CheckpointInfo) -> Callable[[str], np.ndarray]:
    """One float32 weight at a time: from loaded weights if present, else from the checkpoint files."""
    loaded = getattr(checkpoint, "weights", None)
    if loaded:
        return lambda name: np.asarray(loaded[name], dtype=np.float32)
    reader = open_reader(checkpoint.prefix)
    return lambda name: np.asarray(reader.get_tensor(name), dtype=np.float32)


def export_main(checkpoint_dir: str, lower_case: bool | None, out_path: str, opset: int,
                external_data: bool | None) -> dict:
    """The export as a child-process entry point (see `bertbuild.model.isolated`)."""
    from bertbuild.isolation import child_log
    from bertbuild.model.checkpoint import inspect_checkpoint

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = export_onnx(inspect_checkpoint(checkpoint_dir, lower_case), out_path, opset, external_data,
                         log=child_log)
    return {"path": str(result.path), "seconds": round(result.seconds, 2), "nodes": result.nodes,
            "opset": opset, "external_data": result.external_data}
