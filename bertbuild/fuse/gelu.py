"""GELU arithmetic -> Gelu (opset 20), exact (erf) or tanh approximation.

Before, exact (`hidden_act: gelu`; x/sqrt2 may be Mul(x, 0.7071) or Div(x, 1.4142))::

    x ─┬─ Mul(1/sqrt2) ─ Erf ─ Add(1) ─┐
       └───────────────── Mul(x, 0.5, ·)┴─ y        (any association of the Mul tree)

Before, tanh (`gelu_new` / `gelu_tanh`)::

    x ─┬─ Mul(x, x, x, 0.044715) ─ Add(x, ·) ─ Mul(sqrt(2/pi)) ─ Tanh ─ Add(1) ─┐
       └─────────────────────────────────────────────── Mul(x, 0.5, ·) ─────────┴─ y

After::

    x ─ Gelu(approximate="none" | "tanh") ─ y

Guards: every constant matches its formula to 1e-4; no intermediate is read
outside the pattern.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import onnx_graphsurgeon as gs

from bertbuild.fuse import match as m
from bertbuild.fuse.driver import register_pass

log = logging.getLogger(__name__)


def _erf_argument(node):
    """(x, nodes) if `node` (an Erf) reads x/sqrt(2), as Mul(x, 1/sqrt2) or Div(x, sqrt2)."""
    pre = m.producer(node.inputs[0])
    if pre is None or pre.op not in ("Mul", "Div"):
        return None
    orders = (pre.inputs, pre.inputs[::-1]) if pre.op == "Mul" else (pre.inputs,)
    target = math.sqrt(0.5) if pre.op == "Mul" else math.sqrt(2.0)
    for x, c in orders:
        if m.const(x) is None and m.close(m.scalar(c), target):
            return x, [pre]
    return None


def _tanh_argument(node):
    """(x, nodes) if `node` (a Tanh) reads sqrt(2/pi) * (x + 0.044715 x^3)."""
    outer: list = []
    leaves = m.mul_leaves(node.inputs[0], outer)
    variables = [leaf for leaf in leaves if m.const(leaf) is None]
    inner = m.producer(variables[0], "Add") if outer and len(variables) == 1 else None
    k = m.split_leaves(leaves)[1]
    if inner is None or k.size != 1 or not m.close(float(k), math.sqrt(2.0 / math.pi)):
        return None
    for x, cubic in (inner.inputs, inner.inputs[::-1]):
        cube: list = []
        names, k = m.split_leaves(m.mul_leaves(cubic, cube))
        if names == Counter({x.name: 3}) and k.size == 1 and m.close(float(k), 0.044715):
            return x, [*outer, inner, *cube]
    return None


def _match(graph, node):
    found = _erf_argument(node) if node.op == "Erf" else _tanh_argument(node)
    if found is None:
        return m.skip(log, "gelu at %s: argument is not x/sqrt2 or sqrt(2/pi)(x+0.044715x^3)", node.name)
    x, nodes = found
    one = m.sole_consumer(node.outputs[0], "Add")
    if one is None or not m.close(m.scalar(m.other_input(one, node.outputs[0])), 1.0):
        return m.skip(log, "gelu at %s: no Add(1) after %s", node.name, node.op)
    product = m.climb_product(one.outputs[0], Counter({x.name: 1, one.outputs[0].name: 1}))
    if product is None or product[2].size != 1 or not m.close(float(product[2]), 0.5):
        return m.skip(log, "gelu at %s: no x * 0.5 * (1 + ...) product", node.name)
    root, inner, _ = product
    nodes = [*nodes, node, one, *inner]
    if not m.private(graph, nodes, keep=root.outputs[0]):
        return m.skip(log, "gelu at %s: an intermediate is read outside the pattern", node.name)
    return x, root.outputs[0], "none" if node.op == "Erf" else "tanh"


@register_pass("gelu")
def fuse_gelu(graph: gs.Graph) -> int:
    """Erf or tanh GELU arithmetic -> Gelu(approximate="none" | "tanh")."""
    count = 0
    for x, y, approximate in m.matches(graph, ("Erf", "Tanh"), _match):
        y.inputs.clear()
        graph.nodes.append(gs.Node("Gelu", f"fused/Gelu_{count}", {"approximate": approximate}, [x], [y]))
        count += 1
    return count
