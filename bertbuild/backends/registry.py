"""Backends by name. Tasks pass the name (a string), never a backend object.

`auto` is not a backend but a choice made on the host that runs the build:
TensorRT when it imports and a GPU is visible, else ONNX Runtime on the CPU.
`resolve_backend` makes it once and says why, so a flow can log the choice and
pass the concrete name on (engine metadata then names the backend really used).
"""

from __future__ import annotations

import logging

from bertbuild.backends.base import Backend
from bertbuild.errors import UserInputError

log = logging.getLogger(__name__)
AUTO = "auto"
# Backends whose engines TensorRT builds: they get the s8s8 INT8 file and the readiness check first.
TENSORRT_BACKENDS = frozenset({"tensorrt", "onnxruntime-tensorrt"})
# The INT8 file TensorRT builds from: signed Q/DQ with zero point 0. The others (u8s8, ort) are ONNX Runtime's.
TENSORRT_INT8_VARIANT = "s8s8"


def int8_variant(backend: str, configured: str) -> str:
    """The INT8 file a backend builds its engine from.

    TensorRT takes only the signed file (s8s8: INT8 Q/DQ, zero point 0), whatever
    `precision.int8.variant` says; ONNX Runtime runs the configured one (its
    `ort` file uses kernels TensorRT cannot import).
    """
    return TENSORRT_INT8_VARIANT if backend in TENSORRT_BACKENDS else configured


def _backends() -> dict[str, type[Backend]]:
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeCudaBackend, OnnxRuntimeTensorRTBackend
    from bertbuild.backends.tensorrt import TensorRTBackend

    return {"onnxruntime": OnnxRuntimeBackend, "onnxruntime-cuda": OnnxRuntimeCudaBackend,
            "onnxruntime-tensorrt": OnnxRuntimeTensorRTBackend, "tensorrt": TensorRTBackend}


def resolve_backend(name: str) -> tuple[str, str]:
    """(concrete backend name, why it was chosen). Only `auto` involves a choice; other names pass through."""
    if name != AUTO:
        return name, f"engines.backend is '{name}'"
    ok, detail = _backends()["tensorrt"]().available()
    if ok:
        return "tensorrt", f"auto: TensorRT imports and a GPU is visible ({detail})"
    return "onnxruntime", f"auto: not TensorRT ({detail}); using ONNX Runtime on the CPU"


def get_backend(name: str, **options) -> Backend:
    """The named backend (`auto` resolved and logged), or a one-line error if unknown or unable to run here."""
    backends = _backends()
    if name == AUTO:
        name, reason = resolve_backend(name)
        log.info("backend %s: %s", name, reason)
    if name not in backends:
        raise UserInputError(f"unknown backend '{name}' (known: {', '.join([*backends, AUTO])})")
    backend = backends[name](**options)
    ok, why = backend.available()
    if not ok:
        raise UserInputError(f"backend '{name}' is not available on this host: {why}")
    return backend


def availability() -> dict[str, tuple[bool, str]]:
    return {name: cls().available() for name, cls in _backends().items()}
