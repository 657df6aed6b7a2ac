"""Small hand-built ONNX graphs, one per fusion pass, spelled as tf2onnx exports BERT (no TensorFlow needed).

Each returns a model with a float input `x` [batch, seq, hidden] (and an int32
`input_mask` [batch, seq] for attention) and one output `y`.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # what the project's tf2onnx export writes


def _const(name: str, value) -> "onnx.TensorProto":  # noqa: F821
    value = np.asarray(value)
    return numpy_helper.from_array(value.astype(np.float32) if value.dtype.kind == "f" else value, name)


def _model(nodes, inits, inputs, name):
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", inputs[0][2]])]
    graph_inputs = [helper.make_tensor_value_info(n, t, ["batch", "seq", h] if h else ["batch", "seq"])
                    for n, t, h in inputs]
    graph = helper.make_graph(nodes, name, graph_inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def layernorm(hidden: int = 8, seed: int = 0):
    """mean, x - mean, (x - mean)^2, mean, + eps, sqrt, reciprocal, * gamma, * (x - mean), + beta."""
    rng = np.random.default_rng(seed)
    inits = [_const("eps", 1e-12), _const("gamma", rng.normal(1, 0.1, hidden)), _const("beta", rng.normal(0, 0.1, hidden))]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["variance"], axes=[-1]),
        helper.make_node("Add", ["variance", "eps"], ["variance_eps"]),
        helper.make_node("Sqrt", ["variance_eps"], ["std"]),
        helper.make_node("Reciprocal", ["std"], ["inv_std"]),
        helper.make_node("Mul", ["inv_std", "gamma"], ["scale"]),
        helper.make_node("Mul", ["centred", "scale"], ["normed"]),
        helper.make_node("Add", ["normed", "beta"], ["y"]),
    ]
    return _model(nodes, inits, [("x", TensorProto.FLOAT, hidden)], "layernorm")


def gelu(hidden: int = 8):
    """x * 0.5 * (1 + erf(x * 1/sqrt(2))), BERT's exact GELU."""
    inits = [_const("inv_sqrt2", 1 / np.sqrt(2.0)), _const("one", 1.0), _const("half", 0.5)]
    nodes = [
        helper.make_node("Mul", ["x", "inv_sqrt2"], ["arg"]),
        helper.make_node("Erf", ["arg"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["x", "half"], ["half_x"]),
        helper.make_node("Mul", ["half_x", "erf1"], ["y"]),
    ]
    return _model(nodes, inits, [("x", TensorProto.FLOAT, hidden)], "gelu")


def attention(heads: int = 2, head_size: int = 4, seed: int = 0):
    """Self-attention over x: q, k, v projections, heads split, scaled scores + (1 - mask) * -10000, softmax."""
    hidden = heads * head_size
    rng = np.random.default_rng(seed)
    inits = [_const(f"w_{p}", rng.normal(0, 0.3, (hidden, hidden))) for p in "qkv"]
    inits += [_const(f"b_{p}", rng.normal(0, 0.1, hidden)) for p in "qkv"]
    inits += [_const("heads_shape", np.array([0, 0, heads, head_size], np.int64)),
              _const("hidden_shape", np.array([0, 0, hidden], np.int64)),
              _const("scale", 1 / np.sqrt(head_size)), _const("one", 1.0), _const("big_negative", -10000.0),
              _const("mask_axes", np.array([1, 2], np.int64))]
    nodes = []
    for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [helper.make_node("MatMul", ["x", f"w_{p}"], [f"{p}_mm"]),
                  helper.make_node("Add", [f"{p}_mm", f"b_{p}"], [p]),
                  helper.make_node("Reshape", [p, "heads_shape"], [f"{p}_heads"]),
                  helper.make_node("Transpose", [f"{p}_heads"], [f"{p}_t"], perm=perm)]
    nodes += [
        helper.make_node("Cast", ["input_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "mask_axes"], ["mask_4d"]),
        helper.make_node("Sub", ["one", "mask_4d"], ["masked_out"]),
        helper.make_node("Mul", ["masked_out", "big_negative"], ["mask_bias"]),
        helper.make_node("MatMul", ["q_t", "k_t"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mask_bias"], ["biased"]),
        helper.make_node("Softmax", ["biased"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v_t"], ["context"]),
        helper.make_node("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context_t", "hidden_shape"], ["y"]),
    ]
    return _model(nodes, inits, [("x", TensorProto.FLOAT, hidden), ("input_mask", TensorProto.INT32, None)],
                  "attention")
