"""The ONNX-Runtime-only INT8 file: the standard Q/DQ file re-spelled for ORT's fastest CPU kernels.

Profiled on this CPU (benchmarks/profile_ops.py, b8 s384): once every weight
MatMul runs as INT8 (MatMulIntegerToFloat, near this CPU's INT8 GEMM
ceiling), the rest of the standard file costs more than the GEMMs: the
opset-23 Attention kernel with its head transposes about 40 %, and
LayerNormalization (fused by ORT into SkipLayerNormalization) about 20 %.
This file is written from the same FP32 graph as the TensorRT file (fused,
or smoothed / outlier-split, see recipe.py), with two rewrites:

1. attention runs on com.microsoft MultiHeadAttention's MLAS flash kernel
   (`to_flash_attention`): [B, S, hidden] in and out, no transposes, the
   Q/K/V biases inside the kernel, the padding mask carried by one extra
   channel per head;
2. every LayerNormalization is written out as reductions and elementwise
   ops (`unfuse_layernorm`), about 5x faster than ORT's LayerNorm kernel.

In between, the weight MatMuls get the u8s8 Q/DQ pairs of int8.py from the
same calibration, so the INT8 arithmetic is the standard file's.

Measured and rejected (benchmarks/README.md): com.microsoft QAttention (INT8
packed QKV + ORT's masked attention path; no faster than the opset-23
kernel here), folding the smoothing Mul into a per-channel QuantizeLinear
(ORT's per-channel QuantizeLinear is about 50x slower than per tensor), and
INT8 attention batched matmuls through Q/DQ (the separate scale, mask and
softmax passes over [B, heads, S, S] cost more than the flash kernel).

This file uses com.microsoft ops: it is for ONNX Runtime on CPU only. The
TensorRT-bound file stays standard ONNX (int8.py).
"""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from bertbuild import onnx_files, onnx_skeleton
from bertbuild.fuse import match as m
from bertbuild.model.signature import INPUT_NAMES
from bertbuild.precision.ranges import Calibration
from bertbuild.config.precision import Int8Config
from bertbuild.precision.int8 import quantize_variant

MS_DOMAIN = "com.microsoft"
MASK_INPUT = INPUT_NAMES[2]  # input_mask: [B, S] int32, 1 for real tokens
_HEADS_FIRST = [0, 2, 1, 3]


@dataclass
class OrtInt8Report:
    path: str
    flash_attention: int = 0  # opset-23 Attention moved to com.microsoft MultiHeadAttention (flash kernel)
    layernorms_unfused: int = 0  # LayerNormalization written as reductions and elementwise ops
    quantized_nodes: list[str] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------- attention on the flash kernel


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


