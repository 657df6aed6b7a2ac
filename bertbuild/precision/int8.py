"""FP32 ONNX + a Calibration -> INT8 ONNX with explicit QuantizeLinear/DequantizeLinear.

What is quantized: the MatMuls that read a constant weight (Q, K, V, attention
output, FFN in and out), optionally the embedding Gathers. Their activation
input gets a QuantizeLinear/DequantizeLinear pair with the calibrated scale;
their weight is stored as INT8 per output channel (axis 1 of a [K, N] MatMul
weight), symmetric, behind a DequantizeLinear. MatMul outputs, biases,
LayerNorm, GELU, Softmax/Attention and the QA head stay in float: a TensorRT
strongly typed build then runs exactly the INT8 GEMMs the graph spells out.

Two variants from one calibration:

- `s8s8`: signed INT8 activations with zero point 0 and range [-amax, amax].
  TensorRT only accepts symmetric signed INT8, so this is the file for it.
- `u8s8`: unsigned activations with range [max(min, -amax), min(max, amax)].
  ONNX Runtime's x86 kernels (VNNI u8 x s8 dot products) are fastest with it.

The quantizer is `onnxruntime.quantization.quantize_static` in QDQ format.
Our own calibration (calibration.py) is handed to it through its public
`calibration_cache_path` (a TensorsData JSON), so ORT never runs its own
calibrator: the ranges in the graph are exactly the ones we computed, cached
and tested. Quantize our graph (exported or fused), never ORT's optimized
output: ORT's fused Gemm/FusedMatMul nodes fail bias quantization.

An input with external data (past protobuf's 2 GB limit, or external by
choice) is quantized with ORT's `use_external_data_format`, which ORT needs to
write it at all; the file is then re-written through `bertbuild.onnx_files`,
inline if the INT8 weights brought it under the limit.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto

from bertbuild import onnx_files
from bertbuild.precision.ranges import Calibration
from bertbuild.config.precision import Int8Config

log = logging.getLogger(__name__)

VARIANTS = ("s8s8", "u8s8")


@dataclass
class Int8Files:
    """What one quantization wrote (`quantize_int8`, `recipe.write_int8_files`): a file per variant, which nodes
    are INT8, and from what."""

    paths: dict[str, str]  # "s8s8", "u8s8", "ort" -> path
    source: str  # the (prepared) FP32 file that was calibrated and quantized
    quantized_nodes: list[str]
    excluded_nodes: list[str]
    calibration: dict
    techniques: dict  # what was applied, with each step's report (recipe.py)
    seconds: float
    qdq_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # variant -> op -> count

    def to_json(self) -> dict:
        return asdict(self)


def _drop_preprocessing_hint(record: logging.LogRecord) -> bool:
    """quantize_static logs a 'consider pre-processing' warning per call through the root logger (our files
    are shape-inferred already). Filtering that one message on the root logger is thread-safe, unlike
    raising the root logger's level around the call while other tasks' threads log."""
    return not str(record.msg).startswith(("Please consider pre-processing", "Please consider to run pre-processing"))


def _tensors_data(calibration: Calibration, variant: str, names: Iterable[str]):
    from onnxruntime.quantization import CalibrationMethod, TensorData, TensorsData

    bounds = {name: calibration.ranges[name].bounds(variant) for name in names}
    data = {name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in bounds.items()}
    # The method tag only has to match what quantize_static is told below.
    return TensorsData(CalibrationMethod.MinMax, data)


def quantize_variant(fp32_onnx: Path | str, out_path: Path | str, calibration: Calibration, cfg: Int8Config,
                     variant: str, nodes_to_exclude: Iterable[str] = (),
                     external_data: bool | None = None) -> list[str]:
    """Write one INT8 variant; return the names of the nodes that were quantized.

    `external_data`: how `out_path` keeps its weights; None follows `fp32_onnx` (`onnx_files.external_like`).
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_static,
                                          save_tensors_data)

    if variant not in VARIANTS:
        raise ValueError(f"unknown INT8 variant {variant!r}, expected one of {VARIANTS}")
    _check_prepared(fp32_onnx, cfg)
    excluded = set(nodes_to_exclude)
    targets = [t for t in calibration.targets if t["node"] not in excluded]
    if not targets:
        raise ValueError("nothing left to quantize: every target node is excluded")
    names = {t["activation"] for t in targets}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    external = onnx_files.external_like(fp32_onnx, external_data)
    # ORT keeps a model in one protobuf message unless told otherwise: past 2 GB that cannot be written.
    big = onnx_files.is_external(fp32_onnx)
    onnx_files.data_path(out_path).unlink(missing_ok=True)  # ORT appends to a data file that is already there
    extra_options = {
        "MatMulConstBOnly": True,
        # Only MatMul inputs: the output stays float for the bias Add, LayerNorm and GELU.
        "OpTypesToExcludeOutputQuantization": ["MatMul"],
        "ActivationSymmetric": variant == "s8s8",
        "WeightSymmetric": True,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    }
    with (tempfile.TemporaryDirectory(prefix="bertbuild-int8-") as scratch,
          onnx_files.unlinked(onnx_files.companions(fp32_onnx)) as source):  # ORT reads data with onnx's reader
        ranges_file = Path(scratch) / "ranges.json"
        save_tensors_data(_tensors_data(calibration, variant, names), ranges_file)
        logging.getLogger().addFilter(_drop_preprocessing_hint)  # added once: addFilter skips a present filter
        quantize_static(
            str(source), str(out_path), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=sorted({t["op_type"] for t in targets}),
            nodes_to_quantize=[t["node"] for t in targets],
            per_channel=cfg.per_channel, reduce_range=False,
            activation_type=QuantType.QInt8 if variant == "s8s8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(ranges_file), extra_options=extra_options,
            use_external_data_format=big,
        )
    quantized = [t["node"] for t in targets]
    model = onnx_files.load(out_path)
    rewired = _float_path_for_other_consumers(model, set(quantized))
    if rewired or big or external is not None:  # also: ORT's external layout -> ours (or inline, if it now fits)
        onnx_files.save(model, out_path, external)
    del model
    onnx_files.check(out_path)
    return quantized


