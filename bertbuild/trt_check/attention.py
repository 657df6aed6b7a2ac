"""Attention rule: the ONNX Attention forms TensorRT's importer builds (10.14 and later).

From the operator matrix and the importer/static checker (see the data file's
source): Q, K, V and the mask 4-D; no KV cache inputs or extra outputs;
softcap, softmax_precision and qk_matmul_output_mode unset. The mask must be
BOOL or an additive bias of Q's type, broadcastable to [batch, heads, q_seq, kv_seq].
This is what `bertbuild.fuse.attention` writes with its default "bnsh" layout.
"""

from __future__ import annotations

from typing import Iterator

import onnx
from onnx import TensorProto

from bertbuild.trt_check.graph import DEFAULT_DOMAINS, GraphView, attribute, node_label, present
from bertbuild.trt_check.matrix import OperatorMatrix, type_name
from bertbuild.trt_check.report import Finding

_INPUT_NAMES = ("Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen")
_OUTPUT_NAMES = ("Y", "present_key", "present_value", "qk_matmul_output")


def _fits(mask_dim, target_dim) -> bool:
    """False only for a provable mismatch: two known sizes, the mask's neither 1 nor the target's.

    Named axes are not compared: shape inference names the same length
    differently on either side of a Reshape ('seq' vs 'unk__2').
    """
    known = isinstance(mask_dim, int) and isinstance(target_dim, int)
    return not known or mask_dim in (1, target_dim)


def _mask_problems(view: GraphView, mask: str, q, k, rank: int) -> list[str]:
    info = view.info(mask)
    problems = []
    if info.elem_type and info.elem_type not in (TensorProto.BOOL, q.elem_type):
        problems.append(f"mask '{mask}' is {type_name(info.elem_type)}; TensorRT takes a BOOL mask or an additive "
                        f"mask of Q's type {type_name(q.elem_type)}")
    if info.rank != rank:
        problems.append(f"mask '{mask}' has rank {info.rank if info.rank is not None else 'unknown'}, "
                        f"TensorRT needs {rank}-D")
    elif q.rank == rank and k.rank == rank:
        target = (q.dims[0], q.dims[1], q.dims[2], k.dims[2])  # [batch, heads, q_seq, kv_seq]
        if not all(_fits(m, t) for m, t in zip(info.dims, target)):
            problems.append(f"mask '{mask}' shape {list(info.dims)} does not broadcast to {list(target)}")
    return problems


def _problems(view: GraphView, node: onnx.NodeProto, matrix: OperatorMatrix) -> list[str]:
    facts = matrix.attention
    rank = facts["rank"]
    problems = [f"input {_INPUT_NAMES[i]} is not supported" for i, _ in present(node.input) if i >= facts["inputs_max"]]
    problems += [f"output {_OUTPUT_NAMES[i]} is not supported" for i, _ in present(node.output)
                 if i >= facts["outputs_max"]]
    for name in facts["unsupported_attributes"]:
        value = attribute(node, name, 0)  # absent or 0: unset
        if value not in (0, 0.0):
            problems.append(f"attribute {name}={value} is not supported")
    q, k, v = (view.info(node.input[i]) for i in range(3))
    ranks = {label: info.rank for label, info in zip("QKV", (q, k, v))}
    if any(r != rank for r in ranks.values()):
        shown = ", ".join(f"{label} {r if r is not None else '?'}-D" for label, r in ranks.items())
        problems.append(f"Q, K, V must be {rank}-D (got {shown}); fuse with the default 'bnsh' layout")
    elif attribute(node, "q_num_heads") not in (None, q.dims[1]) and isinstance(q.dims[1], int):
        problems.append(f"q_num_heads={attribute(node, 'q_num_heads')} disagrees with Q's head axis {q.dims[1]}")
    if len(node.input) > 3 and node.input[3]:
        problems += _mask_problems(view, node.input[3], q, k, rank)
    return problems


def check_attention(view: GraphView, matrix: OperatorMatrix) -> Iterator[Finding]:
    for node in view.nodes():
        if node.op_type == "Attention" and node.domain in DEFAULT_DOMAINS:
            problems = _problems(view, node, matrix)
            if problems:
                yield Finding(node_label(node), node.op_type, "attention", "; ".join(problems))
