"""OpenVINO on the CPU (`openvino`): the fastest runtime this project has for a CPU host with AVX-512.

It runs the *portable* files as they are written: the FP32 and fused exports,
the FP16 and BF16 files, and the signed Q/DQ INT8 file that TensorRT builds
(s8s8). OpenVINO folds DequantizeLinear -> MatMul into INT8 kernels, as
TensorRT does, so the CPU engine checks the very file GPU users get.

Precision, stated rather than defaulted. OpenVINO's CPU plugin computes in
BF16 by default on CPUs with AVX512_BF16 or AMX, even for an FP32 file. Every
engine here therefore sets `INFERENCE_PRECISION_HINT` from the precision the
file carries (`inference_precision`), and records what the compiled model
really runs each layer in (`compute_precisions`, read from OpenVINO's runtime
model): an "fp32" engine is FP32, and nothing is silently lower than its name.
The one choice is an INT8 engine's float parts (everything that is not an INT8
GEMM): FP32 or BF16, chosen on the train-half tune split (`flows/int8.py`).

The engine is OpenVINO IR (`.xml` + `.bin`), what Triton's OpenVINO backend
serves, written with `openvino.save_model` with weight compression off (its
default would halve FP32 weights to FP16 on disk). Its metadata names the
OpenVINO version, the hint, the CPU's capabilities and the per-layer precisions.

No network and no telemetry. `import openvino` itself imports the model
conversion API (ovc), which starts `openvino_telemetry`, writes a client id
under ~/intel and sends an "import" event to Google Analytics, unless the user
opted out or CI=true; `convert_model` sends more. OpenVINO falls back to a
no-op stub of its own when `openvino_telemetry` cannot be imported, so
`import_openvino` marks that module absent in this process before the first
import: nothing is sent or written, and the user's global opt-in setting and
environment are left alone. ONNX is read with `Core.read_model` and IR written
with `save_model`; the conversion API is never used
(tests/test_openvino_backend.py checks both).
"""

from __future__ import annotations

import os
import platform
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from bertbuild.backends.base import Backend
from bertbuild.runner import Engine, Profile, Runner, read_metadata
from bertbuild.errors import UserInputError
from bertbuild.kinds import Precision

DEVICE = "CPU"
# OpenVINO's element-type names -> this project's precision names.
_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
# The layers whose precision says what a BERT engine computes in: GEMMs, fused attention, LayerNorm.
GEMM_LAYERS = ("FullyConnected", "MatMul")
FLOAT_LAYERS = ("Subgraph", "MVN", "ScaledDotProductAttention", "Softmax", "Eltwise")
# The hint (OpenVINO's name) each 16-bit precision needs, and the CPU capability that runs it.
_HINTS = {"bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16")}
# Precisions whose engine is skipped on a CPU without the arithmetic. FP16 is not among them: most CPUs
# lack FP16 arithmetic, and its file then runs at the f32 hint (FP16 weights, FP32 arithmetic), named so.
_NEEDS_ARITHMETIC = ("bf16",)


def import_openvino():
    """`openvino`, with its usage telemetry off for this process (see the module docstring); every import goes here."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # None: `import openvino_telemetry` raises ImportError
    import openvino

    return openvino


def capabilities() -> list[str]:
    """The CPU plugin's OPTIMIZATION_CAPABILITIES ('FP32', 'BF16', 'FP16', 'INT8', ...); [] if it cannot say."""
    ov = import_openvino()

    try:
        return [str(c) for c in ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")]
    except RuntimeError:
        return []


def can_compute(precision: str, caps: list[str]) -> tuple[bool, str]:
    """Whether this CPU computes `precision` natively: (True, "") or (False, why). Pure: `caps` from `capabilities`."""
    if precision in _HINTS and _HINTS[precision][1] not in caps:
        return False, (f"this CPU has no {precision.upper()} arithmetic (OpenVINO's CPU plugin lists "
                       f"{', '.join(caps) or 'nothing'}; {precision.upper()} needs AVX512_{precision.upper()} or AMX)")
    return True, ""


def inference_precision(precision: str, float_parts: str | None = None, caps: list[str] | None = None) -> str:
    """The INFERENCE_PRECISION_HINT for an engine of `precision`: what its file carries.

    FP32 files -> f32 (never the CPU's BF16 default); BF16 -> bf16; FP16 -> f16 where
    the CPU has FP16 arithmetic (`caps`, default this CPU's), else f32; INT8 -> its float
    parts' precision (`float_parts`, fp32 unless chosen bf16).
    """
    if precision == Precision.INT8:
        precision = float_parts or "fp32"
    if precision == Precision.FP16 and not can_compute(precision, capabilities() if caps is None else caps)[0]:
        return "f32"
    if precision in _HINTS:
        return _HINTS[precision][0]
    if precision in (Precision.FP32, Precision.FUSED_FP32):
        return "f32"
    raise UserInputError(f"openvino: no inference precision for {precision!r}")


def layer_precisions(compiled) -> dict[str, dict[str, int]]:
    """{layer type: {precision: count}} of the compute layers OpenVINO compiled (its runtime model)."""
    counts: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        layer = str(info["layerType"].astype(str))
        if layer in GEMM_LAYERS or layer in FLOAT_LAYERS:
            counts[(layer, _NAMES.get(str(info["runtimePrecision"].astype(str)), "other"))] += 1
    found: dict[str, dict[str, int]] = {}
    for (layer, precision), n in sorted(counts.items()):
        found.setdefault(layer, {})[precision] = n
    return found


def compute_label(layers: dict[str, dict[str, int]]) -> str:
    """'int8+bf16', 'bf16', 'fp32', ...: the GEMMs' main precision, and the float parts' where it differs.

    Pure, from `layer_precisions`. The float parts are every non-INT8 compute
    layer (attention, LayerNorm, element-wise, the float GEMMs such as the QA head).
    """
    gemms: Counter = Counter()
    floats: Counter = Counter()
    for layer, found in layers.items():
        for precision, n in found.items():
            if precision == "other" or (precision == "int8" and layer not in GEMM_LAYERS):
                continue  # integer element-wise work (the attention mask) says nothing of the arithmetic
            if layer in GEMM_LAYERS:
                gemms[precision] += n
            if precision != "int8":
                floats[precision] += n
    if not gemms and not floats:
        return "unknown"
    main = gemms.most_common(1)[0][0] if gemms else floats.most_common(1)[0][0]
    rest = floats.most_common(1)[0][0] if floats else main
    return main if rest == main else f"{main}+{rest}"


def _config(hint: str, threads: int | None) -> dict:
    cores = os.cpu_count() or 1
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
              "INFERENCE_NUM_THREADS": str(threads or cores)}
    if threads and threads < cores:  # a share of the host, beside other work: do not pin threads to cores
        config["ENABLE_CPU_PINNING"] = "NO"
    return config


