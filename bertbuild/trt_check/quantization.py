"""Q/DQ rule: what TensorRT's explicit quantization accepts.

INT8 only (UINT8 is a network I/O type for TensorRT, never a quantized one,
so a u8s8 file fails), zero point exactly 0, per-channel scales only where a
DequantizeLinear reads a constant weight; activations are quantized per tensor.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto

from bertbuild.trt_check.graph import DEFAULT_DOMAINS, GraphView, attribute, node_label
from bertbuild.trt_check.matrix import OperatorMatrix, type_name
from bertbuild.trt_check.report import Finding

QDQ = ("QuantizeLinear", "DequantizeLinear")


def _quantized_type(view: GraphView, node: onnx.NodeProto) -> int:
    """The integer type the node quantizes to (Q) or from (DQ); ONNX's default for Q without one is UINT8."""
    if node.op_type == "DequantizeLinear":
        return view.info(node.input[0]).elem_type
    output_dtype = attribute(node, "output_dtype", 0)
    if output_dtype:
        return output_dtype
    if len(node.input) > 2 and node.input[2]:
        return view.info(node.input[2]).elem_type
    return view.info(node.output[0]).elem_type or TensorProto.UINT8


def _problems(view: GraphView, node: onnx.NodeProto) -> list[str]:
    problems = []
    qtype = _quantized_type(view, node)
    if qtype == TensorProto.UINT8:
        problems.append("UINT8 quantization is not supported by TensorRT (a u8s8 file is for ONNX Runtime; "
                        "use the s8s8 file)")
    elif qtype and qtype != TensorProto.INT8:
        problems.append(f"quantizes to {type_name(qtype)}; this project's INT8 path needs INT8")
    zero_point = node.input[2] if len(node.input) > 2 else ""
    if zero_point:
        value = view.constant(zero_point)
        if value is None:
            problems.append(f"zero point '{zero_point}' is not a constant; TensorRT needs a build-time 0")
        elif np.any(value != 0):
            problems.append(f"zero point '{zero_point}' is {np.unique(value)[:4].tolist()}, TensorRT needs 0")
    scale = view.constant(node.input[1])
    scale_dims = view.info(node.input[1]).dims
    per_channel = scale.size > 1 if scale is not None else bool(scale_dims and any(d != 1 for d in scale_dims))
    reads_weight = node.op_type == "DequantizeLinear" and view.is_constant(node.input[0])
    if attribute(node, "block_size", 0):
        problems.append("block quantization is not INT8 per-tensor/per-channel quantization")
    elif per_channel and not reads_weight:
        problems.append(f"per-channel scale (axis {attribute(node, 'axis', 1)}) on an activation; TensorRT "
                        "quantizes activations per tensor, only constant weights per channel")
    return problems


def check_qdq(view: GraphView, matrix: OperatorMatrix) -> Iterator[Finding]:
    for node in view.nodes():
        if node.op_type in QDQ and node.domain in DEFAULT_DOMAINS:
            problems = _problems(view, node)
            if problems:
                yield Finding(node_label(node), node.op_type, "qdq", "; ".join(problems))
