"""ONNX Runtime backends: CPU (`onnxruntime`), CUDA (`onnxruntime-cuda`) and TensorRT (`onnxruntime-tensorrt`).

Each backend names its execution providers explicitly; nothing picks a GPU
provider just because the installed onnxruntime build has one. The GPU ones
need the `gpu` extra (onnxruntime-gpu, which replaces onnxruntime).

The engine of the CPU and CUDA backends is ORT's optimized model. The
TensorRT provider compiles subgraphs into nodes that ORT cannot save, so its
engine is the source ONNX file itself; TensorRT's compiled engines and timing
cache go to the cache root instead, where later sessions reuse them.

A source with external data (past protobuf's 2 GB limit, or external by
choice) gives an engine with external data too: `<engine>.data` beside it,
the location the engine file records (`bertbuild.onnx_files`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bertbuild import onnx_files, onnx_skeleton
from bertbuild.backends.base import Backend
from bertbuild.runner import Engine, Profile, Runner, profiles_from_metadata, read_metadata
from bertbuild.kinds import as_written
from bertbuild.errors import MissingDependency
from bertbuild.host import gpu_info
from bertbuild.model.signature import INPUT_NAMES

CPU, CUDA, TENSORRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
GPU_EXTRA = "pip install 'bertbuild[gpu]' (onnxruntime-gpu, which replaces onnxruntime) on a CUDA host"


def session_options(threads: int | None = None, optimization: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    cores = os.cpu_count() or 1
    options.intra_op_num_threads = threads or cores
    options.inter_op_num_threads = 1
    if options.intra_op_num_threads < cores:  # a share of the host, beside other work: waiting threads sleep
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    level = ort.GraphOptimizationLevel
    levels = {"disabled": level.ORT_DISABLE_ALL, "basic": level.ORT_ENABLE_BASIC,
              "extended": level.ORT_ENABLE_EXTENDED, "all": level.ORT_ENABLE_ALL}
    options.graph_optimization_level = levels[optimization]
    return options


def tensorrt_provider_options(profiles: list[Profile], cache_dir: Path) -> dict:
    """TensorRT EP settings: engine and timing caches under `cache_dir`, one shape range spanning every profile.

    One range, not one per profile: a single engine then serves every shape the
    config allows, and the EP needs no per-call profile choice.
    """
    options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
               "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir)}
    if not profiles:
        return options

    def shapes(dims):
        return ",".join(f"{name}:{dims[0]}x{dims[1]}" for name in INPUT_NAMES)

    low = tuple(min(p.min[i] for p in profiles) for i in range(2))
    high = tuple(max(p.max[i] for p in profiles) for i in range(2))
    return {**options, "trt_profile_min_shapes": shapes(low), "trt_profile_opt_shapes": shapes(profiles[0].opt),
            "trt_profile_max_shapes": shapes(high)}


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX file with ONNX Runtime. `providers`: names or (name, options) pairs, in order.

    Without `providers`, on the CPU: references and plain ONNX runs are reproducible on any host.
    """

    def __init__(self, model_path: Path | str, providers: list | None = None, threads: int | None = None,
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
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidProtobuf, NoSuchFile

        from bertbuild.errors import UserInputError

        try:
            self._session = ort.InferenceSession(
                str(self.model_path), sess_options=session_options(self.threads, self.optimization),
                providers=self.providers or [CPU],
            )
        except (Fail, InvalidArgument, InvalidProtobuf, NoSuchFile) as error:  # a file that is not a model we can run
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserInputError(f"{self.model_path}: ONNX Runtime cannot load it ({reason})") from None
        if self.providers:  # ORT falls back to a later provider (or CPU) when the first cannot start: refuse that
            wanted = self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]
            started = self._session.get_providers()[0]
            if started != wanted:
                self._session = None
                raise UserInputError(f"{self.model_path}: ONNX Runtime could not start {wanted} (it fell back to "
                                     f"{started}); check the provider's libraries on this host")
        self._outputs = [o.name for o in self._session.get_outputs()]

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._outputs, feed)
        return dict(zip(self._outputs, values))

    def _deactivate_impl(self) -> None:
        self._session = None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU: the engine is ORT's optimized model plus its session settings."""

    name = "onnxruntime"
    providers: tuple[str, ...] = (CPU,)  # in order of preference; all must be present
    needs_gpu = False
    # Providers that compile subgraphs into nodes: ORT refuses to save a model holding them.
    compiles = False

    def available(self) -> tuple[bool, str]:
        from bertbuild._lazy import is_installed

        if not is_installed("onnxruntime"):
            return False, "onnxruntime is not installed"
        if self.needs_gpu:
            import onnxruntime as ort

            missing = [p for p in self.providers if p not in ort.get_available_providers()]
            if missing:
                return False, f"this onnxruntime build has no {missing[0]}; {GPU_EXTRA}"
            if not gpu_info():
                return False, "no NVIDIA GPU visible (nvidia-smi found none)"
        return True, ""

    def _session_providers(self, profiles: list[Profile]) -> list:
        return list(self.providers)

    def onnx_runner(self, onnx_path: Path | str, precision: str, float_parts: str | None = None) -> Runner:
        """The file on the CPU provider: the tune split's judge for every ONNX Runtime backend, GPU ones too."""
        return OnnxRuntimeRunner(onnx_path, threads=self.threads)

    def supports(self, precision: str) -> tuple[bool, str]:
        if precision == "bf16" and not self.needs_gpu:
            return False, "ONNX Runtime's CPU provider has no BF16 arithmetic"
        return True, ""

    def build(self, onnx_path: Path, precision: str, profiles: list[Profile], out_dir: Path,
              float_parts: str | None = None) -> Engine:
        """Let ORT optimize the graph once and save the result as the engine.

        ORT has no shape profiles: dynamic axes serve every (batch, seq), so the
        profiles are only recorded (the TensorRT provider gets one range that
        spans them). The saved graph may hold hardware-specific fused ops,
        which is why it is an engine for this kind of host, not a portable ONNX.
        """
        import onnxruntime as ort

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        options = session_options(self.threads, "all")
        # ORT warns that a saved graph is hardware specific; that is the documented point above.
        options.log_severity_level = 3
        external = onnx_files.is_external(onnx_path)  # also checks that its data files are there
        if self.compiles:
            engine_path = out_dir / f"{Path(onnx_path).stem}.{self.name}.onnx"
            onnx_files.copy(onnx_path, engine_path)  # with its data, renamed after the engine
        else:
            engine_path = out_dir / f"{Path(onnx_path).stem}.ort.onnx"
            options.optimized_model_filepath = str(engine_path)
            onnx_files.data_path(engine_path).unlink(missing_ok=True)
            if external:  # ORT cannot save a model past 2 GB in one file; the engine stays a pair
                options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                                 onnx_files.data_path(engine_path).name)
                options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                                 str(onnx_skeleton.INLINE_BYTES))
        providers = self._session_providers(profiles)
        # One session now: it optimizes (or, with TensorRT, compiles and caches) before any timing.
        session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
        # ORT falls back to later providers when one fails to load (no CUDA/TensorRT libraries): refuse that.
        if session.get_providers()[0] != self.providers[0]:
            raise MissingDependency(f"{self.name}: ONNX Runtime could not start {self.providers[0]} (it fell back to "
                                    f"{session.get_providers()[0]}); check the CUDA/TensorRT libraries on this host")
        saved = {"optimized_model_saved": not self.compiles}
        if self.compiles:
            saved["why_not_saved"] = (f"{self.providers[0]} compiles subgraphs into nodes ONNX Runtime cannot "
                                      "save; the engine is the source ONNX and the compiled engines are cached")
        engine = Engine(engine_path, self.name, precision, {
            "onnxruntime": ort.__version__, "compute_precision": as_written(precision),
            "providers": session.get_providers(), "graph_optimization": "all",
            **saved, "threads": options.intra_op_num_threads, "profiles": [p.to_json() for p in profiles],
            "source_onnx": str(onnx_path), "source_sha256": onnx_files.files_digest(onnx_path),
            **(gpu_info() if self.needs_gpu else {}),
        })
        engine.save_metadata()
        return engine

    def load(self, engine_path: Path) -> Runner:
        profiles = profiles_from_metadata(read_metadata(engine_path))
        # A saved optimized model is already optimized: optimizing again would only cost start-up.
        return OnnxRuntimeRunner(engine_path, providers=self._session_providers(profiles), threads=self.threads,
                                 optimization="all" if self.compiles else "disabled",
                                 name=f"{self.name}:{Path(engine_path).name}")


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    name = "onnxruntime-cuda"
    providers = (CUDA, CPU)
    needs_gpu = True


class OnnxRuntimeTensorRTBackend(OnnxRuntimeBackend):
    name = "onnxruntime-tensorrt"
    providers = (TENSORRT, CUDA, CPU)
    needs_gpu = True
    compiles = True

    def _session_providers(self, profiles: list[Profile]) -> list:
        from bertbuild.content_cache import default_cache_dir

        cache_dir = default_cache_dir() / "onnxruntime-tensorrt"
        cache_dir.mkdir(parents=True, exist_ok=True)
        return [(TENSORRT, tensorrt_provider_options(profiles, cache_dir)), CUDA, CPU]
