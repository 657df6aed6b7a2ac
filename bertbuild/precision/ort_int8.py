"""The ONNX-Runtime-only INT8 file: ORT's fused CPU attention kernel with INT8 QKV weights.

Measured on this kind of CPU (benchmarks/attention_kernels.py): ONNX Runtime
runs the standard opset-23 `Attention` (and the Reshape/Transpose pairs
around it) several times slower than its own com.microsoft `Attention`
kernel, which takes the [B, S, hidden] activation, ONE packed [hidden, 3*hidden]
QKV weight and the [B, S] 0/1 input mask. Its INT8 form, com.microsoft
`QAttention`, runs the packed QKV GEMM with u8 activations x s8 weights
(per-column scales) and the attention itself in FP32 (softmax included).

So this file is written from the same FP32 graph as the TensorRT file
(fused, or smoothed, see smoothing.py), in three steps:

1. every opset-23 Attention, with its three Q/K/V projections, head
   reshapes and transposes, becomes one com.microsoft Attention (FP32);
2. the remaining weight MatMuls (attention output, FFN in, FFN out) get the
   u8s8 Q/DQ pairs of int8.py, from the same calibration (ORT's optimizer
   turns each DequantizeLinear -> MatMul into MatMulIntegerToFloat, and
   fuses SkipLayerNormalization and BiasGelu around them by itself);
3. each com.microsoft Attention whose Q, K and V MatMuls were all to be
   quantized becomes QAttention: a QuantizeLinear with the calibrated range
   of its input, the packed weight in INT8 per output column.

A smoothing `Mul(x, 1/s)` in front of a quantized input is folded into that
input's QuantizeLinear as a per-channel scale (scale * s_c): the file then
runs no extra elementwise pass for smoothing at all.

This file uses com.microsoft ops: it is for ONNX Runtime on CPU only. The
TensorRT-bound file stays standard ONNX (int8.py).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from bertbuild.fuse import match as m
from bertbuild.model.signature import INPUT_NAMES
from bertbuild.precision.calibration import Calibration
from bertbuild.precision.config import Int8Config
from bertbuild.precision.int8 import _quiet_ort_quantizer, quantize_variant
from bertbuild.precision.sensitivity import INT8_LIMIT, UINT8_MAX

MS_DOMAIN = "com.microsoft"
MASK_INPUT = INPUT_NAMES[2]  # input_mask: [B, S] int32, 1 for real tokens
_HEADS_FIRST = [0, 2, 1, 3]


@dataclass
class OrtInt8Report:
    path: str
    attention_fp32: int = 0  # com.microsoft Attention left in FP32 (a Q/K/V MatMul was excluded)
    attention_int8: int = 0  # QAttention
    smoothing_folded: int = 0  # smoothing Muls folded into a per-channel QuantizeLinear
    quantized_nodes: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- step 1: contrib Attention


@dataclass
class _Projection:
    matmul: gs.Node
    weight: np.ndarray
    bias: np.ndarray


def _projection(heads_first) -> tuple[_Projection, gs.Variable] | None:
    """For Transpose(0,2,1,3)(Reshape(Add(MatMul(x, W), b))): the projection and x."""
    transpose = m.producer(heads_first, "Transpose")
    if transpose is None or list(transpose.attrs.get("perm", [])) != _HEADS_FIRST:
        return None
    reshape = m.producer(transpose.inputs[0], "Reshape")
    add = m.producer(reshape.inputs[0], "Add") if reshape is not None else None
    if add is None:
        return None
    for product, bias in (add.inputs, add.inputs[::-1]):
        matmul = m.producer(product, "MatMul")
        weight = m.const(matmul.inputs[1]) if matmul is not None else None
        bias_value = m.const(bias)
        if weight is not None and bias_value is not None and bias_value.ndim == 1:
            return _Projection(matmul, weight, bias_value), matmul.inputs[0]
    return None


def _context_output(attention: gs.Node):
    """The [B, S, hidden] tensor made by Transpose(0,2,1,3) + Reshape after the Attention."""
    transpose = m.sole_consumer(attention.outputs[0], "Transpose")
    if transpose is None or list(transpose.attrs.get("perm", [])) != _HEADS_FIRST:
        return None
    reshape = m.sole_consumer(transpose.outputs[0], "Reshape")
    return reshape.outputs[0] if reshape is not None else None


def to_contrib_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, list[str]]]:
    """Each opset-23 self-Attention with its projections -> one com.microsoft Attention.

    Returns the new model and, per new node, the names of the Q, K, V MatMuls
    it replaced (the fallback and step 3 decide by those names).
    """
    graph = gs.import_onnx(model)
    mask = next((t for t in graph.inputs if t.name == MASK_INPUT), None)
    if mask is None:
        raise ValueError(f"the model has no {MASK_INPUT!r} input for the attention mask")
    replaced: dict[str, list[str]] = {}
    for node in [n for n in graph.nodes if n.op == "Attention" and n.domain in (None, "", "ai.onnx")]:
        found = [_projection(t) for t in node.inputs[:3]]
        context = _context_output(node)
        if None in found or context is None or len({id(x) for _, x in found}) != 1:
            continue
        projections = [p for p, _ in found]
        x = found[0][1]
        heads = int(node.inputs[0].shape[1]) if node.inputs[0].shape else None
        if not isinstance(heads, int):
            continue
        name = f"{node.name}/contrib"
        weight = gs.Constant(f"{name}/qkv_weight", np.concatenate([p.weight for p in projections], axis=1))
        bias = gs.Constant(f"{name}/qkv_bias", np.concatenate([p.bias for p in projections]).astype(np.float32))
        attrs = {"num_heads": heads, "mask_filter_value": -10000.0}
        if "scale" in node.attrs:
            attrs["scale"] = float(node.attrs["scale"])
        contrib = gs.Node("Attention", name, attrs, [x, weight, bias, mask], [], domain=MS_DOMAIN)
        # The new node writes the tensor the old Reshape wrote; the old chain is then dead.
        context.inputs.clear()
        contrib.outputs = [context]
        graph.nodes.append(contrib)
        replaced[name] = [p.matmul.name for p in projections]
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    if not any(opset.domain == MS_DOMAIN for opset in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return out, replaced


# --------------------------------------------------------------------------- step 3: QAttention


def u8_scale_zero_point(low: float, high: float) -> tuple[float, int]:
    """Asymmetric u8 quantization of [low, high] (widened to hold 0), as onnxruntime.quantization does."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / UINT8_MAX if high > low else 1.0
    return float(scale), int(np.clip(round(-low / scale), 0, UINT8_MAX))


