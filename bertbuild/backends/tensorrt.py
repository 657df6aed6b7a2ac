"""TensorRT backend (GPU hosts): strongly typed engines from the ONNX file.

TensorRT 10.x/11 builds strongly typed networks: FP16 comes from the ONNX
graph's own types and INT8 from its Q/DQ nodes, so there are no precision flags
and no calibrator here (TensorRT 11 removed both). The precision was decided
when the ONNX was written, and `bertbuild.trt_check` has checked the file
against the installed version's ONNX parser before anything is built.

Nothing imports `tensorrt` at module level. This file imports on any host,
and the package is loaded when an engine is built or run.

The ONNX file is parsed by its path (Polygraphy's `NetworkFromOnnxPath` calls
the parser's `parse_from_file`), so TensorRT finds a file's external data
beside it; `check_onnx` has checked that data to be there before anything is built.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np

from bertbuild.backends.base import Backend
from bertbuild.runner import Engine, Profile, Runner, profiles_from_metadata, read_metadata
from bertbuild.kinds import as_written
from bertbuild.shapes import describe, fitting_profile
from bertbuild.host import gpu_info, slug
from bertbuild.model.signature import INPUT_NAMES


def timing_cache_path(trt_version: str, gpu_name: str) -> Path:
    """`<cache root>/tensorrt/timing-<version>-<gpu>.cache`.

    Tactic timings are only valid for one TensorRT version on one GPU model,
    and belong to the host, not to a run: kept out of the engine directory,
    they are reused by every later build and never published in a bundle.
    """
    from bertbuild.content_cache import default_cache_dir

    return default_cache_dir() / "tensorrt" / f"timing-{trt_version}-{slug(gpu_name)}.cache"


def _trt_profiles(profiles: list[Profile]):
    from polygraphy.backend.trt import Profile as TrtProfile

    built = []
    for profile in profiles:
        trt_profile = TrtProfile()
        for name in INPUT_NAMES:
            trt_profile.add(name, min=profile.min, opt=profile.opt, max=profile.max)
        built.append(trt_profile)
    return built


class TensorRTRunner(Runner):
    """Runs a serialized `.plan` through Polygraphy's TrtRunner (GPU memory from activate on).

    An engine built with several profiles serves each (batch, seq) from the
    profile that covers it: the runner switches profile when the feed's shape needs another.
    """

    def __init__(self, engine_path: Path, profiles: list[Profile] | None = None):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.profiles = list(profiles or [])
        self.name = f"tensorrt:{self.engine_path.name}"
        self._runner = None
        self._profile = 0

    def _activate_impl(self) -> None:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.engine_path))), optimization_profile=0)
        self._runner.activate()
        self._profile = 0

    def profile_for(self, feed: dict[str, np.ndarray]) -> int:
        """Index of the profile covering the feed's (batch, seq); 0 for an engine built without recorded profiles."""
        if not self.profiles:
            return 0
        batch, seq = np.shape(feed[INPUT_NAMES[0]])
        index = fitting_profile(self.profiles, batch, seq)
        if index is None:
            raise ValueError(f"{self.name}: no optimization profile covers batch {batch} x seq {seq} "
                             f"(profiles {describe(self.profiles)}); add one under engines.profiles")
        return index

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = self.profile_for(feed)
        if index != self._profile:
            self._runner.set_profile(index)
            self._profile = index
        return dict(self._runner.infer(feed))

    def _deactivate_impl(self) -> None:
        self._runner.deactivate()
        self._runner = None


class TensorRTBackend(Backend):
    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        """Importable and a GPU visible; the import is only tried once nvidia-smi has found a GPU."""
        if importlib.util.find_spec("tensorrt") is None:
            return False, "the tensorrt package is not installed (on a GPU host: pip install 'tensorrt>=10.14')"
        gpu = gpu_info()
        if not gpu:
            return False, "no NVIDIA GPU visible (nvidia-smi found none)"
        try:
            trt = importlib.import_module("tensorrt")
        except Exception as exc:  # a broken install fails in many ways (missing libnvinfer, ABI)
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return False, f"tensorrt is installed but does not import ({first})"
        return True, f"TensorRT {trt.__version__} on {gpu['gpu']}"

    def onnx_runner(self, onnx_path: Path | str, precision: str, float_parts: str | None = None) -> Runner:
        """ONNX Runtime's CPU provider: no TensorRT engine is built per INT8 tune-split candidate."""
        from bertbuild.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(onnx_path, threads=self.threads)

    def supports(self, precision: str) -> tuple[bool, str]:
        """BF16 needs Ampere (compute capability 8.0) or later; strongly typed FP16 and INT8 run on any."""
        if precision != "bf16":
            return True, ""
        capability = gpu_info().get("compute_capability") or "0"
        try:
            major = int(str(capability).split(".")[0])
        except ValueError:
            major = 0
        if major < 8:
            return False, f"TensorRT builds BF16 on compute capability 8.0 (Ampere) or later; this GPU has {capability}"
        return True, ""

    def build(self, onnx_path: Path, precision: str, profiles: list[Profile], out_dir: Path,
              float_parts: str | None = None) -> Engine:
        from bertbuild._lazy import require
        from bertbuild.trt_check import check_onnx, matrix_version_for

        trt = require("tensorrt")
        # Before the GPU is touched: a file TensorRT's parser would reject fails here, one line per node
        # (and a missing or misplaced external data file, in one line).
        readiness = check_onnx(onnx_path, matrix_version_for(trt.__version__), profiles).require_ready()
        from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        gpu = gpu_info()
        cache = timing_cache_path(trt.__version__, gpu.get("gpu", "unknown-gpu"))
        cache.parent.mkdir(parents=True, exist_ok=True)
        network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
        config = CreateConfig(profiles=_trt_profiles(profiles), load_timing_cache=str(cache) if cache.exists() else None)
        plan = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(cache))()
        engine_path = out_dir / f"{Path(onnx_path).stem}.plan"
        engine_path.write_bytes(plan)
        engine = Engine(engine_path, self.name, precision, {
            "tensorrt": trt.__version__, "strongly_typed": True, "compute_precision": as_written(precision), **gpu,
            "profiles": [p.to_json() for p in profiles], "timing_cache": str(cache), "source_onnx": str(onnx_path),
            "trt_ready": readiness.to_json(),
        })
        engine.save_metadata()
        return engine

    def load(self, engine_path: Path) -> Runner:
        return TensorRTRunner(engine_path, profiles_from_metadata(read_metadata(engine_path)))
