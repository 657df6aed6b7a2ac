"""Which INT8 nodes hurt most: the order in which the accuracy fallback returns nodes to FP32.

For every quantization target (a MatMul with a constant weight) we take its
real FP32 input from a few calibration batches, fake-quantize input and weight
exactly as the chosen variant will (the calibrated activation range, per-channel
symmetric INT8 weights), and measure the noise-to-signal ratio of the MatMul
output:  ||x_q @ w_q - x @ w||^2 / ||x @ w||^2.

Why a local measure rather than "quantize one node, score the whole model":
that costs one quantization and one SQuAD evaluation per node (36 for a 6-layer
model); this costs one FP32 pass over two batches plus numpy. A node whose
calibrated range clips its real activations, or whose weights have outlier
channels, shows up at the top, which is what the fallback needs to know.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertbuild import onnx_files
from bertbuild.precision.activations import activation_session
from bertbuild.precision.calibration_set import CalibrationSet
from bertbuild.precision.ranges import Calibration
from bertbuild.squad.batching import real_positions

INT8_LIMIT = 127  # symmetric INT8 uses [-127, 127], as onnxruntime.quantization does
UINT8_MAX = 255


@dataclass(frozen=True)
class NodeSensitivity:
    node: str
    noise_to_signal: float


def fake_quantize_activation(x: np.ndarray, low: float, high: float, variant: str) -> np.ndarray:
    """Quantize-dequantize `x` as the variant's QuantizeLinear/DequantizeLinear pair would."""
    if variant == "s8s8":
        amax = max(abs(low), abs(high), 1e-12)
        scale = amax / INT8_LIMIT
        return np.clip(np.round(x / scale), -INT8_LIMIT, INT8_LIMIT) * scale
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-12) / UINT8_MAX
    zero_point = np.clip(np.round(-low / scale), 0, UINT8_MAX)
    return (np.clip(np.round(x / scale) + zero_point, 0, UINT8_MAX) - zero_point) * scale


def fake_quantize_weight(w: np.ndarray) -> np.ndarray:
    """Per-output-channel (axis 1 of a [K, N] MatMul weight) symmetric INT8."""
    scale = np.maximum(np.abs(w).max(axis=0, keepdims=True), 1e-12) / INT8_LIMIT
    return np.clip(np.round(w / scale), -INT8_LIMIT, INT8_LIMIT) * scale


def rank_sensitivity(fp32_onnx: Path | str, calibration: Calibration, samples: CalibrationSet, variant: str,
                     batches: int = 2, batch_size: int = 8, threads: int | None = None) -> list[NodeSensitivity]:
    """Every MatMul target of the calibration, most sensitive first."""
    # Structure only: each weight is read when its MatMul is reached (external data stays on disk till then).
    model = onnx_files.load(fp32_onnx, load_external_data=False)
    weights = {init.name: init for init in model.graph.initializer}
    weight_of = {node.name: node.input[1] for node in model.graph.node if node.op_type == "MatMul"}
    targets = [t for t in calibration.targets if t["op_type"] == "MatMul"]
    tensors = list(dict.fromkeys(t["activation"] for t in targets))
    session = activation_session(fp32_onnx, tensors, threads)
    noise = {t["node"]: 0.0 for t in targets}
    signal = {t["node"]: 0.0 for t in targets}
    weight_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for feed in samples.batches(batch_size, limit=batches):
        # real tokens only: what the model computes at padding positions reaches no answer
        activations = {name: real_positions(value, feed["input_mask"])
                       for name, value in zip(tensors, session.run(tensors, feed))}
        quantized = {}
        for target in targets:
            name, node = target["activation"], target["node"]
            if name not in quantized:
                bounds = calibration.ranges[name].bounds(variant)
                quantized[name] = fake_quantize_activation(activations[name], *bounds, variant)
            weight_name = weight_of[node]
            if weight_name not in weight_cache:
                w = onnx_files.array(weights[weight_name], fp32_onnx).astype(np.float32)
                weight_cache[weight_name] = (w, fake_quantize_weight(w))
            w, w_q = weight_cache[weight_name]
            exact = activations[name] @ w
            noise[node] += float(np.sum((quantized[name] @ w_q - exact) ** 2, dtype=np.float64))
            signal[node] += float(np.sum(exact ** 2, dtype=np.float64))
    ranked = [NodeSensitivity(node, noise[node] / max(signal[node], 1e-30)) for node in noise]
    return sorted(ranked, key=lambda s: (-s.noise_to_signal, s.node))