def _int8_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-column INT8 ([-127, 127]) and the column scales."""
    scale = np.maximum(np.abs(weight).max(axis=0), 1e-12) / INT8_LIMIT
    return np.clip(np.round(weight / scale), -INT8_LIMIT, INT8_LIMIT).astype(np.int8), scale.astype(np.float32)


def to_qattention(graph: gs.Graph, calibration: Calibration, replaced: dict[str, list[str]],
                  quantized: set[str]) -> tuple[int, int]:
    """Turn each contrib Attention whose Q/K/V MatMuls are all in `quantized` into QAttention.

    Returns (QAttention count, contrib Attention left in FP32).
    """
    converted = kept = 0
    for node in [n for n in graph.nodes if n.op == "Attention" and n.domain == MS_DOMAIN]:
        if not set(replaced.get(node.name, ["?"])) <= quantized:
            kept += 1
            continue
        x, weight, bias, mask = node.inputs[:4]
        low, high = calibration.ranges[x.name].clipped()
        scale, zero_point = u8_scale_zero_point(low, high)
        name = node.name
        x_scale = gs.Constant(f"{name}/input_scale", np.array(scale, np.float32))
        x_zero = gs.Constant(f"{name}/input_zero_point", np.array(zero_point, np.uint8))
        x_q = gs.Variable(f"{name}/input_quantized", np.uint8, x.shape)
        w_q, w_scale = _int8_columns(np.asarray(weight.values, dtype=np.float32))
        graph.nodes.append(gs.Node("QuantizeLinear", f"{name}/QuantizeLinear", {}, [x, x_scale, x_zero], [x_q]))
        node.op, node.name = "QAttention", f"{name}/quantized"
        node.inputs = [x_q, gs.Constant(f"{name}/qkv_weight_int8", w_q), bias, x_scale,
                       gs.Constant(f"{name}/qkv_weight_scale", w_scale), mask, x_zero,
                       gs.Constant(f"{name}/qkv_weight_zero_point", np.zeros(w_q.shape[1], np.int8))]
        converted += 1
    return converted, kept


# --------------------------------------------------------------------------- smoothing folded into Q


def fold_smoothing(graph: gs.Graph) -> int:
    """Mul(x, 1/s) -> QuantizeLinear(scale d)  becomes  QuantizeLinear(x, scale d * s per channel).

    Only where every reader of the Mul's output is a per-tensor u8 QuantizeLinear
    (the DequantizeLinear or QAttention behind it keeps the per-tensor scale d,
    so it sees x / s, which the smoothed weights expect).
    """
    folded = 0
    for mul in [n for n in graph.nodes if n.op == "Mul"]:
        inverse = next((m.const(t) for t in mul.inputs if m.const(t) is not None), None)
        x = next((t for t in mul.inputs if m.const(t) is None), None)
        readers = list(mul.outputs[0].outputs)
        if inverse is None or x is None or inverse.ndim != 1 or not readers or \
                any(r.op != "QuantizeLinear" or m.const(r.inputs[1]) is None or m.const(r.inputs[1]).size != 1
                    for r in readers):
            continue
        channels = inverse.size
        for reader in readers:
            scale = float(m.const(reader.inputs[1]).reshape(-1)[0])
            zero = m.const(reader.inputs[2])
            prefix = reader.name or mul.name
            reader.inputs = [
                x, gs.Constant(f"{prefix}/smoothed_scale", (scale / inverse).astype(np.float32)),
                gs.Constant(f"{prefix}/smoothed_zero_point", np.full(channels, zero.reshape(-1)[0], zero.dtype)),
            ]
            reader.attrs["axis"] = -1
        mul.outputs[0].outputs.clear()
        folded += 1
    graph.cleanup()
    return folded


# --------------------------------------------------------------------------- the writer


def write_ort_int8(fp32_onnx: Path | str, out_path: Path | str, calibration: Calibration, cfg: Int8Config,
                   nodes_to_exclude: Iterable[str] = ()) -> OrtInt8Report:
    """Write the ONNX-Runtime-only u8s8 file from the fused (or smoothed) FP32 graph `fp32_onnx`.

    `calibration` is the one made for `fp32_onnx` (calibration.calibrate); the
    excluded nodes are names of that graph's MatMuls, as for quantize_int8.
    """
    start = time.perf_counter()
    excluded = sorted(set(nodes_to_exclude))
    contrib, replaced = to_contrib_attention(onnx.load(str(fp32_onnx)))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bertbuild-ort-int8-") as scratch:
        staged = Path(scratch) / "contrib-fp32.onnx"
        onnx.save(contrib, str(staged))
        quantized = quantize_variant(staged, out_path, calibration, cfg, "u8s8", excluded)
    graph = gs.import_onnx(onnx.load(str(out_path)))
    converted, kept = to_qattention(graph, calibration, replaced, set(quantized))
    folded = fold_smoothing(graph)
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    with _quiet_ort_quantizer():
        onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return OrtInt8Report(path=str(out_path), attention_fp32=kept, attention_int8=converted, smoothing_folded=folded,
                         quantized_nodes=quantized, excluded_nodes=excluded,
                         seconds=round(time.perf_counter() - start, 2))
