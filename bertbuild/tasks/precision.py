"""Prefect tasks that write the FP16 and INT8 ONNX files (the file carries the precision).

Calibration is cached on disk by `bertbuild.precision.calibration`, keyed by
the model file's sha256, the method and the exact samples (not by Prefect's
input-hash caching: the same path can hold a different model next run). Its
JSON file is what travels between tasks: a path, never arrays.
"""

from __future__ import annotations

from prefect import task

from bertbuild.precision.config import Fp16Config, Int8Config


def _samples(checkpoint_dir: str, lower_case: bool | None, int8_cfg: Int8Config, dataset: str):
    from bertbuild.model.checkpoint import vocab_and_case
    from bertbuild.precision.calibration import calibration_set

    vocab, lower = vocab_and_case(checkpoint_dir, lower_case)
    return calibration_set(int8_cfg, vocab, lower, dataset)


@task(name="fp16-onnx")
def fp16_onnx(onnx_path: str, out_path: str, fp16_cfg: dict) -> dict:
    """FP16 file with FP32 islands; returns the Fp16Report as a dict (with "path")."""
    from bertbuild.precision.fp16 import convert_to_fp16

    return convert_to_fp16(onnx_path, out_path, Fp16Config(**fp16_cfg)).to_json()


@task(name="calibrate-int8")
def calibrate_int8(onnx_path: str, checkpoint_dir: str, lower_case: bool | None, int8_cfg: dict, dataset: str,
                   cache_dir: str, threads: int | None) -> dict:
    """Activation ranges from SQuAD train-half windows; returns the summary (with the ranges' "cache_path")."""
    from bertbuild.precision.calibration import calibrate

    cfg = Int8Config(**int8_cfg)
    calibration = calibrate(onnx_path, _samples(checkpoint_dir, lower_case, cfg, dataset), cfg, cache_dir, threads)
    return calibration.summary()


@task(name="int8-onnx")
def int8_onnx(onnx_path: str, out_dir: str, calibration: dict, int8_cfg: dict, excluded: list[str]) -> dict:
    """Both INT8 variants (s8s8 for TensorRT, u8s8 for ONNX Runtime) with `excluded` nodes left in FP32."""
    from bertbuild.precision.calibration import load_calibration
    from bertbuild.precision.int8 import quantize_int8

    ranges = load_calibration(calibration["cache_path"])
    return quantize_int8(onnx_path, out_dir, ranges, Int8Config(**int8_cfg), excluded).to_json()


@task(name="rank-int8-sensitivity")
def rank_int8_sensitivity(onnx_path: str, calibration: dict, checkpoint_dir: str, lower_case: bool | None,
                          dataset: str, int8_cfg: dict, variant: str, batches: int,
                          threads: int | None) -> list[tuple[str, float]]:
    """(node, noise-to-signal) for every INT8 MatMul, most sensitive first."""
    from bertbuild.precision.calibration import load_calibration
    from bertbuild.precision.sensitivity import rank_sensitivity

    cfg = Int8Config(**int8_cfg)
    ranked = rank_sensitivity(onnx_path, load_calibration(calibration["cache_path"]),
                              _samples(checkpoint_dir, lower_case, cfg, dataset), variant, batches,
                              cfg.batch_size, threads)
    return [(s.node, s.noise_to_signal) for s in ranked]
