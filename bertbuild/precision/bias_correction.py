"""Bias correction: cancel the average output shift INT8 gives each quantized MatMul.

Clipping an activation's tail, or rounding a weight column, moves the MatMul
output by an amount that does not average out over tokens: clipping a
always-positive outlier channel lowers the same outputs every time. For each
quantized MatMul followed by a bias `Add`, the mean of

    x_q @ w_q - x @ w      (x the real FP32 input over real tokens; x_q, w_q
                            fake-quantized as the variant's file runs them)

over the calibration samples is subtracted from the bias. The result is an
FP32 file (the function is unchanged but for that shift) from which the INT8
files are then written with the same calibration; the correction belongs to
one activation variant (u8 and s8 clip differently).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from bertbuild import onnx_files
from bertbuild.precision.activations import activation_session
from bertbuild.precision.calibration_set import CalibrationSet
from bertbuild.precision.ranges import Calibration
from bertbuild.precision.sensitivity import fake_quantize_activation, fake_quantize_weight


@dataclass
class BiasCorrectionReport:
    path: str
    variant: str
    corrected: dict[str, float] = field(default_factory=dict)  # bias initializer -> largest |shift| removed
    seconds: float = 0.0


def bias_of(model: onnx.ModelProto, matmul: onnx.NodeProto) -> str | None:
    """The 1-D constant added to `matmul`'s output by its sole consumer, an Add; else None."""
    inits = {init.name: init for init in model.graph.initializer}
    readers = [node for node in model.graph.node if matmul.output[0] in node.input]
    if len(readers) != 1 or readers[0].op_type != "Add":
        return None
    other = next((name for name in readers[0].input if name != matmul.output[0]), None)
    if other in inits and len(inits[other].dims) == 1:
        return other
    return None


def correct_biases(fp32_onnx: Path | str, out_path: Path | str, calibration: Calibration, samples: CalibrationSet,
                   variant: str, batches: int, batch_size: int, threads: int | None = None,
                   external_data: bool | None = None) -> BiasCorrectionReport:
    """Write `out_path`: `fp32_onnx` with each quantized MatMul's bias shifted by minus its mean INT8 error.

    `external_data`: how `out_path` keeps its weights; None follows `fp32_onnx` (`onnx_files.external_like`).
    """
    start = time.perf_counter()
    external = onnx_files.external_like(fp32_onnx, external_data)
    model = onnx_files.load(fp32_onnx)
    nodes = {node.name: node for node in model.graph.node}
    inits = {init.name: init for init in model.graph.initializer}
    plan = []  # (activation, weight name, bias name)
    for target in calibration.targets:
        node = nodes.get(target["node"])
        bias = bias_of(model, node) if node is not None and node.op_type == "MatMul" else None
        if bias is not None:
            plan.append((target["activation"], node.input[1], bias))
    weights = {w: numpy_helper.to_array(inits[w]).astype(np.float32) for _, w, _ in plan}
    quantized_weights = {w: fake_quantize_weight(value) for w, value in weights.items()}
    tensors = list(dict.fromkeys(activation for activation, _, _ in plan))
    shift = {b: np.zeros(weights[w].shape[1], np.float64) for _, w, b in plan}
    tokens = 0
    session = activation_session(fp32_onnx, tensors, threads)
    for feed in samples.batches(batch_size, limit=batches):
        real = feed["input_mask"].astype(bool)
        tokens += int(real.sum())
        activations = dict(zip(tensors, session.run(tensors, feed)))
        for activation, w, b in plan:
            x = activations[activation][real]
            x_q = fake_quantize_activation(x, *calibration.ranges[activation].bounds(variant), variant)
            shift[b] += (x_q @ quantized_weights[w] - x @ weights[w]).sum(axis=0, dtype=np.float64)
    report = BiasCorrectionReport(path=str(out_path), variant=variant)
    for b, total in shift.items():
        mean = (total / max(tokens, 1)).astype(np.float32)
        value = numpy_helper.to_array(inits[b]).astype(np.float32)
        inits[b].CopyFrom(numpy_helper.from_array(value - mean, b))
        report.corrected[b] = float(np.abs(mean).max())
    onnx_files.save(model, out_path, external)
    report.seconds = round(time.perf_counter() - start, 2)
    return report
