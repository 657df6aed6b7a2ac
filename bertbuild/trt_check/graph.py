"""One ONNX file, loaded once, with the facts every rule needs: types, shapes, constants.

Shapes and element types come from ONNX shape inference (with data propagation,
so Reshape targets are known); constants are the initializers and `Constant`
nodes. Nested graphs (If/Loop bodies) are walked too, so no node escapes the rules.

A file with external data is read without its weights (`bertbuild.onnx_files`):
the rules need types and shapes, and the few constants they read (Q/DQ
scales, zero points) are read from the data file one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import shape_inference

from bertbuild import onnx_files, onnx_skeleton
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
    """The model, its external data left on disk; a one-line UserInputError for a missing file, one that
    is not ONNX, or one whose data is missing or outside its folder."""
    path = Path(path)
    model = onnx_files.load(path, load_external_data=False)
    if not model.graph.node and not model.graph.input:
        raise UserInputError(f"{path}: not an ONNX model (no graph)")
    return model


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every graph nested in its nodes' attributes (If/Loop/Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from _subgraphs(sub)


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model's skeleton after shape inference: dims and types, none of the weights' bytes.

    Inference needs initializers' dims and types only, and a model over 2 GB
    cannot be passed to it at all (`onnx_skeleton.inferred_skeleton`).
    """
    try:
        # strict_mode off: a node ONNX cannot infer must not hide the others from the rules.
        return onnx_skeleton.inferred_skeleton(model, strict_mode=False, data_prop=True)
    except (shape_inference.InferenceError, ValueError):
        return model  # not inferable: the declared value_info is all there is


class GraphView:
    """Read-only queries over a model: its nodes, inferred tensor types and shapes, and constant values."""

    def __init__(self, model: onnx.ModelProto, path: Path | str | None = None):
        """`path`: the model's file, beside which its external data is read."""
        self._path = path
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
        return None if tensor is None else onnx_files.array(tensor, self._path)


def attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def present(names) -> list[tuple[int, str]]:
    """(position, name) of the inputs or outputs that are actually given (ONNX leaves skipped optionals empty)."""
    return [(i, n) for i, n in enumerate(names) if n]


def node_label(node: onnx.NodeProto) -> str:
    """The node's name, or (unnamed nodes are legal) its first output's name."""
    return node.name or f"<unnamed, output '{node.output[0] if node.output else '?'}'>"
