"""This CPU's INT8 GEMM ceiling at BERT-MiniLM shapes, in ONNX Runtime.

For each weight GEMM of one layer at batch 8 x sequence 384 (M = 3072 tokens;
hidden 384, FFN 1536) it times three one-node graphs with a constant weight:

- FP32 `MatMul`                      (what the FP32 engine runs),
- `MatMulInteger` u8 x s8 -> int32   (the bare INT8 GEMM, VNNI on x86),
- com.microsoft `MatMulIntegerToFloat` u8 x s8 -> float, with scales
                                     (the kernel ORT's optimizer turns our
                                     DequantizeLinear -> MatMul pairs into),

and prints GOPS (2*M*K*N per call) and the INT8 / FP32 speed ratio. The
ratio of the whole-layer sum is the most an engine can gain from INT8 GEMMs
alone; the engine's own ratio shows how much of it survives the rest of the
graph (attention, LayerNorm, GELU, quantize ops).

    python benchmarks/int8_gemm_ceiling.py [--threads N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TOKENS = 8 * 384
SHAPES = {  # name: (K, N), one of each per layer
    "QKV (x3)": (384, 384),
    "attention out": (384, 384),
    "FFN in": (384, 1536),
    "FFN out": (1536, 384),
    "QKV packed": (384, 1152),
}
PER_LAYER = {"QKV (x3)": 3, "attention out": 1, "FFN in": 1, "FFN out": 1}  # the unpacked layer


def _graph(kind: str, k: int, n: int) -> bytes:
    rng = np.random.default_rng(0)
    if kind == "fp32":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [TOKENS, k])
        w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
        nodes, inits = [helper.make_node("MatMul", ["x", "w"], ["y"])], [w]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [TOKENS, n])
    else:
        x = helper.make_tensor_value_info("x", TensorProto.UINT8, [TOKENS, k])
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w"),
                 numpy_helper.from_array(np.array(128, np.uint8), "xz"),
                 numpy_helper.from_array(np.zeros(n, np.int8), "wz")]
        if kind != "int8":
            inits += [numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
                      numpy_helper.from_array(np.full(n, 0.01, np.float32), "ws")]
        if kind == "int8":
            nodes = [helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["y"])]
            y = helper.make_tensor_value_info("y", TensorProto.INT32, [TOKENS, n])
        else:
            nodes = [helper.make_node("MatMulIntegerToFloat", ["x", "w", "xs", "ws", "xz", "wz"], ["y"],
                                      domain="com.microsoft")]
            y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [TOKENS, n])
    model = helper.make_model(helper.make_graph(nodes, kind, [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def seconds_per_call(kind: str, k: int, n: int, threads: int, budget: float) -> float:
    from _ort_timing import cpu_session, median_seconds

    rng = np.random.default_rng(1)
    x = rng.standard_normal((TOKENS, k)).astype(np.float32) if kind == "fp32" \
        else rng.integers(0, 256, (TOKENS, k), dtype=np.uint8)
    return median_seconds(cpu_session(_graph(kind, k, n), threads), {"x": x}, budget)


def main(argv=None) -> int:
    import _ort_timing  # noqa: F401  (puts the repository on sys.path)

    from bertbuild.evaluation.latency import machine_note

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=1.5, help="timing budget per graph")
    args = parser.parse_args(argv)
    print(f"M = {TOKENS} tokens (b8 s384), {args.threads} thread(s); {machine_note()}")
    header = f"{'GEMM':15s} {'K x N':>11s} {'FP32 GOPS':>10s} {'u8s8 GOPS':>10s} {'->float GOPS':>13s} " \
             f"{'u8s8/FP32':>10s} {'->float/FP32':>13s}"
    print(header)
    print("-" * len(header))
    layer = {"fp32": 0.0, "int8": 0.0, "int8_to_float": 0.0}
    for name, (k, n) in SHAPES.items():
        times = {kind: seconds_per_call(kind, k, n, args.threads, args.seconds) for kind in layer}
        gops = {kind: 2 * TOKENS * k * n / t / 1e9 for kind, t in times.items()}
        print(f"{name:15s} {f'{k} x {n}':>11s} {gops['fp32']:10.0f} {gops['int8']:10.0f} {gops['int8_to_float']:13.0f} "
              f"{times['fp32'] / times['int8']:9.2f}x {times['fp32'] / times['int8_to_float']:12.2f}x")
        for kind in layer:
            layer[kind] += PER_LAYER.get(name, 0) * times[kind]
    print(f"{'one layer':15s} {'(QKV,O,FFN)':>11s} {'':10s} {'':10s} {'':13s} "
          f"{layer['fp32'] / layer['int8']:9.2f}x {layer['fp32'] / layer['int8_to_float']:12.2f}x")
    print(f"one layer's weight GEMMs: FP32 {layer['fp32'] * 1e3:.1f} ms, MatMulIntegerToFloat "
          f"{layer['int8_to_float'] * 1e3:.1f} ms per call; {machine_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