def _check_prepared(fp32_onnx: Path | str, cfg: Int8Config) -> None:
    """Refuse to quantize a file the configured rewrites were not applied to.

    Smoothing and the outlier split rewrite the FP32 graph before calibration
    (recipe.prepare_source); quantizing the plain fused file with such a
    config would silently write a file the config does not describe.
    """
    from bertbuild.precision.outliers import outlier_channels
    from bertbuild.precision.smoothing import SMOOTH_SUFFIX

    model = onnx_files.load(fp32_onnx, load_external_data=False)
    missing = []
    if cfg.smoothing_alpha is not None and not any(n.output[0].endswith(SMOOTH_SUFFIX) for n in model.graph.node):
        missing.append(f"smoothing (alpha {cfg.smoothing_alpha})")
    if cfg.outlier_channels and not outlier_channels(model):
        missing.append(f"the outlier split ({cfg.outlier_channels} channels)")
    if missing:
        raise ValueError(f"{fp32_onnx} has not had {' and '.join(missing)} applied: prepare it with "
                         "bertbuild.precision.recipe.prepare_source and calibrate that file first")


def _float_path_for_other_consumers(model: onnx.ModelProto, quantized: set[str]) -> int:
    """Let only the quantized nodes read an activation through its Q/DQ pair.

    quantize_static rewires EVERY consumer of a quantized activation to the
    DequantizeLinear output, so the residual Add after a LayerNorm (and a Shape
    node) would read the fake-quantized tensor: the residual stream would lose
    precision, on ONNX Runtime and in TensorRT alike, for no speed. Give those
    consumers the original float tensor back. Returns the number of inputs rewired.
    """
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    producer = {name: node for node in graph.node for name in node.output}
    float_of = {}  # DQ output -> the float tensor its Q node read
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] in initializers:
            continue
        q = producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            float_of[node.output[0]] = q.input[0]
    rewired = 0
    for node in graph.node:
        if node.name in quantized or node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for position, name in enumerate(node.input):
            if name in float_of:
                node.input[position] = float_of[name]
                rewired += 1
    # A graph output that was replaced by a DQ output is left as quantize_static made it.
    return rewired


def qdq_summary(path: Path | str) -> dict[str, int]:
    """Counts of QuantizeLinear / DequantizeLinear nodes and of each INT8 element type used."""
    model = onnx_files.load(path, load_external_data=False)  # types and nodes only
    ops = Counter(node.op_type for node in model.graph.node)
    types = Counter(init.data_type for init in model.graph.initializer)
    return {"QuantizeLinear": ops["QuantizeLinear"], "DequantizeLinear": ops["DequantizeLinear"],
            "int8_tensors": types[TensorProto.INT8], "uint8_tensors": types[TensorProto.UINT8]}


def zero_points(path: Path | str, activations_only: bool = False) -> dict[str, np.ndarray]:
    """Zero-point initializers of every Q/DQ node (by the node's name)."""
    model = onnx_files.load(path, load_external_data=False)  # only the zero points are read
    inits = {init.name: init for init in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        if activations_only and node.input[0] in inits:  # DQ of a stored weight
            continue
        if node.input[2] in inits:
            found[node.name] = onnx_files.array(inits[node.input[2]], path)
    return found


def quantize_int8(fp32_onnx: Path | str, out_dir: Path | str, calibration: Calibration, cfg: Int8Config,
                  nodes_to_exclude: Iterable[str] = (), external_data: bool | None = None) -> Int8Files:
    """Write `model.int8-s8s8.onnx` (TensorRT) and `model.int8-u8s8.onnx` (ONNX Runtime) into `out_dir`."""
    start = time.perf_counter()
    excluded = sorted(set(nodes_to_exclude))
    paths, counts, quantized = {}, {}, []
    for variant in VARIANTS:
        path = Path(out_dir) / f"model.int8-{variant}.onnx"
        quantized = quantize_variant(fp32_onnx, path, calibration, cfg, variant, excluded, external_data)
        paths[variant] = str(path)
        counts[variant] = qdq_summary(path)
    return Int8Files(paths=paths, source=str(fp32_onnx), quantized_nodes=quantized, excluded_nodes=excluded,
                     calibration=calibration.summary(), techniques={}, seconds=round(time.perf_counter() - start, 2),
                     qdq_counts=counts)
