"""SmoothQuant-style smoothing: move activation outliers into the weights before INT8.

BERT's LayerNorm outputs carry a few outlier channels (here channels 63 and 99
reach 20-30 while the median channel stays under 2). One per-tensor INT8 scale
for such a tensor either clips the outliers or leaves the other channels a
handful of levels; the QKV and FFN-in MatMuls that read it are where INT8 loses
most accuracy. Smoothing divides each input channel c by

    s_c = max|x_c|^alpha / max|W_c|^(1 - alpha)

and multiplies row c of every weight that reads x by s_c, so x @ W is
unchanged in exact arithmetic while x / s has a flatter channel profile and
the weights absorb part of the range. `alpha` is the share of the
activation's channel range moved into the weights (1: the activation's
channels all end up with peak max|W_c|... flat; 0: only the weights are
equalized). `alpha` is searched on the tune split (`evaluation/tune_split.py`).

Where the division goes. In a post-LN BERT the LayerNorm output is read both
by the MatMuls and by the next residual Add, so folding 1/s into the
LayerNorm's gamma and beta would change the residual stream too. The
division is therefore its own `Mul` node on the MatMul branch only (the
residual keeps the original tensor); TensorRT fuses it into the following
QuantizeLinear, and the ONNX-Runtime-only file folds it into a per-channel
QuantizeLinear scale (see ort_int8.py). The smoothed file is an FP32 file,
equivalent to its input, from which calibration and quantization then run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bertbuild import onnx_files, onnx_skeleton
from bertbuild.precision.activations import activation_session
from bertbuild.precision.calibration_set import CalibrationSet
from bertbuild.config.precision import Int8Config
from bertbuild.precision.graph_edit import add_nodes
from bertbuild.precision.targets import head_nodes

SMOOTH_SUFFIX = "/smoothed"
MIN_SCALE = 1e-5


@dataclass
class SmoothingReport:
    path: str
    alpha: float
    tensors: list[str] = field(default_factory=list)  # the activations that were divided
    max_scale: float = 0.0
    min_scale: float = 0.0
    seconds: float = 0.0


def smoothing_groups(model: onnx.ModelProto, producer_ops: tuple[str, ...]) -> dict[str, list[onnx.NodeProto]]:
    """activation -> the weight MatMuls reading it, for activations made by `producer_ops` (QA head excluded)."""
    constants = {init.name for init in model.graph.initializer}
    producer = {name: node for node in model.graph.node for name in node.output}
    head = head_nodes(model)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.name in head or node.input[1] not in constants:
            continue
        source = producer.get(node.input[0])
        if source is not None and source.op_type in producer_ops:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def channel_absmax(model_path: Path | str, tensors: list[str], samples: CalibrationSet, batch_size: int,
                   threads: int | None = None) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor over the samples' real (unmasked) tokens."""
    session = activation_session(model_path, tensors, threads)
    peaks: dict[str, np.ndarray] = {}
    for feed in samples.batches(batch_size):
        real = feed["input_mask"].astype(bool)
        for name, value in zip(tensors, session.run(tensors, feed)):
            peak = np.abs(value[real]).max(axis=0)
            peaks[name] = peak if name not in peaks else np.maximum(peaks[name], peak)
    return peaks


def groups_with_peaks(fp32_onnx: Path | str, producer_ops: tuple[str, ...], samples: CalibrationSet,
                      batch_size: int, threads: int | None = None):
    """(model, activation -> its weight MatMuls, activation -> channel peaks) for activations of `producer_ops`."""
    model = onnx_files.load(fp32_onnx)
    groups = smoothing_groups(model, producer_ops)
    return model, groups, channel_absmax(fp32_onnx, list(groups), samples, batch_size, threads)


def smoothing_scales(activation_peak: np.ndarray, weight_peak: np.ndarray, alpha: float) -> np.ndarray:
    """s_c = a_c^alpha / w_c^(1 - alpha), kept >= MIN_SCALE; channels that never fire keep s = 1."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a = np.maximum(activation_peak.astype(np.float64), 1e-12)
    w = np.maximum(weight_peak.astype(np.float64), 1e-12)
    scales = np.power(a, alpha) / np.power(w, 1.0 - alpha)
    scales = np.where(activation_peak > 0, scales, 1.0)
    return np.maximum(scales, MIN_SCALE).astype(np.float32)


def smooth(fp32_onnx: Path | str, out_path: Path | str, samples: CalibrationSet, cfg: Int8Config,
           threads: int | None = None, external_data: bool | None = None) -> SmoothingReport:
    """Write `out_path`: `fp32_onnx` with the activations of `cfg.smoothing_after` ops smoothed.

    `external_data`: how `out_path` keeps its weights; None follows `fp32_onnx` (`onnx_files.external_like`).
    """
    if cfg.smoothing_alpha is None:
        raise ValueError("smoothing is off (Int8Config.smoothing_alpha is None)")
    start = time.perf_counter()
    external = onnx_files.external_like(fp32_onnx, external_data)
    model, groups, peaks = groups_with_peaks(fp32_onnx, tuple(cfg.smoothing_after), samples, cfg.batch_size, threads)
    weights = {init.name: init for init in model.graph.initializer}
    report = SmoothingReport(path=str(out_path), alpha=cfg.smoothing_alpha)
    divisions = []
    all_scales = []
    for activation, readers in groups.items():
        arrays = {node.input[1]: numpy_helper.to_array(weights[node.input[1]]) for node in readers}
        weight_peak = np.max([np.abs(w).max(axis=1) for w in arrays.values()], axis=0)
        scales = smoothing_scales(peaks[activation], weight_peak, cfg.smoothing_alpha)
        for name, array in arrays.items():
            weights[name].CopyFrom(numpy_helper.from_array((array * scales[:, None]).astype(array.dtype), name))
        smoothed = activation + SMOOTH_SUFFIX
        inverse = numpy_helper.from_array((1.0 / scales).astype(np.float32), f"{smoothed}/inverse_scale")
        model.graph.initializer.append(inverse)
        divisions.append(helper.make_node("Mul", [activation, inverse.name], [smoothed], name=smoothed))
        for node in readers:
            node.input[0] = smoothed
        report.tensors.append(activation)
        all_scales.append(scales)
    add_nodes(model, divisions)
    onnx_skeleton.check_model(model)
    onnx_files.save(model, out_path, external)
    if all_scales:
        joined = np.concatenate(all_scales)
        report.max_scale, report.min_scale = float(joined.max()), float(joined.min())
    report.seconds = round(time.perf_counter() - start, 2)
    return report
