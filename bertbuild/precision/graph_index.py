"""Read-only indexes over an ONNX graph, and the QA head found with them (used by fp16.py and targets.py)."""

from __future__ import annotations

from collections import defaultdict

import onnx
from onnx import TensorProto

FLOAT = TensorProto.FLOAT

# Shape-only / layout ops allowed between the QA head MatMul and the graph outputs.
HEAD_PASS_THROUGH = {"Slice", "Squeeze", "Unsqueeze", "Reshape", "Transpose", "Identity", "Split",
                     "Flatten", "Gather", "Concat", "Cast"}


class GraphIndex:
    """Read-only indexes over a (shape-inferred) graph.

    `weights`: the model whose initializers hold the data, when `model` is an
    inferred skeleton (`onnx_skeleton.inferred_skeleton`), which has none.
    """

    def __init__(self, model: onnx.ModelProto, weights: onnx.ModelProto | None = None):
        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {init.name: init for init in (weights or model).graph.initializer}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = defaultdict(list)
        for index, node in enumerate(self.nodes):
            for name in node.output:
                self.producer[name] = index
            for name in node.input:
                if name:
                    self.consumers[name].append(index)
        self.types: dict[str, int] = {}
        for value in list(graph.value_info) + list(graph.input) + list(graph.output):
            if value.type.HasField("tensor_type"):
                self.types[value.name] = value.type.tensor_type.elem_type
        for init in graph.initializer:
            self.types[init.name] = init.data_type
        for node in self.nodes:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.types[node.output[0]] = attr.t.data_type

    def is_float(self, name: str) -> bool:
        return self.types.get(name) == FLOAT

    def is_constant(self, name: str) -> bool:
        if name in self.initializers:
            return True
        index = self.producer.get(name)
        return index is not None and self.nodes[index].op_type == "Constant"


def logits_head(g: GraphIndex, outputs: list[str]) -> set[int]:
    """The QA head: from each float graph output back to (and including) the first MatMul/Gemm."""
    head: set[int] = set()
    stack = [name for name in outputs if g.is_float(name)]
    while stack:
        index = g.producer.get(stack.pop())
        if index is None or index in head:
            continue
        node = g.nodes[index]
        if node.op_type in ("MatMul", "Gemm"):
            head.add(index)
            continue
        bias_add = node.op_type == "Add" and any(g.is_constant(name) for name in node.input)
        if node.op_type in HEAD_PASS_THROUGH or bias_add:
            head.add(index)
            stack.extend(name for name in node.input if name and not g.is_constant(name) and g.is_float(name))
    return head
