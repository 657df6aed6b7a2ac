"""Rules on what each node is: opset, domain, operator support, element types, extra outputs."""

from __future__ import annotations

from typing import Iterator

import onnx
from onnx import TensorProto

from bertbuild.trt_check.graph import DEFAULT_DOMAINS, GraphView, node_label, present
from bertbuild.trt_check.matrix import OperatorMatrix, type_name
from bertbuild.trt_check.report import Finding

# Parameters whose type another rule owns: the Attention mask may be BOOL, which
# the matrix's Attention column (the Q/K/V types) does not list; the quantized
# side of Q/DQ is the qdq rule's (with a clearer message about u8s8 files).
_TYPED_ELSEWHERE = {"Attention": {"attn_mask"}, "QuantizeLinear": {"y_zero_point"},
                    "DequantizeLinear": {"x", "x_zero_point"}}


def check_opset(view: GraphView, matrix: OperatorMatrix) -> Iterator[Finding]:
    opset = view.opsets.get("", view.opsets.get("ai.onnx"))
    if opset is not None and not matrix.opset_min <= opset <= matrix.opset_max:
        yield Finding("opset", "model", "opset",
                      f"default-domain opset {opset} is outside TensorRT {matrix.tensorrt}'s "
                      f"{matrix.opset_min}..{matrix.opset_max}")


def check_domains_and_operators(view: GraphView, matrix: OperatorMatrix) -> Iterator[Finding]:
    for node in view.nodes():
        where, op = node_label(node), node.op_type
        if node.domain == "com.microsoft":
            yield Finding(where, op, "domain",
                          "com.microsoft is ONNX Runtime's contrib domain; TensorRT's parser has no importer for it "
                          "(build from our graph, not from ONNX Runtime's optimized model)")
        elif node.domain not in DEFAULT_DOMAINS:
            yield Finding(where, op, "domain", f"custom domain '{node.domain}' needs a TensorRT plugin")
        elif op not in matrix.operators:
            yield Finding(where, op, "operator", f"not in TensorRT {matrix.tensorrt}'s ONNX operator matrix")
        elif not matrix.operators[op].supported:
            hint = matrix.hints.get(op) or matrix.operators[op].note
            yield Finding(where, op, "operator",
                          f"not supported by TensorRT {matrix.tensorrt}'s ONNX parser" + (f" ({hint})" if hint else ""))


def check_extra_outputs(view: GraphView, matrix: OperatorMatrix) -> Iterator[Finding]:
    for node in view.nodes():
        limit = matrix.max_outputs.get(node.op_type)
        extra = [name for i, name in present(node.output) if limit is not None and i >= limit]
        if node.domain in DEFAULT_DOMAINS and extra:
            yield Finding(node_label(node), node.op_type, "outputs",
                          f"TensorRT supports only the first {limit} output(s); {', '.join(repr(n) for n in extra)} "
                          "must be left empty")


def _elem_types(type_strs) -> frozenset[int]:
    found = set()
    for text in type_strs:
        if text.startswith("tensor(") and text.endswith(")"):
            name = text[len("tensor("):-1].upper()
            if name in TensorProto.DataType.keys():
                found.add(TensorProto.DataType.Value(name))
    return frozenset(found)


def _formal_params(schema, count: int, outputs: bool) -> list:
    """The schema parameter behind each of `count` actual inputs/outputs (a variadic last one repeats)."""
    params = list(schema.outputs if outputs else schema.inputs)
    variadic = params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    return [params[min(i, len(params) - 1)] if variadic else (params[i] if i < len(params) else None)
            for i in range(count)]


def check_types(view: GraphView, matrix: OperatorMatrix) -> Iterator[Finding]:
    """Each node's inputs and outputs against the matrix's type list for its op.

    The matrix gives one type list per op. It describes the op's type
    parameters that can hold those types: T of Add, T1 of QuantizeLinear's x,
    but not T1 of Equal's BOOL output or T3 of QuantizeLinear's INT8 output.
    So a tensor is checked when its schema type parameter's allowed types meet
    the matrix's list; fixed-type parameters (Reshape's int64 shape) are not.
    """
    opset = view.opsets.get("", view.opsets.get("ai.onnx", 1))
    for node in view.nodes():
        support = matrix.operators.get(node.op_type)
        if node.domain not in DEFAULT_DOMAINS or support is None or not support.supported or not support.types:
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            continue
        allowed_by_param = {c.type_param_str: _elem_types(c.allowed_type_strs) for c in schema.type_constraints}
        checked = {p for p, allowed in allowed_by_param.items() if allowed & support.types}
        skip = _TYPED_ELSEWHERE.get(node.op_type, set())
        wrong = []
        for names, outputs in ((node.input, False), (node.output, True)):
            formals = _formal_params(schema, len(names), outputs)
            for position, name in present(names):
                formal = formals[position]
                if formal is None or formal.type_str not in checked or formal.name in skip:
                    continue
                elem = view.info(name).elem_type
                if elem and elem not in support.types:
                    wrong.append(f"{formal.name} '{name}' is {type_name(elem)}")
        if wrong:
            allowed = ", ".join(sorted(type_name(t) for t in support.types))
            yield Finding(node_label(node), node.op_type, "dtype",
                          f"{'; '.join(wrong)} (TensorRT {matrix.tensorrt} takes {allowed})")


def check_io_types(view: GraphView, matrix: OperatorMatrix) -> Iterator[Finding]:
    for value in (*view.graph_inputs, *view.graph.output):
        elem = view.info(value.name).elem_type
        if elem and elem not in matrix.network_types:
            yield Finding(value.name, "input" if value in view.graph_inputs else "output", "dtype",
                          f"{type_name(elem)} is not a TensorRT network type")
