"""The names every layer shares: which precisions a run builds, what an engine computes in, its name, the steps.

A leaf: it imports nothing of bertbuild, so the config, the writers of ONNX
files, the backends and the reports can all speak of `Precision.INT8` or
`onnxruntime-int8` without importing one another.
"""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """The engines a run can build, in build order. Values are what configs, file names and reports use."""

    FP32 = "fp32"  # the plain tf2onnx export
    FUSED_FP32 = "fused-fp32"  # after graph surgery (Attention / LayerNormalization / Gelu)
    FP16 = "fp16"  # written from the fused graph, FP32 islands
    BF16 = "bf16"  # the same islands in bfloat16: CPUs with AVX512_BF16 / AMX (OpenVINO), Ampere+ (TensorRT)
    INT8 = "int8"  # written from the fused graph, explicit Q/DQ


# What a runtime that computes each file as written (ONNX Runtime, strongly typed TensorRT) computes in.
_AS_WRITTEN = {"fp32": "fp32", "fused-fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "int8+fp32"}


def as_written(precision: str) -> str:
    """The compute precision of an engine that runs its file as written: INT8 GEMMs with FP32 float parts for INT8."""
    return _AS_WRITTEN[str(precision)]


def engine_name(backend: str, precision: str) -> str:
    """An engine's name in rows, gates and reports (`onnxruntime-int8`): made here only, so names always match."""
    return f"{backend}-{precision}"


# The cached steps, each one kind of work (`bertbuild.steps.cached_step`): what `--refresh STEP` names,
# and the folder of the step cache its entries live in.
STEPS = ("export", "reference", "features", "fuse", "fp16", "bf16", "int8_source", "calibration", "int8", "engine",
         "evaluation", "validation", "benchmark", "sensitivity", "tune", "tune_logits", "tune_agreement",
         "tune_benchmark", "trt_check")