def augment_heads(values: np.ndarray, heads: int, extra: float) -> np.ndarray:
    """[..., heads * d] -> [..., heads * (d + 1)]: one more channel per head, holding `extra`."""
    split = values.reshape(*values.shape[:-1], heads, values.shape[-1] // heads)
    column = np.full((*split.shape[:-1], 1), extra, values.dtype)
    return np.concatenate([split, column], axis=-1).reshape(*values.shape[:-1], -1)


def _mask_column(graph: gs.Graph, mask: gs.Variable, heads: int, head_size: int, scale: float, cache: dict):
    """[B, S, heads * (head_size + 1)]: 0 but for each head's extra channel, -10000 / scale at padding.

    q's extra channel is 1, so q . k gains -10000 / scale exactly at padded
    keys: after the kernel's `scale`, the -10000 additive mask of the export.
    Built once per (heads, head size, scale) and shared by every layer.
    """
    key = (heads, head_size, scale)
    if key in cache:
        return cache[key]
    p = f"ort/mask_column_{len(cache)}"
    as_float, padding, bias, spread, column = (gs.Variable(f"{p}/{s}", np.float32) for s in
                                                ("float", "padding", "bias", "spread", "column"))
    one_hot = np.zeros((heads, head_size + 1), np.float32)
    one_hot[:, head_size] = 1.0
    graph.nodes += [
        gs.Node("Cast", f"{p}/Cast", {"to": onnx.TensorProto.FLOAT}, [mask], [as_float]),
        gs.Node("Sub", f"{p}/Sub", {}, [gs.Constant(f"{p}/one", np.array(1.0, np.float32)), as_float], [padding]),
        gs.Node("Unsqueeze", f"{p}/Unsqueeze", {}, [padding, gs.Constant(f"{p}/axes", np.array([2, 3], np.int64))],
                [bias]),
        gs.Node("Mul", f"{p}/Spread", {}, [bias, gs.Constant(f"{p}/one_hot", one_hot * np.float32(-10000.0 / scale))],
                [spread]),
        gs.Node("Reshape", f"{p}/Reshape", {}, [spread, gs.Constant(f"{p}/shape", np.array([0, 0, -1], np.int64))],
                [column]),
    ]
    cache[key] = column
    return column


def to_flash_attention(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Each opset-23 self-Attention -> com.microsoft MultiHeadAttention on ORT's CPU flash kernel.

    ORT runs MultiHeadAttention with MLAS's tiled flash attention only when it
    gets no mask; with the [B, S] padding mask it falls back to a slower
    unfused path. The padding goes into the data instead: Q and K get one
    more channel per head (Q's is 1 through its bias, K's carries
    -10000 / scale at padded keys), so the extra channel adds exactly the
    export's additive mask to every score. V is unchanged. The Q, K and V
    MatMuls keep their names and input (so calibration and exclusions apply
    as before); their weights gain the zero columns, their biases move into
    the attention node. Returns the model and the number of attentions moved.
    """
    graph = gs.import_onnx(model)
    mask = next((t for t in graph.inputs if t.name == MASK_INPUT), None)
    if mask is None:
        raise ValueError(f"the model has no {MASK_INPUT!r} input for the attention mask")
    moved, columns = 0, {}
    for node in [n for n in graph.nodes if n.op == "Attention" and n.domain in (None, "", "ai.onnx")]:
        found = [_projection(t) for t in node.inputs[:3]]
        context = _context_output(node)
        heads = node.inputs[0].shape[1] if node.inputs[0].shape else None
        if None in found or context is None or len({id(x) for _, x in found}) != 1 or not isinstance(heads, int):
            continue
        (q, _), (k, _), (v, _) = found
        head_size = q.weight.shape[1] // heads
        scale = float(node.attrs.get("scale", 1.0 / np.sqrt(head_size)))
        name = f"{node.name}/flash"
        outputs = []
        for projection, weight, role in ((q, augment_heads(q.weight, heads, 0.0), "query"),
                                         (k, augment_heads(k.weight, heads, 0.0), "key"), (v, v.weight, "value")):
            out = gs.Variable(f"{name}/{role}", np.float32)
            projection.matmul.inputs[1] = gs.Constant(f"{name}/{role}_weight", weight.astype(np.float32))
            projection.matmul.outputs = [out]
            outputs.append(out)
        key = gs.Variable(f"{name}/key_masked", np.float32)
        graph.nodes.append(gs.Node("Add", f"{name}/mask", {}, [outputs[1], _mask_column(
            graph, mask, heads, head_size, scale, columns)], [key]))
        bias = np.concatenate([augment_heads(q.bias, heads, 1.0), augment_heads(k.bias, heads, 0.0), v.bias])
        context.inputs.clear()
        graph.nodes.append(gs.Node(
            "MultiHeadAttention", name, {"num_heads": heads, "scale": scale},
            [outputs[0], key, outputs[2], gs.Constant(f"{name}/bias", bias.astype(np.float32))], [context],
            domain=MS_DOMAIN))
        moved += 1
    graph.cleanup().toposort()
    out = _export(graph, model)
    if not any(opset.domain == MS_DOMAIN for opset in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return out, moved


def _export(graph: gs.Graph, original: onnx.ModelProto) -> onnx.ModelProto:
    """graphsurgeon's export (any size), keeping the model's metadata (outliers.py records its channels there)."""
    out = onnx_skeleton.export_graph(graph)
    out.metadata_props.extend(original.metadata_props)
    return out


# --------------------------------------------------------------------------- LayerNorm as elementwise ops


def unfuse_layernorm(graph: gs.Graph) -> int:
    """Each last-axis LayerNormalization -> mean / variance / scale as plain reductions and elementwise ops.

    Why: ONNX Runtime's CPU LayerNormalization (and the SkipLayerNormalization
    it fuses an Add into) takes about 2.4 ms on a [8, 384, 384] tensor here,
    the same computation as ReduceMean / Sub / Mul / ReduceMean / Add / Sqrt /
    Reciprocal / Mul / Mul / Add about 0.5 ms (benchmarks/README.md): 13 of
    them are a fifth of the INT8 model's time. The ops are chosen so that
    ORT's own LayerNorm fusion (which looks for Pow and Div) leaves them alone.
    """
    count = 0
    for node in [n for n in graph.nodes if n.op == "LayerNormalization" and n.domain in (None, "", "ai.onnx")]:
        x, gamma = node.inputs[0], node.inputs[1]
        beta = node.inputs[2] if len(node.inputs) > 2 else None
        rank = len(x.shape) if x.shape else None
        if node.attrs.get("axis", -1) not in (-1, (rank or 0) - 1) or len(node.outputs) != 1:
            continue
        name = node.name
        axes = gs.Constant(f"{name}/axes", np.array([-1], np.int64))
        eps = gs.Constant(f"{name}/epsilon", np.array(node.attrs.get("epsilon", 1e-5), np.float32))

        def tensor(suffix):
            return gs.Variable(f"{name}/{suffix}", np.float32)

        mean, centred, square, variance = tensor("mean"), tensor("centred"), tensor("square"), tensor("variance")
        shifted, deviation, inverse, normed = tensor("shifted"), tensor("deviation"), tensor("inverse"), tensor("normed")
        scaled = tensor("scaled") if beta is not None else node.outputs[0]
        graph.nodes += [
            gs.Node("ReduceMean", f"{name}/ReduceMean", {"keepdims": 1}, [x, axes], [mean]),
            gs.Node("Sub", f"{name}/Sub", {}, [x, mean], [centred]),
            gs.Node("Mul", f"{name}/Square", {}, [centred, centred], [square]),
            gs.Node("ReduceMean", f"{name}/Variance", {"keepdims": 1}, [square, axes], [variance]),
            gs.Node("Add", f"{name}/AddEpsilon", {}, [variance, eps], [shifted]),
            gs.Node("Sqrt", f"{name}/Sqrt", {}, [shifted], [deviation]),
            gs.Node("Reciprocal", f"{name}/Reciprocal", {}, [deviation], [inverse]),
            gs.Node("Mul", f"{name}/Normalize", {}, [centred, inverse], [normed]),
            gs.Node("Mul", f"{name}/Gamma", {}, [normed, gamma], [scaled]),
        ]
        if beta is not None:
            graph.nodes.append(gs.Node("Add", f"{name}/Beta", {}, [scaled, beta], [node.outputs[0]]))
        node.outputs.clear()
        count += 1
    return count


# --------------------------------------------------------------------------- the writer


def write_ort_int8(fp32_onnx: Path | str, out_path: Path | str, calibration: Calibration, cfg: Int8Config,
                   nodes_to_exclude: Iterable[str] = (), external_data: bool | None = None) -> OrtInt8Report:
    """Write the ONNX-Runtime-only u8s8 file from the fused (or smoothed) FP32 graph `fp32_onnx`.

    `calibration` is the one made for `fp32_onnx` (calibration.calibrate); the
    excluded nodes are names of that graph's MatMuls, as for quantize_int8.
    `external_data`: how `out_path` keeps its weights; None follows `fp32_onnx` (`onnx_files.external_like`).
    """
    start = time.perf_counter()
    excluded = sorted(set(nodes_to_exclude))
    external = onnx_files.external_like(fp32_onnx, external_data)
    flash, moved = to_flash_attention(onnx_files.load(fp32_onnx))
    # graphsurgeon's graph is a web of cycles that only the cycle collector frees: collect now, or
    # the model it was imported from (2 GB and more) stays in memory while the next copy is made.
    gc.collect()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bertbuild-ort-int8-") as scratch:
        staged = Path(scratch) / "flash-fp32.onnx"
        onnx_files.save(flash, staged, external)
        del flash  # a 2 GB model is held once at a time
        quantized = quantize_variant(staged, out_path, calibration, cfg, "u8s8", excluded, external)
    quantized_model = onnx_files.load(out_path)
    graph = gs.import_onnx(quantized_model)
    unfused = unfuse_layernorm(graph)
    graph.cleanup().toposort()
    model = _export(graph, quantized_model)
    del graph, quantized_model
    gc.collect()  # as after to_flash_attention
    onnx_skeleton.check_model(model)
    onnx_files.save(model, out_path, external)
    return OrtInt8Report(path=str(out_path), flash_attention=moved, layernorms_unfused=unfused,
                         quantized_nodes=quantized, excluded_nodes=excluded,
                         seconds=round(time.perf_counter() - start, 2))
