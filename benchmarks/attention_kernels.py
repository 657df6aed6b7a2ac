"""Which ONNX Runtime CPU kernels run one BERT attention block fastest, INT8 weights throughout.

One block = the Q/K/V projections of a [batch, seq, hidden] activation plus
the attention itself, with a real padding mask (each row's length drawn
from SQuAD-like lengths), at MiniLM sizes (hidden 384, 12 heads) and
b8 s384. Every variant computes the same function; what differs is how the
graph spells it and so which kernels ORT picks:

  fp32-onnx23        FP32 MatMuls + bias, heads-first transposes, ai.onnx Attention (4-D) -- the fused FP32 file
  int8-onnx23        QDQ INT8 MatMuls, the rest as above                               -- today's u8s8 file
  int8-onnx23-3d     QDQ INT8 MatMuls, ai.onnx Attention on 3-D inputs (no transposes)
  int8-packed-3d     one packed QKV INT8 MatMul (hidden x 3*hidden), Split, Attention 3-D
  int8-mha           QDQ INT8 MatMuls (no bias), com.microsoft MultiHeadAttention (bias, [B,S] mask)
  int8-mha-flash     as int8-mha but no mask input (so ORT takes its MLAS flash kernel): the mask
                     rides in one extra Q/K channel per head (bertbuild/precision/ort_int8.py)
  ms-attention-fp32  com.microsoft Attention (packed FP32 QKV weight inside)
  ms-qattention      com.microsoft QAttention (packed INT8 QKV weight, static input scale)
  int8-unfused       QDQ INT8 projections, MatMul / Softmax / MatMul in FP32
  int8-unfused-int8  ... and the two batched matmuls (QK^T, PV) in INT8 through Q/DQ as well

Prints median ms per call and the speed-up over `fp32-onnx23`.

    python benchmarks/attention_kernels.py [--threads N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

B, S, H, HEADS = 8, 384, 384, 12
D = H // HEADS
FLOAT, INT32 = TensorProto.FLOAT, TensorProto.INT32
OPSETS = [helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)]


class _Builder:
    """A tiny graph builder: named constants and nodes, one float input `x`, one output `y`."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, value, name: str | None = None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, domain: str = "", **attrs) -> list[str]:
        self.count += 1
        names = [f"t{self.count}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"n{self.count}", domain=domain, **attrs))
        return names

    def one(self, op_type: str, inputs: list[str], **attrs) -> str:
        return self.op(op_type, inputs, **attrs)[0]

    def model(self, output: str, with_mask_index: bool) -> bytes:
        self.nodes.append(helper.make_node("Identity", [output], ["y"]))
        inputs = [helper.make_tensor_value_info("x", FLOAT, [B, S, H]),
                  helper.make_tensor_value_info("mask", INT32, [B, S])]
        graph = helper.make_graph(self.nodes, "attention", inputs,
                                  [helper.make_tensor_value_info("y", FLOAT, [B, S, H])], self.inits)
        return helper.make_model(graph, opset_imports=OPSETS).SerializeToString()

    # ----------------------------------------------------------------- pieces

    def weight(self) -> np.ndarray:
        return (self.rng.standard_normal((H, H)) * 0.05).astype(np.float32)

    def quantize_input(self, x: str) -> str:
        """QuantizeLinear -> DequantizeLinear with a fixed u8 scale, as our INT8 files do."""
        scale, zero = self.const(np.float32(8.0 / 255)), self.const(np.uint8(100))
        return self.one("DequantizeLinear", [self.one("QuantizeLinear", [x, scale, zero]), scale, zero])

    def int8_weight(self, w: np.ndarray) -> str:
        scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        return self.one("DequantizeLinear", [self.const(q), self.const(scale.astype(np.float32)),
                                             self.const(np.zeros(w.shape[1], np.int8))], axis=1)

    def projection(self, x: str, int8: bool, width: int = H) -> str:
        # No bias Add: in a one-block graph ORT folds MatMul + Add into an FP32 Gemm before its
        # Q/DQ fusion, which would leave the "INT8" projections in FP32 (the whole model keeps them INT8).
        w = np.concatenate([self.weight() for _ in range(width // H)], axis=1)
        return self.one("MatMul", [x, self.int8_weight(w) if int8 else self.const(w)])

    def additive_mask(self) -> str:
        """[B,1,S,S] float: 0 for real keys, -10000 for padding (the fused file's mask; ai.onnx
        Attention wants the query axis spelled out)."""
        as_float = self.one("Cast", ["mask"], to=FLOAT)
        negative = self.one("Mul", [self.one("Sub", [self.const(np.float32(1.0)), as_float]),
                                    self.const(np.float32(-10000.0))])
        per_key = self.one("Unsqueeze", [negative, self.const(np.array([1, 2], np.int64))])
        return self.one("Expand", [per_key, self.const(np.array([B, 1, S, S], np.int64))])

    def heads_first(self, t: str) -> str:
        return self.one("Transpose", [self.one("Reshape", [t, self.const(np.array([B, S, HEADS, D], np.int64))])],
                        perm=[0, 2, 1, 3])

    def heads_last(self, t: str) -> str:
        return self.one("Reshape", [self.one("Transpose", [t], perm=[0, 2, 1, 3]),
                                    self.const(np.array([B, S, H], np.int64))])


def build(variant: str) -> bytes:
    g = _Builder()
    x = "x"
    int8 = variant != "fp32-onnx23"
    scale = float(1 / np.sqrt(D))
    if variant in ("fp32-onnx23", "int8-onnx23"):
        xin = g.quantize_input(x) if int8 else x
        q, k, v = (g.heads_first(g.projection(xin, int8)) for _ in range(3))
        out = g.heads_last(g.one("Attention", [q, k, v, g.additive_mask()], scale=scale))
    elif variant == "int8-onnx23-3d":
        xin = g.quantize_input(x)
        q, k, v = (g.projection(xin, True) for _ in range(3))
        out = g.one("Attention", [q, k, v, g.additive_mask()], scale=scale, q_num_heads=HEADS, kv_num_heads=HEADS)
    elif variant == "int8-packed-3d":
        qkv = g.projection(g.quantize_input(x), True, width=3 * H)
        q, k, v = g.op("Split", [qkv, g.const(np.array([H, H, H], np.int64))], outputs=3, axis=2)
        out = g.one("Attention", [q, k, v, g.additive_mask()], scale=scale, q_num_heads=HEADS, kv_num_heads=HEADS)
    elif variant == "int8-mha":
        xin = g.quantize_input(x)
        q, k, v = (g.projection(xin, True) for _ in range(3))
        bias = g.const(np.zeros(3 * H, np.float32))
        out = g.one("MultiHeadAttention", [q, k, v, bias, "mask"], domain="com.microsoft", num_heads=HEADS)
    elif variant == "int8-mha-flash":
        from bertbuild.precision.ort_int8 import augment_heads

        xin = g.quantize_input(x)
        w = [g.weight() for _ in range(3)]
        w[0], w[1] = augment_heads(w[0], HEADS, 0.0), augment_heads(w[1], HEADS, 0.0)
        q, k, v = (g.one("MatMul", [xin, g.int8_weight(weight)]) for weight in w)
        one_hot = np.zeros((HEADS, D + 1), np.float32)
        one_hot[:, D] = -10000.0 / scale
        padding = g.one("Sub", [g.const(np.float32(1.0)), g.one("Cast", ["mask"], to=FLOAT)])
        column = g.one("Reshape", [g.one("Mul", [g.one("Unsqueeze", [padding, g.const(np.array([2, 3], np.int64))]),
                                                 g.const(one_hot)]), g.const(np.array([0, 0, -1], np.int64))])
        bias = np.concatenate([augment_heads(np.zeros(H, np.float32), HEADS, 1.0),
                               augment_heads(np.zeros(H, np.float32), HEADS, 0.0), np.zeros(H, np.float32)])
        out = g.one("MultiHeadAttention", [q, g.one("Add", [k, column]), v, g.const(bias)], domain="com.microsoft",
                    num_heads=HEADS, scale=scale)
    elif variant == "ms-attention-fp32":
        w = np.concatenate([g.weight() for _ in range(3)], axis=1)
        out = g.one("Attention", [x, g.const(w), g.const(np.zeros(3 * H, np.float32)), "mask"],
                    domain="com.microsoft", num_heads=HEADS)
    elif variant == "ms-qattention":
        w = np.concatenate([g.weight() for _ in range(3)], axis=1)
        w_scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / 127).astype(np.float32)
        w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        x_scale, x_zero = g.const(np.float32(8.0 / 255)), g.const(np.uint8(100))
        x_q = g.one("QuantizeLinear", [x, x_scale, x_zero])
        out = g.one("QAttention", [x_q, g.const(w_q), g.const(np.zeros(3 * H, np.float32)), x_scale,
                                   g.const(w_scale), "mask", x_zero, g.const(np.zeros(3 * H, np.int8))],
                    domain="com.microsoft", num_heads=HEADS)
    elif variant in ("int8-unfused", "int8-unfused-int8"):
        xin = g.quantize_input(x)
        q, k, v = (g.heads_first(g.projection(xin, True)) for _ in range(3))
        k_t = g.one("Transpose", [k], perm=[0, 1, 3, 2])
        if variant == "int8-unfused-int8":
            q, k_t = g.quantize_input(q), g.quantize_input(k_t)
        scores = g.one("Add", [g.one("Mul", [g.one("MatMul", [q, k_t]), g.const(np.float32(scale))]),
                               g.additive_mask()])
        probs = g.one("Softmax", [scores], axis=-1)
        if variant == "int8-unfused-int8":
            p_scale, p_zero = g.const(np.float32(1 / 255)), g.const(np.uint8(0))
            probs = g.one("DequantizeLinear", [g.one("QuantizeLinear", [probs, p_scale, p_zero]), p_scale, p_zero])
            v = g.quantize_input(v)
        out = g.heads_last(g.one("MatMul", [probs, v]))
    else:
        raise ValueError(variant)
    return g.model(out, with_mask_index=True)


VARIANTS = ("fp32-onnx23", "int8-onnx23", "int8-onnx23-3d", "int8-packed-3d", "int8-mha", "int8-mha-flash",
            "ms-attention-fp32",
            "ms-qattention", "int8-unfused", "int8-unfused-int8")


def feed() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    lengths = rng.integers(120, S + 1, size=B)
    mask = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int32)
    return {"x": rng.standard_normal((B, S, H)).astype(np.float32), "mask": mask}


def main(argv=None) -> int:
    from _ort_timing import cpu_session, median_seconds

    from bertbuild.host import machine_note

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per variant")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="only these (repeatable)")
    args = parser.parse_args(argv)
    inputs = feed()
    print(f"one attention block (QKV projections + attention), b{B} s{S} hidden {H}, {HEADS} heads, "
          f"{args.threads} thread(s); {machine_note()}")
    baseline = None
    for variant in args.variant or VARIANTS:
        ms = 1e3 * median_seconds(cpu_session(build(variant), args.threads), inputs, args.seconds)
        baseline = baseline or ms
        print(f"{variant:20s} {ms:8.2f} ms  {baseline / ms:5.2f}x", flush=True)
    print(machine_note())
    return 0


if __name__ == "__main__":
    sys.exit(main())
