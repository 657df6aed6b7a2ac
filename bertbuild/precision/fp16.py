"""FP32 ONNX -> FP16 (or BF16) ONNX with FP32 islands, graph inputs and outputs unchanged.

Why our own converter rather than `onnxruntime.transformers.float16` (not a
public API: it lives in ORT's model-optimizer tools and changes between
releases) or onnxconverter-common (not installed): the islands we need are
structural, not op-type lists. An unfused LayerNorm is a chain of plain
Sub/Mul/Add/Sqrt nodes that an op-type block list cannot tell apart from the
rest of the network, and the QA head is "the last MatMul before the outputs".
The conversion itself is small once the islands are known:

1. decide, per node, FP32 (island) or FP16 (everything else);
2. FP16 nodes read FP16 copies of their float initializers (clipped to the
   FP16 range, so a -1e9 mask constant becomes -65504, not -inf, which would
   turn `0 * mask` into NaN); float `Cast(to=FLOAT)`, `Constant` and
   `ConstantOfShape` values in the FP16 region produce FP16;
3. a Cast is inserted wherever a float tensor crosses between the regions
   (one per tensor and direction, shared by all its consumers), and before each
   graph output produced in FP16, so int32 inputs stay int32 and the logits
   stay float32;
4. softmax stays FP32 inside attention too: the fused graph has no Softmax node
   left (it is folded into the opset-23 `Attention`), so when `keep_fp32_ops`
   names Softmax, each `Attention` node joins the FP32 islands, with Casts
   around it. Why not FP16 inputs with `softmax_precision = FLOAT`, which would
   keep the attention GEMMs in FP16: TensorRT's ONNX parser (10.15) refuses
   that attribute, and this file is the one TensorRT builds (`bertbuild trt-check`).

The same file runs on ONNX Runtime (CPU) and is what TensorRT builds a strongly
typed FP16 network from: the precision is in the graph, not in builder flags.

BF16 is the same conversion to another 16-bit type (`convert_to_bf16`): the
same islands, no clipping (BF16 has FP32's range, with an 8-bit mantissa).
TensorRT builds it strongly typed on Ampere and later, and OpenVINO runs it
on CPUs with AVX512_BF16 or AMX; ONNX Runtime's CPU provider has no BF16
kernels for these ops, so the flow skips that engine there.

Files are read and written through `bertbuild.onnx_files`: an input past
protobuf's 2 GB limit (external data) works, and the FP16 file, half the
size, is written inline unless it is still too big or the input was external by choice.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bertbuild import onnx_files, onnx_skeleton
from bertbuild.config.precision import Fp16Config
from bertbuild.precision.graph_index import FLOAT, GraphIndex, logits_head

log = logging.getLogger(__name__)

HALF = TensorProto.FLOAT16
BF16 = TensorProto.BFLOAT16
FP16_MAX = float(np.finfo(np.float16).max)  # 65504
CHUNK = 1 << 22  # elements converted at a time: a 2 GB table never needs a second FP32 copy

MEAN_OPS = {"ReduceMean", "GlobalAveragePool"}
# Ops an unfused LayerNorm is built from (tf2onnx writes mean as GlobalAveragePool).
LAYERNORM_CHAIN_OPS = MEAN_OPS | {"Sub", "Mul", "Add", "Div", "Pow", "Sqrt", "Reciprocal"}


@dataclass
class Fp16Report:
    path: str
    seconds: float
    nodes: int
    fp32_nodes: list[str] = field(default_factory=list)  # the islands, by node name
    layernorm_islands: int = 0
    casts_inserted: int = 0
    initializers_converted: int = 0
    values_clipped: int = 0  # initializer values outside the FP16 range, clipped to +-65504
    fp32_attention: int = 0  # Attention nodes kept in FP32 so that their softmax is

    def to_json(self) -> dict:
        return asdict(self)


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def _layernorm_islands(g: GraphIndex) -> list[set[int]]:
    """Node sets of every LayerNorm: fused LayerNormalization ops and unfused chains.

    An unfused chain starts at `Sub(x, Mean(x))`. It is grown forward through
    LayerNorm-like elementwise ops while each new node reads only the island,
    constants, or `x` itself, so it takes the variance, eps, rsqrt, gamma and
    beta nodes and stops at the residual Add or MatMul that reads the result
    together with an outside tensor.
    """
    islands = []
    for index, node in enumerate(g.nodes):
        if node.op_type == "LayerNormalization":
            islands.append({index})
            continue
        if node.op_type != "Sub" or len(node.input) != 2:
            continue
        x, mean = node.input
        mean_index = g.producer.get(mean)
        if mean_index is None:
            continue
        mean_node = g.nodes[mean_index]
        if mean_node.op_type not in MEAN_OPS or mean_node.input[0] != x:
            continue
        island = {mean_index, index}
        produced = set(mean_node.output) | set(node.output)
        frontier = list(node.output)
        while frontier:
            tensor = frontier.pop()
            for consumer in g.consumers.get(tensor, []):
                if consumer in island:
                    continue
                candidate = g.nodes[consumer]
                if candidate.op_type not in LAYERNORM_CHAIN_OPS:
                    continue
                if all(not name or name in produced or name == x or g.is_constant(name)
                       for name in candidate.input):
                    island.add(consumer)
                    produced.update(candidate.output)
                    frontier.extend(candidate.output)
        # A real LayerNorm has at least: mean, sub, square, mean, add eps, sqrt, scale.
        if sum(1 for i in island if g.nodes[i].op_type in MEAN_OPS) >= 2 and len(island) >= 6:
            islands.append(island)
    return islands


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute)


def _fp32_node_set(g: GraphIndex, outputs: list[str], cfg: Fp16Config) -> tuple[set[int], int]:
    islands = _layernorm_islands(g)
    keep: set[int] = set().union(*islands) if islands else set()
    keep_ops = set(cfg.keep_fp32_ops) | ({"Attention"} if "Softmax" in cfg.keep_fp32_ops else set())
    for index, node in enumerate(g.nodes):
        if node.op_type in keep_ops or _has_subgraph(node):
            keep.add(index)
    if cfg.keep_logits_fp32:
        keep |= logits_head(g, outputs)
    return keep, len(islands)


def _half_tensor(tensor: TensorProto, name: str, to: int = HALF) -> tuple[TensorProto, int]:
    """`tensor` in the 16-bit type `to`, in chunks; FP16 values past its range are clipped (and counted)."""
    import ml_dtypes  # onnx's own dependency: numpy has no bfloat16

    array = numpy_helper.to_array(tensor)
    flat = array.reshape(-1)
    half = np.empty(flat.shape, np.float16 if to == HALF else ml_dtypes.bfloat16)
    clipped = 0
    for start in range(0, flat.size, CHUNK):
        part = flat[start:start + CHUNK]
        if to == HALF:
            clipped += int(np.count_nonzero(np.abs(part) > FP16_MAX))
            part = np.clip(part, -FP16_MAX, FP16_MAX)
        half[start:start + CHUNK] = part
    return numpy_helper.from_array(half.reshape(array.shape), name), clipped


def convert_to_bf16(in_path: Path | str, out_path: Path | str, cfg: Fp16Config | None = None,
                    external_data: bool | None = None) -> Fp16Report:
    """Write `out_path`: `in_path` in BF16, with the same FP32 islands as the FP16 file."""
    return convert_to_fp16(in_path, out_path, cfg, external_data, to=BF16)


def convert_to_fp16(in_path: Path | str, out_path: Path | str, cfg: Fp16Config | None = None,
                    external_data: bool | None = None, to: int = HALF) -> Fp16Report:
    """Write `out_path`: `in_path` in FP16 except LayerNorms, `cfg.keep_fp32_ops` and the QA head.

    `external_data`: how `out_path` keeps its weights; None follows `in_path`
    (`onnx_files.external_like`). `to`: the 16-bit type (FLOAT16, or BFLOAT16 for `convert_to_bf16`).
    """
    cfg = cfg or Fp16Config()
    half_type, tag = to, ("fp16" if to == HALF else "bf16")  # `cast` below takes its own `to`
    start = time.perf_counter()
    external = onnx_files.external_like(in_path, external_data)
    model = onnx_files.load(Path(in_path))
    # Types and shapes only: the skeleton's inference copies no weight.
    inferred = onnx_skeleton.inferred_skeleton(model, strict_mode=True)
    g = GraphIndex(inferred, weights=model)
    graph = model.graph
    outputs = [value.name for value in graph.output]
    keep, n_islands = _fp32_node_set(g, outputs, cfg)

    # Tensors produced in FP16 after conversion: float outputs of FP16-region nodes.
    half_tensors = {name for index, node in enumerate(g.nodes) if index not in keep
                    for name in node.output if g.is_float(name)}

    new_inits: list[TensorProto] = []
    half_init_names: dict[str, str] = {}
    clipped_total = 0
    # An initializer read only by FP16 nodes is converted in place; a shared one gets a copy.
    readers = defaultdict(set)
    for index, node in enumerate(g.nodes):
        for name in node.input:
            if name in g.initializers and g.is_float(name):
                readers[name].add(index not in keep)

    def half_initializer(name: str) -> str:
        nonlocal clipped_total
        if name not in half_init_names:
            target = name if readers[name] == {True} else f"{name}__fp16"
            converted, clipped = _half_tensor(g.initializers[name], target, to)
            clipped_total += clipped
            new_inits.append(converted)
            half_init_names[name] = target
        return half_init_names[name]

    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp32" if to == FLOAT else tag
            out = f"{name}__{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{name}__cast_{suffix}"))
            casts[key] = out
        return casts[key]

    for index, node in enumerate(g.nodes):
        node = graph.node[index]
        if index in keep:
            # FP32 island: FP16 tensors coming in are cast up.
            node.input[:] = [cast(name, FLOAT) if name in half_tensors else name for name in node.input]
        else:
            inputs = []
            for name in node.input:
                if not name or not g.is_float(name) or name in half_tensors:
                    inputs.append(name)
                elif name in g.initializers:
                    inputs.append(half_initializer(name))
                else:  # graph input or FP32-island output
                    inputs.append(cast(name, half_type))
            node.input[:] = inputs
            _retype_attributes(node, half_type)
        new_nodes.append(node)

    # Graph outputs keep their names and float32 type: the FP16 producer writes a renamed tensor.
    renamed = {value.name: f"{value.name}__{tag}" for value in graph.output if value.name in half_tensors}
    if renamed:
        for node in new_nodes:
            node.output[:] = [renamed.get(name, name) for name in node.output]
            node.input[:] = [renamed.get(name, name) for name in node.input]
        for original, half in renamed.items():
            new_nodes.append(helper.make_node("Cast", [half], [original], to=FLOAT, name=f"{original}__cast_fp32"))

    # Kept initializers stay where they are (re-adding them would copy each through protobuf's
    # serializer, impossible for one tensor past 2 GB); the converted ones go, the FP16 ones come last.
    for index in reversed(range(len(graph.initializer))):
        if half_init_names.get(graph.initializer[index].name) == graph.initializer[index].name:
            del graph.initializer[index]
    for converted in new_inits:
        graph.initializer.add().CopyFrom(converted)
    del new_inits
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    model = onnx_skeleton.infer_shapes(model, strict_mode=True)
    onnx_skeleton.check_model(model, full_check=True)
    out_path = Path(out_path)
    onnx_files.save(model, out_path, external)
    n_casts = len(casts) + len(renamed)
    report = Fp16Report(
        path=str(out_path), seconds=round(time.perf_counter() - start, 3), nodes=len(graph.node),
        fp32_nodes=sorted(_node_name(g.nodes[i], i) for i in keep), layernorm_islands=n_islands,
        casts_inserted=n_casts, initializers_converted=len(half_init_names), values_clipped=clipped_total,
        fp32_attention=sum(1 for i in keep if g.nodes[i].op_type == "Attention"),
    )
    if clipped_total:
        log.info("fp16: %d initializer values clipped to +-%g", clipped_total, FP16_MAX)
    return report


def _retype_attributes(node: onnx.NodeProto, to: int = HALF) -> None:
    """Float-typed attributes of a 16-bit-region node: Cast targets and constant values."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = to
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and attr.t.data_type == FLOAT:
            converted, _ = _half_tensor(attr.t, attr.t.name, to)
            attr.t.CopyFrom(converted)

