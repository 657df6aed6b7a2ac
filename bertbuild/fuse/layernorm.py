"""LayerNorm arithmetic -> LayerNormalization (opset 17, axis=-1).

Before (what tf2onnx emits for `modeling.layer_norm`; the mean may be a
GlobalAveragePool of a rank-3 tensor or a ReduceMean over the last axis, the
Mul tree may associate either way, Sqrt+Reciprocal may be Div(1, Sqrt))::

    x ─┬─ Mean ─┐
       └────────┴─ Sub ─ d ─┬─ Mul(d, d) ─ Mean ─ Add(eps) ─ Sqrt ─ Reciprocal ─ r
                            └──────────── Mul(d, r, gamma) ─ Add(beta) ─ y

After::

    x ─ LayerNormalization(scale=gamma, bias=beta, axis=-1, epsilon=eps) ─ y

All 2N+1 LayerNorms of BERT match, including the embedding one (x = word +
type + position) and the residual ones (x = dense + skip): standard ONNX has
no SkipLayerNormalization / EmbedLayerNormalization, so those stay
`Add -> LayerNormalization`, which TensorRT fuses on its own.

Guards: eps is a constant scalar; both means are over the last axis of x;
gamma/beta are per-channel constants of size H (or absent: 1 / 0); no
intermediate is read outside the pattern.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

from bertbuild.fuse import match as m
from bertbuild.fuse.driver import register_pass

log = logging.getLogger(__name__)


def _inverse_std(var_mean):
    """Add(eps) -> Sqrt -> Reciprocal | Div(1, .) after the variance mean: (eps, nodes, r)."""
    add = m.sole_consumer(var_mean.outputs[0], "Add")
    eps = m.scalar(m.other_input(add, var_mean.outputs[0])) if add else None
    sqrt = m.sole_consumer(add.outputs[0], "Sqrt") if eps is not None else None
    inv = m.sole_consumer(sqrt.outputs[0]) if sqrt else None
    if inv is None or not (inv.op == "Reciprocal" or (inv.op == "Div" and m.scalar(inv.inputs[0]) == 1.0)):
        return None
    return eps, [add, sqrt, inv], inv.outputs[0]


def _match(graph, mean):
    x = m.mean_over_last_axis(mean)
    sub = m.sole_consumer(mean.outputs[0], "Sub") if x is not None else None
    if sub is None or sub.inputs[0] is not x:
        return None
    d = sub.outputs[0]
    square = next((n for n in d.outputs if (n.op == "Mul" and n.inputs[0] is d and n.inputs[1] is d)
                   or (n.op == "Pow" and n.inputs[0] is d and m.scalar(n.inputs[1]) == 2.0)), None)
    var_mean = m.sole_consumer(square.outputs[0]) if square else None
    if var_mean is None or m.mean_over_last_axis(var_mean) is not square.outputs[0]:
        return None
    found = _inverse_std(var_mean)
    if found is None:
        return m.skip(log, "layernorm at %s: epsilon/rsqrt guard failed", mean.name)
    eps, rsqrt_nodes, r = found
    product = m.climb_product(r, Counter({d.name: 1, r.name: 1}))
    hidden = x.shape[-1] if x.shape else None
    if product is None or not isinstance(hidden, int):
        return m.skip(log, "layernorm at %s: scale product or hidden size guard failed", mean.name)
    root, inner, gamma = product
    nodes = [mean, sub, square, var_mean, *rsqrt_nodes, *inner]
    y, beta = root.outputs[0], np.zeros(())
    bias = m.sole_consumer(y, "Add")
    if bias is not None and m.const(m.other_input(bias, y)) is not None:
        nodes.append(bias)
        y, beta = bias.outputs[0], m.const(m.other_input(bias, root.outputs[0]))
    gamma, beta = m.as_vector(gamma, hidden), m.as_vector(beta, hidden)
    if gamma is None or beta is None or not m.private(graph, nodes, keep=y):
        return m.skip(log, "layernorm at %s: per-channel gamma/beta or private-use guard failed", mean.name)
    return x, gamma, beta, float(eps), nodes, y


@register_pass("layernorm")
def fuse_layernorm(graph: gs.Graph) -> int:
    """Mean/variance/rsqrt arithmetic -> LayerNormalization (all 2N+1, embedding and residual ones too)."""
    count = 0
    for x, gamma, beta, eps, nodes, y in m.matches(graph, ("GlobalAveragePool", "ReduceMean"), _match):
        name = f"fused/LayerNormalization_{count}"
        scale = gs.Constant(f"{name}/gamma", gamma)
        shift = gs.Constant(f"{name}/beta", beta)
        y.inputs.clear()  # detach y from the old pattern; cleanup drops the rest
        graph.nodes.append(gs.Node("LayerNormalization", name, {"axis": -1, "epsilon": eps}, [x, scale, shift], [y]))
        count += 1
    return count
