"""The INT8 recipe: fused FP32 graph -> every INT8 file, with the techniques `Int8Config` turns on.

    fused FP32 ─ prepare_source: smoothing (smoothing_alpha) ─ outlier split (outlier_channels)
               ─ calibrate (calibration.py, train half; on the PREPARED file: its tensors are the ones quantized)
               ─ write_int8_files: bias correction per variant (bias_correction), then
                     s8s8  (TensorRT, standard ONNX)
                     u8s8  (standard ONNX, Q/DQ)
                     ort   (ONNX Runtime only, ort_int8.py)

Three calls, so a flow can cache each step and the fallback can re-write the
files with other exclusions from the same prepared source and calibration;
`build_int8` chains them for scripts (benchmarks/int8_techniques.py), so what
is measured is exactly what is built. The prepared FP32 files are kept in
`out_dir` for inspection; each is FP32-equivalent to the fused graph.

`external_data` (every call): how the written files keep their weights
(`bertbuild.onnx_files`); None, the default, follows each step's input: a
model past protobuf's 2 GB limit stays external while it is over it.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from bertbuild.precision.calibration import calibrate
from bertbuild.precision.calibration_set import CalibrationSet
from bertbuild.config.precision import Int8Config
from bertbuild.precision.int8 import VARIANTS, Int8Files, qdq_summary, quantize_variant
from bertbuild.precision.ranges import Calibration

ORT_VARIANT = "ort"  # the ONNX-Runtime-only u8s8 file of ort_int8.py
ALL_VARIANTS = (*VARIANTS, ORT_VARIANT)


def prepare_source(fused_onnx: Path | str, out_dir: Path | str, samples: CalibrationSet, cfg: Int8Config,
                   threads: int | None = None, external_data: bool | None = None) -> tuple[Path, dict]:
    """The FP32 file to calibrate and quantize: `fused_onnx`, smoothed and outlier-split when configured.

    Returns the file and a record of the rewrites applied (empty: the fused file itself).
    """
    source, techniques = Path(fused_onnx), {}
    shared = set(cfg.smoothing_after) & set(cfg.outlier_after)
    if cfg.smoothing_alpha is not None and cfg.outlier_channels and shared:
        raise ValueError("smoothing and outlier decomposition would both rewrite the inputs of the MatMuls after "
                         f"{sorted(shared)}: give them different ops")
    if cfg.smoothing_alpha is not None:
        from bertbuild.precision.smoothing import smooth

        report = smooth(source, Path(out_dir) / "model-smoothed.onnx", samples, cfg, threads, external_data)
        source, techniques["smoothing"] = Path(report.path), asdict(report)
    if cfg.outlier_channels:
        from bertbuild.precision.outliers import split_outliers

        report = split_outliers(source, Path(out_dir) / f"{source.stem}-outliers.onnx", samples, cfg, threads,
                                external_data)
        source, techniques["outliers"] = Path(report.path), asdict(report)
    return source, techniques


def write_int8_files(source: Path | str, out_dir: Path | str, calibration: Calibration, cfg: Int8Config,
                     samples: CalibrationSet | None = None, nodes_to_exclude: Iterable[str] = (),
                     variants: Iterable[str] = ALL_VARIANTS, stem: str = "model",
                     threads: int | None = None, external_data: bool | None = None) -> Int8Files:
    """Write `<stem>.int8-<variant>.onnx` for each variant into `out_dir`.

    `source` comes from `prepare_source` and `calibration` from calibrating it;
    `samples` (the calibration windows) are needed only for bias correction.
    """
    from bertbuild.precision.ort_int8 import write_ort_int8

    start = time.perf_counter()
    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    excluded = sorted(set(nodes_to_exclude))
    paths, counts, quantized, techniques = {}, {}, [], {}
    for variant in variants:
        activation = "u8s8" if variant == ORT_VARIANT else variant
        variant_source = _bias_corrected(source, out_dir, calibration, samples, cfg, activation, techniques, threads,
                                         external_data)
        path = out_dir / f"{stem}.int8-{variant}.onnx"
        if variant == ORT_VARIANT:
            report = write_ort_int8(variant_source, path, calibration, cfg, excluded, external_data)
            quantized = report.quantized_nodes
            techniques["ort"] = {k: v for k, v in asdict(report).items()
                                 if k not in ("quantized_nodes", "excluded_nodes")}
        else:
            quantized = quantize_variant(variant_source, path, calibration, cfg, variant, excluded, external_data)
        paths[variant] = str(path)
        counts[variant] = qdq_summary(path)
    return Int8Files(paths=paths, source=str(source), quantized_nodes=quantized, excluded_nodes=excluded,
                     calibration=calibration.summary(), techniques=techniques,
                     seconds=round(time.perf_counter() - start, 2), qdq_counts=counts)


def build_int8(fused_onnx: Path | str, out_dir: Path | str, samples: CalibrationSet, cfg: Int8Config,
               nodes_to_exclude: Iterable[str] = (),
               variants: Iterable[str] = ALL_VARIANTS, threads: int | None = None,
               external_data: bool | None = None) -> Int8Files:
    """prepare_source -> calibrate -> write_int8_files, in one call."""
    source, prepared = prepare_source(fused_onnx, out_dir, samples, cfg, threads, external_data)
    calibration = calibrate(source, samples, cfg, out_dir, threads)  # calibration.json beside the files
    files = write_int8_files(source, out_dir, calibration, cfg, samples, nodes_to_exclude, variants,
                             threads=threads, external_data=external_data)
    files.techniques = {**prepared, **files.techniques}
    return files


def _bias_corrected(source: Path, out_dir: Path, calibration: Calibration, samples: CalibrationSet | None,
                    cfg: Int8Config, variant: str, techniques: dict, threads: int | None,
                    external_data: bool | None = None) -> Path:
    """`source` with biases corrected for `variant` when configured (made once per variant)."""
    if not cfg.bias_correction:
        return source
    if samples is None:
        raise ValueError("bias correction needs the calibration samples")
    from bertbuild.precision.bias_correction import correct_biases

    path = out_dir / f"{source.stem}-biascorrected-{variant}.onnx"
    key = f"bias_correction_{variant}"
    if key not in techniques:
        report = correct_biases(source, path, calibration, samples, variant, cfg.bias_correction_batches,
                                cfg.batch_size, threads, external_data)
        techniques[key] = {"variant": variant, "biases": len(report.corrected), "seconds": report.seconds,
                           "largest_shift": max(report.corrected.values(), default=0.0)}
    return path
