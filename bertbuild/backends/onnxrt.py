"""ONNX Runtime backend: the engine is ORT's optimized model plus its session settings.

CPU provider here; the CUDA or TensorRT execution providers are used first when
the installed onnxruntime build offers them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bertbuild.hashing import sha256_file
from bertbuild.backends.base import Backend, Engine, Profile, Runner

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def _levels():
    import onnxruntime as ort

    level = ort.GraphOptimizationLevel
    return {"disabled": level.ORT_DISABLE_ALL, "basic": level.ORT_ENABLE_BASIC,
            "extended": level.ORT_ENABLE_EXTENDED, "all": level.ORT_ENABLE_ALL}


def session_options(threads: int | None = None, optimization: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = _levels()[optimization]
    return options


def default_providers() -> list[str]:
    import onnxruntime as ort

    present = set(ort.get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in present]


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file with ONNX Runtime."""

    def __init__(self, model_path: Path | str, providers: list[str] | None = None, threads: int | None = None,
                 name: str | None = None, optimization: str = "all"):
        super().__init__()
        self.model_path = Path(model_path)
        self.providers = providers
        self.threads = threads
        self.optimization = optimization
        self.name = name or f"onnxruntime:{self.model_path.name}"
        self._session = None

    def _activate_impl(self) -> None:
        import onnxruntime as ort

        self._session = ort.InferenceSession(
            str(self.model_path), sess_options=session_options(self.threads, self.optimization),
            providers=self.providers or default_providers(),
        )
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, feed)
        return dict(zip(self._outputs, values))

    def _deactivate_impl(self) -> None:
        self._session = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def available(self) -> tuple[bool, str]:
        from bertbuild._lazy import is_installed

        return (True, "") if is_installed("onnxruntime") else (False, "onnxruntime is not installed")

    def build(self, onnx_path: Path, precision: str, profiles: list[Profile], out_dir: Path) -> Engine:
        """Let ORT optimize the graph once and save the result as the engine.

        ORT has no shape profiles: dynamic axes serve every (batch, seq), so the
        profiles are only recorded. The saved graph may hold CPU-specific fused
        ops, which is why it is an engine for this kind of host, not a portable ONNX.
        """
        import onnxruntime as ort

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        engine_path = out_dir / f"{Path(onnx_path).stem}.ort.onnx"
        options = session_options(self.threads, "all")
        options.optimized_model_filepath = str(engine_path)
        # ORT warns that the saved graph is hardware specific; that is the documented point above.
        options.log_severity_level = 3
        providers = default_providers()
        ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        engine = Engine(engine_path, self.name, precision, {
            "onnxruntime": ort.__version__, "providers": providers, "graph_optimization": "all",
            "threads": options.intra_op_num_threads, "profiles": [p.to_json() for p in profiles],
            "source_onnx": str(onnx_path), "source_sha256": sha256_file(onnx_path),
        })
        engine.save_metadata()
        return engine

    def load(self, engine_path: Path) -> Runner:
        # Already optimized at build time: optimizing again would only cost start-up.
        return OnnxRuntimeRunner(engine_path, threads=self.threads, optimization="disabled",
                                 name=f"onnxruntime:{Path(engine_path).name}")
