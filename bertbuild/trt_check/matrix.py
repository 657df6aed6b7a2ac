"""The ONNX-TensorRT parser's operator matrix for one TensorRT version, read from package data.

`bertbuild/data/tensorrt/operators-<version>.json` holds the facts transcribed
from onnx/onnx-tensorrt (`docs/operators.md` and the Attention importer) with
the repository, path and commit they came from, and how a version without its
own stored document was derived. Nothing here is guessed at run time.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from dataclasses import dataclass, field
from functools import lru_cache

from onnx import TensorProto

from bertbuild.data import bundled_file
from bertbuild.errors import UserInputError

VERSIONS = ("10.14", "11")
DEFAULT_VERSION = "11"

# The matrix's type names -> ONNX element types.
TYPE_NAMES = {
    "DOUBLE": TensorProto.DOUBLE, "FP32": TensorProto.FLOAT, "FP16": TensorProto.FLOAT16,
    "BF16": TensorProto.BFLOAT16, "FP8": TensorProto.FLOAT8E4M3FN, "FP4": TensorProto.FLOAT4E2M1,
    "INT32": TensorProto.INT32, "INT64": TensorProto.INT64, "INT8": TensorProto.INT8,
    "INT4": TensorProto.INT4, "UINT8": TensorProto.UINT8, "BOOL": TensorProto.BOOL,
}


def type_name(elem_type: int) -> str:
    """ONNX element type -> the name the matrix uses (or ONNX's own name for types it never lists)."""
    for name, value in TYPE_NAMES.items():
        if value == elem_type:
            return name
    return TensorProto.DataType.Name(elem_type)


@dataclass(frozen=True)
class OperatorSupport:
    supported: bool
    types: frozenset[int] = frozenset()
    note: str = ""


@dataclass(frozen=True)
class OperatorMatrix:
    """What one TensorRT version's ONNX parser accepts."""

    tensorrt: str
    source: dict
    derivation: str
    opset_min: int
    opset_max: int
    network_types: frozenset[int]
    operators: dict[str, OperatorSupport]
    attention: dict
    max_outputs: dict[str, int]
    hints: dict[str, str]
    builder: dict = field(default_factory=dict)

    @property
    def citation(self) -> str:
        """One line naming where the facts come from."""
        src = self.source
        return (f"{src['repo']} {src['path']} @ {src['commit'][:12]} (TensorRT {src['documents_tensorrt']} matrix"
                f"{'' if src['documents_tensorrt'] == self.tensorrt else f', used for {self.tensorrt}'})")


def _types(names) -> frozenset[int]:
    return frozenset(TYPE_NAMES[n] for n in names)


@lru_cache(maxsize=None)
def load_matrix(version: str = DEFAULT_VERSION) -> OperatorMatrix:
    if version not in VERSIONS:
        raise UserInputError(f"unknown TensorRT version '{version}' for the readiness check (known: {', '.join(VERSIONS)})")
    raw = json.loads(bundled_file(f"tensorrt/operators-{version}.json").read_text())
    operators = {op: OperatorSupport(entry["supported"], _types(entry.get("types", ())), entry.get("note", ""))
                 for op, entry in raw["operators"].items()}
    return OperatorMatrix(
        tensorrt=raw["tensorrt"], source=raw["source"], derivation=raw["derivation"],
        opset_min=raw["opset"]["min"], opset_max=raw["opset"]["max"], network_types=_types(raw["network_types"]),
        operators=operators, attention=raw["attention"], max_outputs=raw["max_outputs"], hints=raw["hints"],
        builder=raw["builder"],
    )


def matrix_version_for(installed: str) -> str:
    """The matrix to check against for an installed TensorRT version string ("10.14.1.48" -> "10.14").

    Releases before 10.14 have no ONNX Attention importer, so they cannot build our fused files at all.
    """
    match = re.match(r"(\d+)\.(\d+)", installed)
    if not match:
        raise UserInputError(f"cannot read a TensorRT version from '{installed}'")
    major, minor = int(match.group(1)), int(match.group(2))
    if major >= 11:
        return "11"
    if (major, minor) >= (10, 14):
        return "10.14"
    raise UserInputError(f"TensorRT {installed} is older than 10.14, the first release with the ONNX Attention op")


# Distributions that install the `tensorrt` module: the meta package and the per-CUDA wheels.
_TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


def host_version() -> str:
    """The matrix for the TensorRT installed here (read from package metadata, nothing imported), else the default."""
    for name in _TENSORRT_DISTRIBUTIONS:
        try:
            return matrix_version_for(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue
    return DEFAULT_VERSION
