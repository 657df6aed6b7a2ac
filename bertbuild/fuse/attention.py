"""Scaled dot-product self-attention -> Attention (opset 23).

Before (per layer; q, k, v = x @ W + b of the same x; Mul(scale) may be Div)::

    q ─ Reshape[B,S,N,D] ─ Transpose(0,2,1,3) ─┐
    k ─ Reshape[B,S,N,D] ─ Transpose(0,2,3,1) ─┴─ MatMul ─ Mul(scale) ─ Add(mask) ─ Softmax ─┐
    v ─ Reshape[B,S,N,D] ─ Transpose(0,2,1,3) ─────────────────────────────────────────────┴─ MatMul ─ ctx

After (layout "bnsh", the default: 4-D heads-first inputs, as TensorRT's attention layer takes them)::

    q ─ Reshape ─ Transpose(0,2,1,3) ─┐
    k ─ Reshape ─ Transpose(0,2,1,3) ─┼─ Attention(scale) ─ ctx
    v ─ Reshape ─ Transpose(0,2,1,3) ─┤
    mask_bias[B,1,1,S] ─ Expand[B,1,S,S] (once per graph) ┘

layout "bsh" instead feeds q, k, v [B,S,H] with q_num_heads/kv_num_heads
and replaces the trailing Transpose+Reshape too (a smaller graph; TensorRT's
importer then inserts those reshapes itself; ONNX Runtime CPU measured the
same within noise).

The additive mask (1 - input_mask) * -10000 is computed once by the export
and shared by every layer; this pass broadcasts it ONCE to [B,1,S,S], because
ONNX Runtime's CPU kernel requires the mask's query axis to equal S (the spec
allows [B,1,1,S]). Guards: self-attention (q, k, v projected from one
tensor), heads and head size known, constant scalar scale, softmax over the
last axis, a rank-4 float mask not computed from the hidden states.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from bertbuild.fuse import match as m
from bertbuild.fuse.driver import register_pass

log = logging.getLogger(__name__)
LAYOUTS = ("bnsh", "bsh")
_HEADS_FIRST, _KEYS_T = [0, 2, 1, 3], [0, 2, 3, 1]


def _heads(tensor, perm):
    """(x3, reshape, transpose) if tensor = Transpose(perm)(Reshape(x3))."""
    tr = m.producer(tensor, "Transpose")
    rs = m.producer(tr.inputs[0], "Reshape") if tr is not None and list(tr.attrs.get("perm", [])) == perm else None
    return (rs.inputs[0], rs, tr) if rs is not None else None


def _projected_from(tensor):
    add = m.producer(tensor, "Add")
    mm = next((m.producer(t, "MatMul") for t in (add.inputs if add else []) if m.producer(t, "MatMul")), None)
    return mm.inputs[0] if mm is not None else None


def _scores(add):
    """(qk MatMul, scale node, scale, mask tensor) for Add(MatMul * scale, mask)."""
    for scores, mask in (add.inputs, add.inputs[::-1]):
        node = m.producer(scores)
        if node is None or node.op not in ("Mul", "Div"):
            continue
        for qk_tensor, c in ((node.inputs, node.inputs[::-1]) if node.op == "Mul" else (node.inputs,)):
            qk, scale = m.producer(qk_tensor, "MatMul"), m.scalar(c)
            if qk is not None and scale:
                return qk, node, (scale if node.op == "Mul" else 1.0 / scale), mask
    return None


def _mask_ok(mask, dtype) -> bool:
    """A rank-4 additive mask of the scores' type, computed without any MatMul (not from hidden states)."""
    if mask.dtype != dtype or mask.shape is None or len(mask.shape) != 4 or mask.shape[1] != 1:
        return False
    stack, seen = [mask], set()
    while stack:
        for node in stack.pop().inputs:
            if node.op in ("MatMul", "Gemm", "Softmax"):
                return False
            if id(node) not in seen:
                seen.add(id(node))
                stack.extend(node.inputs)
    return True


