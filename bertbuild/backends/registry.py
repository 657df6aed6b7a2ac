"""Backends by name. Tasks pass the name (a string), never a backend object."""

from __future__ import annotations

from bertbuild.backends.base import Backend
from bertbuild.errors import UserInputError


def _backends() -> dict[str, type[Backend]]:
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend
    from bertbuild.backends.tensorrt import TensorRTBackend

    return {"onnxruntime": OnnxRuntimeBackend, "tensorrt": TensorRTBackend}


def get_backend(name: str, **options) -> Backend:
    """The named backend, or a one-line error if it is unknown or cannot run on this host."""
    backends = _backends()
    if name not in backends:
        raise UserInputError(f"unknown backend '{name}' (known: {', '.join(backends)})")
    backend = backends[name](**options)
    ok, why = backend.available()
    if not ok:
        raise UserInputError(f"backend '{name}' is not available on this host: {why}")
    return backend


def availability() -> dict[str, tuple[bool, str]]:
    return {name: cls().available() for name, cls in _backends().items()}
