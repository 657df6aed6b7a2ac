"""Static TensorRT readiness: would TensorRT's ONNX parser take this file? Answered without TensorRT or a GPU.

Rules (one module each): op type and opset against the ONNX-TensorRT operator
matrix of the chosen version (package data, with its source), element types
per op, Q/DQ (INT8, zero point 0, per-channel only on weights), no
com.microsoft ops, the Attention forms the importer builds, and dynamic axes
that the configured optimization profiles can bind. What it cannot see:
tactic availability, memory, numerical accuracy, and anything the parser only
learns from runtime shapes.
"""

from bertbuild.trt_check.check import check_onnx
from bertbuild.trt_check.matrix import DEFAULT_VERSION, VERSIONS, host_version, load_matrix, matrix_version_for
from bertbuild.trt_check.report import Finding, ReadinessReport

__all__ = ["DEFAULT_VERSION", "VERSIONS", "Finding", "ReadinessReport", "check_onnx", "host_version", "load_matrix",
           "matrix_version_for"]
