"""Every bundle file's name, made here only, together with the precision it belongs to.

A bundle is what one run publishes: bundle name -> local file, and for each
file the precision it belongs to (None: a file of the whole run, such as
results.json or the plots). The manifest records that precision beside each
file's digest, so `artifacts download --precision` reads it from there and
never parses it back out of a name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bertbuild.backends.registry import TENSORRT_INT8_VARIANT
from bertbuild.kinds import Precision
from bertbuild.step_results import EngineResult, Scores

VOCAB = "vocab.txt"
RESULTS = "results.json"
REGRESSION = "regression.json"
INT8_CALIBRATION = "int8/calibration.json"

_ONNX = {Precision.FP32: "model-fp32.onnx", Precision.FUSED_FP32: "model-fused.onnx", Precision.FP16: "model-fp16.onnx",
         Precision.BF16: "model-bf16.onnx"}


def onnx_name(precision: str) -> str:
    """The bundle name of the FP32, fused FP32, FP16 or BF16 ONNX file (INT8 files: `int8_name`)."""
    return _ONNX[Precision(precision)]


def int8_name(path: str | Path) -> str:
    return f"int8/{Path(path).name}"


def predictions_name(engine: str) -> str:
    """An engine's {question_id: answer_text} file (the TensorFlow reference's too)."""
    return f"predictions-{engine}.json"


def validation_names(engine: str) -> tuple[str, str, str]:
    """An engine's Polygraphy validation report, as JSON and as text, and Polygraphy's own log of the comparison
    (per-batch statistics, tolerances, error metrics: kept off the terminal, `evaluation.polygraphy_log`)."""
    return f"validation-{engine}.json", f"validation-{engine}.txt", f"validation-{engine}.log"


def benchmark_name(engine: str) -> str:
    return f"benchmark-{engine}.json"


def engine_file_name(precision: str, path: str | Path) -> str:
    """An engine file (or its metadata) under `engines/<precision>/`, by its own file name."""
    return f"engines/{Precision(precision)}/{Path(path).name}"


@dataclass
class Bundle:
    """Bundle name -> local file, and the precision each file belongs to (absent: the whole run's)."""

    files: dict[str, str] = field(default_factory=dict)
    precisions: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, path: str | Path, precision: str | None = None) -> None:
        self.files[name] = str(path)
        if precision is None:
            self.precisions.pop(name, None)
        else:
            self.precisions[name] = str(Precision(precision))

    def add_int8(self, paths: dict[str, str], calibration: str) -> None:
        """The INT8 files of every variant written (variant -> path) and the calibration they share."""
        for path in paths.values():
            self.add(int8_name(path), path, Precision.INT8)
        self.add(INT8_CALIBRATION, calibration, Precision.INT8)

    def add_engine(self, result: EngineResult) -> None:
        """One scored engine: its file and metadata, validation reports, predictions and timing."""
        engine, name, validation = result.engine, result.scores.engine, result.validation
        for path in (*engine.files, engine.metadata):
            self.add(engine_file_name(engine.precision, path), path, engine.precision)
        report = Path(validation.report)
        for bundle_name, path in zip(validation_names(name),
                                     (report, report.with_suffix(".txt"), report.with_suffix(".log"))):
            if path.suffix != ".log" or path.is_file():  # a validation cached before the log existed has none
                self.add(bundle_name, path, engine.precision)
        self.add(predictions_name(name), result.scores.predictions, engine.precision)
        self.add(benchmark_name(name), result.timing.path, engine.precision)

    def add_companions(self) -> None:
        """Every ONNX file's external data files, beside it and of its precision (`onnx_files.onnx_companions`)."""
        from bertbuild.onnx_files import onnx_companions

        owners: dict[str, str] = {}
        for name, path in onnx_companions(self.files, owners).items():
            self.add(name, path, self.precisions.get(owners[name]))

    def add_triton(self, model: str, engines, profiles, batch: int, run_dir: str | Path) -> None:
        """Each engine's Triton model folder (`serving.repository`), its files of the engine's precision."""
        from bertbuild.serving.repository import repository_files

        for engine in engines:
            for name, path in repository_files(model, [engine], profiles, batch, run_dir).items():
                self.add(name, path, engine["precision"])

    def tensorrt_inputs(self, int8_paths: dict[str, str] | None = None) -> dict[str, str]:
        """The ONNX files TensorRT builds from: FP32, fused, FP16, BF16 and the s8s8 INT8 file (never u8s8 or ort)."""
        chosen = {name: path for name, path in self.files.items() if name in _ONNX.values()}
        if int8_paths and TENSORRT_INT8_VARIANT in int8_paths:
            path = int8_paths[TENSORRT_INT8_VARIANT]
            chosen[int8_name(path)] = path
        return chosen


def run_bundle(vocab: str, onnx: dict[str, str], int8_paths: dict[str, str] | None = None,
               int8_ranges: str | None = None, engines: Iterable[EngineResult] = (),
               reference: Scores | None = None) -> Bundle:
    """A run's bundle: the vocab, every ONNX file (`onnx`: precision -> file; INT8: every variant written, with
    the ranges they share), then each scored engine's files and the reference's predictions."""
    bundle = Bundle()
    bundle.add(VOCAB, vocab)
    for precision, path in onnx.items():
        if Precision(precision) in _ONNX:
            bundle.add(onnx_name(precision), path, precision)
    if int8_paths:
        bundle.add_int8(int8_paths, int8_ranges)
    for result in engines:
        bundle.add_engine(result)
    if reference is not None:
        bundle.add(predictions_name(reference.engine), reference.predictions)
    return bundle
