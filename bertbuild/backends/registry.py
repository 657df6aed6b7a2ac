"""Backends by name. Tasks pass the name (a string), never a backend object.

`auto` is not a backend but a choice made on the host that runs the build:
TensorRT when it imports and a GPU is visible; else OpenVINO when it is
installed and runs on this CPU (the fastest CPU runtime measured here,
benchmarks/README.md); else ONNX Runtime on the CPU.
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
# Backends that run the portable signed Q/DQ file as INT8 kernels: TensorRT's, and OpenVINO on the CPU.
PORTABLE_INT8_BACKENDS = TENSORRT_BACKENDS | {"openvino"}
# The INT8 file TensorRT builds from: signed Q/DQ with zero point 0. The others (u8s8, ort) are ONNX Runtime's.
TENSORRT_INT8_VARIANT = "s8s8"


def int8_variant(backend: str, configured: str) -> str:
    """The INT8 file a backend builds its engine from.

    TensorRT takes only the signed file (s8s8: INT8 Q/DQ, zero point 0), whatever
    `precision.int8.variant` says, and OpenVINO runs that same file (so the CPU
    engine is the file GPU users get); ONNX Runtime runs the configured one (its
    `ort` file uses kernels TensorRT cannot import).
    """
    return TENSORRT_INT8_VARIANT if backend in PORTABLE_INT8_BACKENDS else configured


def runtime_fields(backend: str) -> dict:
    """The runtime version an engine, a score or a timing of `backend` depends on, for its step key.

    ONNX Runtime and TensorRT are among the libraries the engine steps name (`bertbuild.steps`); OpenVINO
    joins only the keys of steps that run it (engines, scoring, validation, timing, the tune split), so
    its upgrade recomputes none of the export, fusion or the TensorFlow reference.
    """
    if backend != "openvino":
        return {}
    from bertbuild.host import library_version

    return {"openvino": library_version("openvino")}


def _backends() -> dict[str, type[Backend]]:
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend, OnnxRuntimeCudaBackend, OnnxRuntimeTensorRTBackend
    from bertbuild.backends.openvino import OpenVinoBackend
    from bertbuild.backends.tensorrt import TensorRTBackend

    return {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend, "onnxruntime-cuda": OnnxRuntimeCudaBackend,
            "onnxruntime-tensorrt": OnnxRuntimeTensorRTBackend, "tensorrt": TensorRTBackend}


def resolve_backend(name: str) -> tuple[str, str]:
    """(concrete backend name, why it was chosen). Only `auto` involves a choice; other names pass through."""
    if name != AUTO:
        return name, f"engines.backend is '{name}'"
    backends = _backends()
    ok, detail = backends["tensorrt"]().available()
    if ok:
        return "tensorrt", f"auto: TensorRT imports and a GPU is visible ({detail})"
    cpu_ok, cpu_detail = backends["openvino"]().available()
    if cpu_ok:
        return "openvino", f"auto: not TensorRT ({detail}); {cpu_detail}"
    return "onnxruntime", f"auto: not TensorRT ({detail}); not OpenVINO ({cpu_detail}); using ONNX Runtime on the CPU"


def with_backend_resolved(cfg):
    """(`cfg` whose `engines.backend` names the backend that runs here, why that one): what results.json records."""
    backend, why = resolve_backend(cfg.engines.backend)
    return cfg.model_copy(update={"engines": cfg.engines.model_copy(update={"backend": backend})}), why


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


def computable(backend: str, precisions) -> tuple[list, dict[str, str]]:
    """(the precisions whose engines `backend` computes on this host, {skipped engine: why, in one line}).

    A skipped one is no failure: its ONNX file is still written and published (TensorRT builds BF16 on
    Ampere and later).
    """
    from bertbuild.kinds import engine_name

    runtime = get_backend(backend)
    kept, skipped = [], {}
    for precision in precisions:
        ok, why = runtime.supports(precision)
        if ok:
            kept.append(precision)
        else:
            skipped[engine_name(backend, precision)] = why
    return kept, skipped
