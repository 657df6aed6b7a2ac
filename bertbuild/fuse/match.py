"""Small, pure onnx-graphsurgeon helpers shared by the fusion passes.

Everything here reads the graph; nothing rewrites it. Matching is done on
tensors (graphsurgeon keeps producers in `tensor.inputs` and consumers in
`tensor.outputs`), and products of `Mul` nodes are compared as multisets of
leaves, so `x * 0.5 * y`, `(0.5 * x) * y` and `x * (y * 0.5)` all match alike.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs


def skip(logger, message: str, *args) -> None:
    """Log why a candidate was not fused (debug level) and return None."""
    logger.debug(message, *args)
    return None


def matches(graph, ops: tuple[str, ...], match):
    """`match(graph, node)` for each node of an op in `ops`, where not None; the nodes are listed first and
    matched one at a time, so a match sees the rewrites made for the matches before it."""
    for node in [n for n in graph.nodes if n.op in ops]:
        found = match(graph, node)
        if found is not None:
            yield found


def const(tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer or `Constant` node), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    node = producer(tensor)
    if node is not None and node.op == "Constant" and "value" in node.attrs:
        return np.asarray(node.attrs["value"].values)
    return None


def scalar(tensor) -> float | None:
    value = const(tensor)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def close(value: float | None, target: float, rtol: float = 1e-4) -> bool:
    return value is not None and abs(value - target) <= rtol * abs(target)


def producer(tensor, op: str | None = None):
    """The node producing `tensor` (of type `op`, when given), else None."""
    if tensor is None or len(tensor.inputs) != 1:
        return None
    node = tensor.inputs[0]
    return node if op is None or node.op == op else None


def sole_consumer(tensor, op: str | None = None):
    """The only node reading `tensor` (of type `op`), else None."""
    if len(tensor.outputs) != 1:
        return None
    node = tensor.outputs[0]
    return node if op is None or node.op == op else None


def other_input(node, tensor):
    """For a binary node with `tensor` as one input, the other input."""
    if len(node.inputs) != 2 or tensor not in node.inputs:
        return None
    return node.inputs[1] if node.inputs[0] is tensor else node.inputs[0]


def mul_leaves(tensor, inner: list) -> list:
    """Flatten a tree of `Mul` nodes rooted at `tensor`'s producer into its leaf tensors.

    A `Mul` below the root is expanded only when the root's tree is its only
    reader; such nodes are appended to `inner` (the root included).
    """
    root = producer(tensor, "Mul")
    if root is None:
        return [tensor]
    inner.append(root)
    leaves = []
    for operand in root.inputs:
        child = producer(operand, "Mul")
        if child is not None and len(operand.outputs) == 1:
            leaves.extend(mul_leaves(operand, inner))
        else:
            leaves.append(operand)
    return leaves


def split_leaves(leaves: list) -> tuple[Counter, np.ndarray]:
    """(multiset of variable leaf names, product of the constant leaves)."""
    names, product = Counter(), np.ones((), dtype=np.float64)
    for leaf in leaves:
        value = const(leaf)
        if value is None:
            names[leaf.name] += 1
        else:
            product = product * value.astype(np.float64)
    return names, product


def climb_product(start, want: Counter, max_depth: int = 4):
    """The highest `Mul` above `start` whose variable leaves are exactly `want`.

    Walks up through sole-consumer `Mul` nodes. Returns (root node, inner
    nodes, constant product) or None.
    """
    best, tensor = None, start
    for _ in range(max_depth):
        node = sole_consumer(tensor, "Mul")
        if node is None:
            break
        inner: list = []
        names, product = split_leaves(mul_leaves(node.outputs[0], inner))
        if names == want:
            best = (node, inner, product)
        tensor = node.outputs[0]
    return best


def mean_over_last_axis(node):
    """The input of `node` if it is a keep-dims mean over the last axis, else None.

    tf2onnx writes `reduce_mean(axis=-1)` of a rank-3 tensor as
    GlobalAveragePool (which averages every axis after the second); later
    opsets may write ReduceMean with `axes` as an attribute or an input.
    """
    x = node.inputs[0] if node.inputs else None
    rank = len(x.shape) if x is not None and x.shape is not None else None
    if node.op == "GlobalAveragePool":
        return x if rank == 3 else None
    if node.op != "ReduceMean" or not node.attrs.get("keepdims", 1):
        return None
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        axes = const(node.inputs[1])
    if axes is None or rank is None or np.size(axes) != 1:
        return None
    return x if int(np.reshape(axes, -1)[0]) in (-1, rank - 1) else None


def private(graph, nodes, keep) -> bool:
    """True when every output of `nodes` except `keep` is read only inside `nodes`.

    A match whose intermediate tensors are used elsewhere (or are graph
    outputs) cannot be replaced by one node without changing those readers.
    """
    members = {id(node) for node in nodes}
    outputs = {id(tensor) for tensor in graph.outputs}
    for node in nodes:
        for tensor in node.outputs:
            if tensor is keep:
                continue
            if id(tensor) in outputs:
                return False
            if any(id(reader) not in members for reader in tensor.outputs):
                return False
    return True


def as_vector(value: np.ndarray, size: int) -> np.ndarray | None:
    """A per-channel constant ([], [H], [1, 1, H], ...) as a float32 [H] vector, else None."""
    if value.ndim and any(dim != 1 for dim in value.shape[:-1]):
        return None
    if value.size not in (1, size):
        return None
    return np.ascontiguousarray(np.broadcast_to(value.reshape(-1), (size,)), dtype=np.float32)

