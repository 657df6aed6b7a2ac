"""Adding nodes to an ONNX graph while keeping its node list topologically sorted."""

from __future__ import annotations

import onnx


def add_nodes(model: onnx.ModelProto, new_nodes: list[onnx.NodeProto]) -> None:
    """Append `new_nodes` and re-sort the graph, keeping the existing order wherever it is valid.

    A stable Kahn sort: at each step the earliest node (original nodes first,
    then the new ones in the given order) whose inputs are all available is
    emitted, so untouched parts of the graph keep their order.
    """
    graph = model.graph
    nodes = list(graph.node) + list(new_nodes)
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    pending = list(range(len(nodes)))
    ordered = []
    while pending:
        for position, index in enumerate(pending):
            if all(name in available for name in nodes[index].input):
                ordered.append(nodes[index])
                available.update(nodes[index].output)
                del pending[position]
                break
        else:
            raise ValueError("cannot order the graph: a node reads a tensor nothing produces (or a cycle)")
    del graph.node[:]
    graph.node.extend(ordered)
