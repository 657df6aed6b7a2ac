"""Writing FP16 and INT8 into the ONNX file (the file carries the precision), and the one list of precisions."""

from enum import StrEnum


class Precision(StrEnum):
    """The engines a run can build, in build order. Values are what configs, file names and reports use."""

    FP32 = "fp32"  # the plain tf2onnx export
    FUSED_FP32 = "fused-fp32"  # after graph surgery (Attention / LayerNormalization / Gelu)
    FP16 = "fp16"  # written from the fused graph, FP32 islands
    BF16 = "bf16"  # the same islands in bfloat16: CPUs with AVX512_BF16 / AMX (OpenVINO), Ampere+ (TensorRT)
    INT8 = "int8"  # written from the fused graph, explicit Q/DQ
