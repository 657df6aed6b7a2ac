"""An ONNX Runtime session of an FP32 model that also returns chosen inner tensors (the activations).

Calibration, smoothing, range choice, bias correction and the sensitivity
ranking all observe the same few activations this way: only the tensors
asked for are added as outputs, so memory is one batch of them.

A model past protobuf's 2 GB limit (external data) is never read into Python
whole: the session gets its structure as bytes and reads the weights itself
from the model's folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertbuild import onnx_files, onnx_skeleton


def activation_session(model_path: Path | str, tensors: list[str], threads: int | None = None):
    """An ONNX Runtime session of the FP32 model that can also return the named inner tensors."""
    import onnxruntime as ort

    model_path = Path(model_path)
    # External weights stay on disk: ORT reads them from the model's folder.
    model = onnx_files.load(model_path, load_external_data=False)
    inferred = onnx_skeleton.inferred_skeleton(model)
    known = {value.name: value for value in list(inferred.graph.value_info) + list(inferred.graph.output)}
    present = {value.name for value in model.graph.output}
    for name in tensors:
        if name in present:
            continue
        if name not in known:
            raise ValueError(f"calibration: no type information for tensor {name!r}")
        model.graph.output.append(known[name])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                     str(model_path.parent.resolve()))
    return ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