def _match(graph, sm, layout):
    add = m.producer(sm.inputs[0], "Add")
    found = _scores(add) if add is not None and sm.attrs.get("axis", -1) in (-1, 3) else None
    pv = m.sole_consumer(sm.outputs[0], "MatMul")
    if found is None or pv is None or pv.inputs[0] is not sm.outputs[0]:
        return m.skip(log, "attention at %s: not MatMul*scale+mask -> Softmax(-1) -> MatMul", sm.name)
    qk, scale_node, scale, mask = found
    q, k, v = _heads(qk.inputs[0], _HEADS_FIRST), _heads(qk.inputs[1], _KEYS_T), _heads(pv.inputs[1], _HEADS_FIRST)
    sources = [_projected_from(t[0]) for t in (q, k, v)] if None not in (q, k, v) else [None]
    if any(s is None for s in sources) or len({id(s) for s in sources}) != 1:
        return m.skip(log, "attention at %s: q/k/v are not head-split projections of one tensor", sm.name)
    shape, hidden = qk.inputs[0].shape or [], (q[0].shape or [None])[-1]
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1::2]) or hidden != shape[1] * shape[3]:
        return m.skip(log, "attention at %s: heads x head size unknown or not the hidden size", sm.name)
    if not _mask_ok(mask, qk.inputs[0].dtype):
        return m.skip(log, "attention at %s: mask is not a rank-4 [B,1,*,S] additive bias of inputs", sm.name)
    nodes, out = [qk, scale_node, add, sm, pv], pv.outputs[0]
    if layout == "bsh":
        tr = m.sole_consumer(out, "Transpose")
        rs = m.sole_consumer(tr.outputs[0], "Reshape") if tr and list(tr.attrs["perm"]) == _HEADS_FIRST else None
        if rs is None:
            return m.skip(log, "attention at %s: no Transpose+Reshape back to [B,S,H]", sm.name)
        nodes, out = nodes + [tr, rs, *q[1:], *k[1:], *v[1:]], rs.outputs[0]
    if not m.private(graph, nodes, keep=out):
        return m.skip(log, "attention at %s: an intermediate is read outside the pattern", sm.name)
    return q, k, v, mask, float(scale), shape[1], out


def _broadcast_mask(graph, mask, cache: dict):
    """mask [B,1,1,S] -> Expand to [B,1,S,S], built once per distinct mask tensor."""
    if mask.shape[2] != 1 or mask.name in cache:
        return cache.get(mask.name, mask)
    p = f"fused/attention_mask_{len(cache)}"
    seq = gs.Variable(f"{p}/seq", np.int64, [1])
    target = gs.Variable(f"{p}/shape", np.int64, [4])
    out = gs.Variable(p, mask.dtype, [mask.shape[0], 1, mask.shape[3], mask.shape[3]])
    graph.nodes += [
        gs.Node("Shape", f"{p}/Shape", {"start": -1}, [mask], [seq]),
        gs.Node("Concat", f"{p}/Concat", {"axis": 0},
                [gs.Constant(f"{p}/ones", np.ones(2, np.int64)), seq, gs.Constant(f"{p}/one", np.ones(1, np.int64))],
                [target]),
        gs.Node("Expand", f"{p}/Expand", {}, [mask, target], [out]),
    ]
    cache[mask.name] = out
    return out


@register_pass("attention")
def fuse_attention(graph: gs.Graph, layout: str = "bnsh") -> int:
    """MatMul/scale/mask/Softmax/MatMul self-attention -> Attention (one shared [B,1,S,S] mask)."""
    if layout not in LAYOUTS:
        raise ValueError(f"attention layout must be one of {LAYOUTS}, got {layout!r}")
    count, masks = 0, {}
    for q, k, v, mask, scale, heads, out in m.matches(graph, ("Softmax",), lambda g, sm: _match(g, sm, layout)):
        name = f"fused/Attention_{count}"
        out.inputs.clear()
        attrs: dict = {"scale": scale}
        if layout == "bsh":
            inputs = [q[0], k[0], v[0]]
            attrs.update(q_num_heads=heads, kv_num_heads=heads)
        else:
            k4 = gs.Variable(f"{name}/key", q[2].outputs[0].dtype)
            transpose = gs.Node("Transpose", f"{name}/key_heads_first", {"perm": _HEADS_FIRST},
                                [k[1].outputs[0]], [k4])
            graph.nodes.append(transpose)
            inputs = [q[2].outputs[0], k4, v[2].outputs[0]]
        graph.nodes.append(gs.Node("Attention", name, attrs, [*inputs, _broadcast_mask(graph, mask, masks)], [out]))
        count += 1
    return count


@register_pass("attention-bsh")
def fuse_attention_bsh(graph: gs.Graph) -> int:
    """Same, with 3-D [B,S,H] q/k/v and q_num_heads/kv_num_heads (not in DEFAULT_ORDER)."""
    return fuse_attention(graph, layout="bsh")
