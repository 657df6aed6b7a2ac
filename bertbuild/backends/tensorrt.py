"""TensorRT backend (GPU hosts): strongly typed engines from the ONNX file.

TensorRT 10.x/11 builds strongly typed networks: FP16 comes from the ONNX
graph's own types and INT8 from its Q/DQ nodes, so there are no precision flags
and no calibrator here. The precision was decided when the ONNX was written.

Nothing imports `tensorrt` at module level. This file imports on any host,
and the package is loaded when an engine is built or run.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np

from bertbuild.backends.base import Backend, Engine, Profile, Runner
from bertbuild.model.signature import INPUT_NAMES

TIMING_CACHE = "timing.cache"


def gpu_info() -> dict:
    """GPU name, compute capability and driver as nvidia-smi reports them ({} without one)."""
    query = "--query-gpu=name,compute_cap,driver_version"
    try:
        out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    name, capability, driver = (part.strip() for part in out[0].split(","))
    return {"gpu": name, "compute_capability": capability, "driver": driver}


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
    """Runs a serialized `.plan` through Polygraphy's TrtRunner (GPU memory from activate on)."""

    def __init__(self, engine_path: Path):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.name = f"tensorrt:{self.engine_path.name}"
        self._runner = None

    def _activate_impl(self) -> None:
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(BytesFromPath(str(self.engine_path))))
        self._runner.activate()

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(self._runner.infer(feed))

    def _deactivate_impl(self) -> None:
        self._runner.deactivate()
        self._runner = None


class TensorRTBackend(Backend):
    name = "tensorrt"

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "the tensorrt package is not installed (on a GPU host: pip install 'tensorrt>=10.14')"
        if not gpu_info():
            return False, "no NVIDIA GPU visible (nvidia-smi found none)"
        return True, ""

    def build(self, onnx_path: Path, precision: str, profiles: list[Profile], out_dir: Path) -> Engine:
        from bertbuild._lazy import require

        trt = require("tensorrt")
        from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        # One timing cache per output tree: later builds reuse measured tactics.
        cache = out_dir.parent / TIMING_CACHE
        network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
        config = CreateConfig(profiles=_trt_profiles(profiles), load_timing_cache=str(cache) if cache.exists() else None)
        plan = EngineBytesFromNetwork(network, config=config, save_timing_cache=str(cache))()
        engine_path = out_dir / f"{Path(onnx_path).stem}.plan"
        engine_path.write_bytes(plan)
        engine = Engine(engine_path, self.name, precision, {
            "tensorrt": trt.__version__, "strongly_typed": True, **gpu_info(),
            "profiles": [p.to_json() for p in profiles], "timing_cache": str(cache), "source_onnx": str(onnx_path),
        })
        engine.save_metadata()
        return engine

    def load(self, engine_path: Path) -> Runner:
        return TensorRTRunner(engine_path)
