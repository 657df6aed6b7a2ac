"""One ONNX file, loaded once, with the facts every rule needs: types, shapes, constants.

Shapes and element types come from ONNX shape inference (with data propagation,
so Reshape targets are known); constants are the initializers and `Constant`
nodes. Nested graphs (If/Loop bodies) are walked too, so no node escapes the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper, shape_inference

from bertbuild.errors import UserInputError

DEFAULT_DOMAINS = ("", "ai.onnx")
Dim = int | str | None  # a size, a named dynamic axis, or unknown


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int  # 0: unknown
    dims: tuple[Dim, ...] | None  # None: rank unknown

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)


def _info(value_info: onnx.ValueInfoProto) -> TensorInfo:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return TensorInfo(tensor.elem_type, None)
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    return TensorInfo(tensor.elem_type, dims)


def load_model(path: Path | str) -> onnx.ModelProto:
    """The model, or a one-line UserInputError for a missing file or one that is not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as exc:
        raise UserInputError(f"{path}: not an ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    if not model.graph.node and not model.graph.input:
        raise UserInputError(f"{path}: not an ONNX model (no graph)")
    return model


_PAYLOAD_BYTES = 1024  # initializers above this size are weights; smaller ones may be shapes that inference reads


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every graph nested in its nodes' attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _subgraphs(sub)


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model after shape inference, run without the weights' bytes.

    Inference needs initializers' dims and types only, and a model over 2 GB
    cannot be passed to it at all; the small ones stay, since data propagation
    reads Reshape targets from them. The payloads are put back afterwards.
    """
    stashed = []
    for init in model.graph.initializer:
        if len(init.raw_data) > _PAYLOAD_BYTES:
            stashed.append((init, init.raw_data))
            init.ClearField("raw_data")
    try:
        # strict_mode off: a node ONNX cannot infer must not hide the others from the rules.
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except (shape_inference.InferenceError, ValueError):
        return model  # not inferable: the declared value_info is all there is
    finally:
        for init, data in stashed:
            init.raw_data = data


class GraphView:
    """Read-only queries over a model: its nodes, inferred tensor types and shapes, and constant values."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.opsets = {o.domain: o.version for o in model.opset_import}
        self._constants: dict[str, onnx.TensorProto] = {}
        self._infos: dict[str, TensorInfo] = {}
        for graph in _subgraphs(model.graph):
            self._constants.update((init.name, init) for init in graph.initializer)
            self._constants.update((node.output[0], tensor) for node in graph.node
                                   if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS
                                   and (tensor := attribute(node, "value")) is not None)
        for graph in _subgraphs(_inferred(model).graph):
            for init in graph.initializer:
                self._infos[init.name] = TensorInfo(init.data_type, tuple(init.dims))
            for value in (*graph.input, *graph.output, *graph.value_info):
                self._infos.setdefault(value.name, _info(value))
        self.graph_inputs = [i for i in self.graph.input if i.name not in self._constants]

    def nodes(self) -> Iterator[onnx.NodeProto]:
        """Every node, nested graphs included."""
        for graph in _subgraphs(self.graph):
            yield from graph.node

    def info(self, name: str) -> TensorInfo:
        return self._infos.get(name, TensorInfo(0, None))

    def is_constant(self, name: str) -> bool:
        return name in self._constants

    def constant(self, name: str) -> np.ndarray | None:
        tensor = self._constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def has_attribute(node: onnx.NodeProto, name: str) -> bool:
    return any(attr.name == name for attr in node.attribute)


def present(names) -> list[tuple[int, str]]:
    """(position, name) of the inputs or outputs that are actually given (ONNX leaves skipped optionals empty)."""
    return [(i, n) for i, n in enumerate(names) if n]


def node_label(node: onnx.NodeProto) -> str:
    """The node's name, or (unnamed nodes are legal) its first output's name."""
    return node.name or f"<unnamed, output '{node.output[0] if node.output else '?'}'>"