class OpenVinoRunner(Runner):
    """Compiles an OpenVINO IR or an ONNX file for the CPU at the given inference precision hint."""

    def __init__(self, model_path: Path | str, hint: str = "f32", threads: int | None = None,
                 name: str | None = None):
        super().__init__()
        self.model_path = Path(model_path)
        self.hint = hint
        self.threads = threads
        self.name = name or f"openvino:{self.model_path.name}"
        self._request = None
        self.compiled = None

    def _activate_impl(self) -> None:
        core = import_openvino().Core()
        try:
            model = core.read_model(str(self.model_path))
        except RuntimeError as error:  # not a model OpenVINO reads
            first = str(error).strip().splitlines()[0] if str(error).strip() else "unreadable"
            raise UserInputError(f"{self.model_path}: OpenVINO cannot read it ({first[:200]})") from None
        self.compiled = core.compile_model(model, DEVICE, _config(self.hint, self.threads))
        self._request = self.compiled.create_infer_request()
        self._outputs = [(o.get_any_name(), o) for o in self.compiled.outputs]

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._request.infer(feed)
        # Copies: the request reuses its output buffers on the next call.
        return {name: np.array(results[port]) for name, port in self._outputs}

    def _deactivate_impl(self) -> None:
        self._request = None
        self.compiled = None


class OpenVinoBackend(Backend):
    """OpenVINO's CPU plugin: the engine is OpenVINO IR, compiled at load with the recorded hint."""

    name = "openvino"

    def available(self) -> tuple[bool, str]:
        from bertbuild._lazy import is_installed

        if not is_installed("openvino"):
            return False, "openvino is not installed (pip install openvino)"
        if platform.machine().lower() not in ("x86_64", "amd64", "arm64", "aarch64"):
            return False, f"OpenVINO's CPU plugin does not run on {platform.machine()}"
        ov = import_openvino()

        try:
            devices = ov.Core().available_devices
        except RuntimeError as error:
            return False, f"OpenVINO cannot start ({str(error).splitlines()[0][:160]})"
        if DEVICE not in devices:
            return False, "OpenVINO finds no CPU device on this host"
        return True, f"OpenVINO {ov.get_version().split('-')[0]} on the CPU ({', '.join(capabilities())})"

    def supports(self, precision: str) -> tuple[bool, str]:
        if str(precision) not in _NEEDS_ARITHMETIC:
            return True, ""
        return can_compute(str(precision), capabilities())

    def build(self, onnx_path: Path, precision: str, profiles: list[Profile], out_dir: Path,
              float_parts: str | None = None) -> Engine:
        """Read the ONNX file, write it as IR (weights as they are), compile it once to record what it runs in."""
        ov = import_openvino()

        ok, why = self.supports(precision if precision != Precision.INT8 else (float_parts or "fp32"))
        if not ok:
            raise UserInputError(f"openvino: cannot build a {precision} engine here: {why}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        engine_path = out_dir / f"{Path(onnx_path).stem}.openvino.xml"
        model = ov.Core().read_model(str(onnx_path))
        ov.save_model(model, str(engine_path), compress_to_fp16=False)
        hint = inference_precision(precision, float_parts)
        runner = OpenVinoRunner(engine_path, hint, self.threads).activate()
        layers = layer_precisions(runner.compiled)
        runner.deactivate()
        from bertbuild import onnx_files

        engine = Engine(engine_path, self.name, precision, {
            "openvino": ov.get_version(), "device": DEVICE, "inference_precision_hint": hint,
            "float_parts": float_parts if precision == Precision.INT8 else None,
            "compute_precision": compute_label(layers), "layer_precisions": layers,
            "cpu_capabilities": capabilities(), "weights_file": engine_path.with_suffix(".bin").name,
            "threads": self.threads, "profiles": [p.to_json() for p in profiles],
            "source_onnx": str(onnx_path), "source_sha256": onnx_files.files_digest(onnx_path),
        })
        engine.save_metadata()
        return engine

    def load(self, engine_path: Path) -> Runner:
        record = read_metadata(engine_path)
        return OpenVinoRunner(engine_path, record.get("inference_precision_hint", "f32"), self.threads,
                              name=f"{self.name}:{Path(engine_path).name}")

    def onnx_runner(self, onnx_path: Path | str, precision: str, float_parts: str | None = None) -> Runner:
        """A runner straight from an ONNX file, as its engine would compute (the INT8 tune split's candidates)."""
        return OpenVinoRunner(onnx_path, inference_precision(precision, float_parts), self.threads)
