"""ONNX Runtime runner for an .onnx model file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bertbuild.backends.base import Runner


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    return options


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file with ONNX Runtime (CPU provider unless told otherwise)."""

    def __init__(self, model_path: Path | str, providers: list[str] | None = None, threads: int | None = None,
                 name: str | None = None):
        super().__init__()
        self.model_path = Path(model_path)
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.name = name or f"onnxruntime:{self.model_path.name}"
        self._session = None

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=session_options(self.threads), providers=self.providers
        )
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, feed)
        return dict(zip(self._outputs, values))

    def _deactivate_impl(self) -> None:
        self._session = None
