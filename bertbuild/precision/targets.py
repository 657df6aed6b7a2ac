"""Which tensors INT8 quantizes: the activation input of every MatMul that reads a constant weight.

That is QKV, attention output, FFN in and out, and optionally the QA head
(and the embedding Gathers, if configured). Those are the only activations the
INT8 graph quantizes, so they are the only ones calibration observes. ONNX
Runtime's own calibrators observe every input and output of every MatMul,
including the [batch, heads, seq, seq] attention scores; that is what made
calibrating a 6-layer H384 model peak at 6.8 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from bertbuild import onnx_skeleton
from bertbuild.config.precision import Int8Config
from bertbuild.precision.graph_index import GraphIndex, logits_head


@dataclass(frozen=True)
class QuantTarget:
    """One node to quantize and the activation tensor it reads."""

    node: str
    op_type: str
    activation: str


def quantization_targets(model: onnx.ModelProto, cfg: Int8Config) -> list[QuantTarget]:
    """MatMuls with a constant weight (and Gathers from a constant table if configured).

    The QA head (the MatMul whose result reaches a graph output through
    bias/shape ops only) is left out unless `cfg.quantize_head`.
    """
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    head = set() if cfg.quantize_head else head_nodes(model)
    targets = []
    for node in graph.node:
        if node.op_type not in cfg.op_types or not node.name:
            continue
        if node.op_type == "MatMul" and node.input[1] in constants and node.input[0] not in constants \
                and node.name not in head:
            targets.append(QuantTarget(node.name, node.op_type, node.input[0]))
        elif node.op_type == "Gather" and node.input[0] in constants:
            # ORT quantizes a Gather's table like an activation (its output shares the
            # table's scale), so its "range" is the table's own min/max, not calibration.
            targets.append(QuantTarget(node.name, node.op_type, node.input[0]))
    return targets


def head_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the QA head's MatMul/Gemm nodes (the last MatMul before each float output)."""
    inferred = onnx_skeleton.inferred_skeleton(model)  # types only: no weight is copied
    g = GraphIndex(inferred)
    indexes = logits_head(g, [value.name for value in model.graph.output])
    return {g.nodes[i].name for i in indexes if g.nodes[i].op_type in ("MatMul", "Gemm")}
