"""`check_onnx`: every readiness rule over one ONNX file, against one TensorRT version's matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bertbuild.trt_check.attention import check_attention
from bertbuild.trt_check.graph import GraphView, load_model
from bertbuild.trt_check.matrix import DEFAULT_VERSION, load_matrix
from bertbuild.trt_check.operators import (
    check_domains_and_operators, check_extra_outputs, check_io_types, check_opset, check_types,
)
from bertbuild.trt_check.quantization import check_qdq
from bertbuild.trt_check.report import ReadinessReport
from bertbuild.trt_check.shapes import check_dynamic_axes

# Each takes (view, matrix) and yields Findings; the dynamic-axes rule also needs the profiles.
NODE_RULES = (check_opset, check_domains_and_operators, check_extra_outputs, check_types, check_io_types,
              check_qdq, check_attention)


def check_onnx(path: Path | str, trt_version: str = DEFAULT_VERSION, profiles: Sequence | None = None) -> ReadinessReport:
    """Statically check that TensorRT `trt_version`'s ONNX parser and builder would take this file.

    `profiles`: the (batch, seq) optimization profiles the engine will be built
    with (`engines.profiles`); the config defaults when None. Raises
    UserInputError (one line) for a missing file or one that is not ONNX.
    """
    matrix = load_matrix(trt_version)
    view = GraphView(load_model(path), path)
    issues = [finding for rule in NODE_RULES for finding in rule(view, matrix)]
    if profiles is None:
        from bertbuild.config import EngineConfig

        profiles = EngineConfig().profiles
    issues += check_dynamic_axes(view, profiles)
    return ReadinessReport(path=str(path), tensorrt=matrix.tensorrt, source=matrix.citation,
                           nodes_checked=sum(1 for _ in view.nodes()), issues=issues)
