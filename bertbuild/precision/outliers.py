"""Outlier-channel decomposition: a MatMul's few outlier input channels get their own MatMul and scale.

The FFN-out MatMul reads the GELU output, and in this model one or two of
its 1536 channels peak at 15-24 while the 99.99th percentile of the whole
tensor is about 4; their weight rows are outliers too (|w| up to 7.9, median
row peak 0.15). One u8 scale for the tensor then leaves the ordinary
channels a handful of levels, and clipping the outliers destroys the largest
contributions; smoothing cannot help, because it moves range into weight
rows that are already the largest (measured: it makes things worse).

So, in FP32-equivalent form, for the k channels with the highest calibration
peak:

    x @ W  =  x @ W'  +  Gather(x, idx) @ W[idx]      (W' = W with rows idx zeroed)

Both are weight MatMuls, and both are quantized like every other: x @ W'
with x's range calibrated WITHOUT the idx channels (they may saturate, W'
ignores them), and the [tokens, k] x [k, N] side MatMul with its own scale
for the outlier channels (k/K of the MACs: 4/1536 = 0.26 % here). So every
weight MatMul still runs INT8; the outliers simply get a scale of their own.
Which channels is recorded in the model's metadata (`OUTLIER_KEY_PREFIX` +
tensor name), which calibration.py reads to leave them out of x's range. The
graph stays standard ONNX (Gather, MatMul, Add): the TensorRT file gets it too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bertbuild import onnx_files, onnx_skeleton
from bertbuild.precision.calibration_set import CalibrationSet
from bertbuild.config.precision import Int8Config
from bertbuild.precision.graph_edit import add_nodes
from bertbuild.precision.smoothing import groups_with_peaks

OUTLIER_KEY_PREFIX = "bertbuild.outlier_channels:"


@dataclass
class OutlierReport:
    path: str
    channels: dict[str, list[int]] = field(default_factory=dict)  # activation -> the channels split off
    side_macs_share: float = 0.0  # side-MatMul MACs / MACs of the split MatMuls
    seconds: float = 0.0


def outlier_channels(model: onnx.ModelProto) -> dict[str, list[int]]:
    """tensor -> channels left out of its INT8 range, as `split_outliers` recorded them."""
    return {prop.key[len(OUTLIER_KEY_PREFIX):]: json.loads(prop.value) for prop in model.metadata_props
            if prop.key.startswith(OUTLIER_KEY_PREFIX)}


def split_outliers(fp32_onnx: Path | str, out_path: Path | str, samples: CalibrationSet, cfg: Int8Config,
                   threads: int | None = None, external_data: bool | None = None) -> OutlierReport:
    """Write `out_path`: `fp32_onnx` with the top `cfg.outlier_channels` input channels of each
    MatMul after `cfg.outlier_after` ops moved to a side MatMul of their own.

    `external_data`: how `out_path` keeps its weights; None follows `fp32_onnx` (`onnx_files.external_like`).
    """
    if cfg.outlier_channels < 1:
        raise ValueError("outlier decomposition is off (Int8Config.outlier_channels is 0)")
    start = time.perf_counter()
    external = onnx_files.external_like(fp32_onnx, external_data)
    model, groups, peaks = groups_with_peaks(fp32_onnx, tuple(cfg.outlier_after), samples, cfg.batch_size, threads)
    inits = {init.name: init for init in model.graph.initializer}
    report = OutlierReport(path=str(out_path))
    new_nodes, side_macs, total_macs = [], 0, 0
    for activation, readers in groups.items():
        k = min(cfg.outlier_channels, peaks[activation].size - 1)
        chosen = sorted(int(i) for i in np.argsort(peaks[activation])[::-1][:k])
        index = numpy_helper.from_array(np.asarray(chosen, np.int64), f"{activation}/outlier_index")
        gathered = f"{activation}/outlier_channels"
        model.graph.initializer.append(index)
        new_nodes.append(helper.make_node("Gather", [activation, index.name], [gathered], name=gathered, axis=-1))
        for node in readers:
            weight = numpy_helper.to_array(inits[node.input[1]])
            side = numpy_helper.from_array(weight[chosen], f"{node.input[1]}/outlier_rows")
            main = weight.copy()
            main[chosen] = 0.0
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(main, node.input[1]))
            model.graph.initializer.append(side)
            output = node.output[0]
            node.output[0] = f"{output}/int8_part"
            new_nodes += [
                helper.make_node("MatMul", [gathered, side.name], [f"{output}/outlier_part"], name=f"{node.name}/outliers"),
                helper.make_node("Add", [node.output[0], f"{output}/outlier_part"], [output], name=f"{node.name}/join"),
            ]
            side_macs += k * weight.shape[1]
            total_macs += weight.size
        model.metadata_props.append(onnx.StringStringEntryProto(key=OUTLIER_KEY_PREFIX + activation,
                                                                value=json.dumps(chosen)))
        report.channels[activation] = chosen
    add_nodes(model, new_nodes)
    onnx_skeleton.check_model(model)
    onnx_files.save(model, out_path, external)
    report.side_macs_share = side_macs / max(total_macs, 1)
    report.seconds = round(time.perf_counter() - start, 2)
    return report
