"""The `choose-int8` subflow: calibrate, quantize and pick the INT8 file on the tune split alone.

    calibrate (train-half windows) -> quantize every MatMul -> judge on the tune split
    short of `precision.tune.min_answer_agreement`: rank nodes by sensitivity ->
        quantize with the worst returned to FP32 -> judge -> ... -> keep the fastest that passes
    on a runtime that chooses the float parts (OpenVINO): judge the kept file with BF16 float
        parts too; keep BF16 if it still passes (`engines.int8_float_parts: auto`), else FP32

Every judgement runs on the run's backend, as its engine will compute.

No held-out question is read here: the flow scores the chosen file on held-out
questions once, afterwards. A fallback that cannot run (disabled, a zero
budget, nothing to rank) or that finds no passing try ends as the named gate
`tune_answer_agreement`, never as a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger

from bertbuild.config import BuildConfig
from bertbuild.evaluation.gates import GateResult
from bertbuild.precision.fallback import exclusion_schedule, run_fallback
from bertbuild.runs import RunContext
from bertbuild.step_results import Int8Variants, OnnxFile, RangesFile, TuneSplit
from bertbuild.tasks.model import ModelInfo
from bertbuild.tasks.precision import (calibrate_int8, int8_onnx, prepare_int8_source, rank_int8_sensitivity, tune_try,
                                       tune_windows)


@dataclass(frozen=True)
class Int8Choice:
    """The INT8 file kept on the tune split, and how it was chosen."""

    written: Int8Variants  # the kept files, every variant's ("s8s8", "u8s8", "ort"), quantized and excluded nodes
    calibration: RangesFile
    tune: TuneSplit
    report: dict  # the plain try, the fallback, the float parts: results.json's `int8_choice`
    gate: GateResult  # `tune_answer_agreement`, decided here, judged with the engine's other gates
    float_parts: str | None  # the INT8 engine's float precision where the runtime chooses it (OpenVINO)


@flow(name="choose-int8")
def choose_int8(fused: OnnxFile, model: ModelInfo, cfg: BuildConfig, run: RunContext, variant: str,
                engine: str) -> Int8Choice:
    """The INT8 file chosen on the tune split (`Int8Choice`).

    `cfg.engines.backend` must be a concrete backend (the flow resolves `auto` first).
    """
    logger = get_run_logger()
    precision, threads, backend = cfg.precision, cfg.engines.threads, cfg.engines.backend
    choosing = chooses_float_parts(backend)
    int8_cfg, dataset = precision.int8, cfg.eval.dataset
    external = cfg.export.external_data  # how every written file keeps its weights (None: as its input)
    bucket = cfg.eval.length_bucket  # every pass over SQuAD here is batched as scoring batches
    source = prepare_int8_source(fused, model, int8_cfg, dataset, run, threads, external,
                                 length_bucket=bucket)  # smoothed / outlier-split
    calibration = calibrate_int8(source, model, int8_cfg, dataset, run, threads, length_bucket=bucket)
    tune = tune_windows(model, precision.tune, calibration, cfg.eval, run)
    written: dict[str, Int8Variants] = {}

    def quantize(excluded: list[str]) -> str:
        result = int8_onnx(source, calibration, model, int8_cfg, dataset, excluded, run, threads, external,
                           length_bucket=bucket)
        written[result.paths[variant]] = result
        return result.paths[variant]

    def judge(path: str, float_parts: str | None = "fp32" if choosing else None) -> dict:
        return tune_try(path, tune, fused.path, cfg.eval.batch_size, cfg.benchmark, run, threads,
                        length_bucket=bucket, backend=backend, float_parts=float_parts)

    def passes(metrics: dict) -> bool:
        return metrics["answer_agreement"] >= precision.tune.min_answer_agreement

    plain = quantize([])
    first = judge(plain)
    logger.info("int8 on the tune split (%d train-half questions): answer agreement with FP32 %.2f%%",
                first["questions"], 100 * first["answer_agreement"])
    report = {"plain": first, "fallback": None}
    kept, best = plain, first
    if not passes(first) and precision.fallback.enabled:
        ranking = [node for node, _ in rank_int8_sensitivity(
            source, calibration, model, int8_cfg, dataset, "u8s8" if variant == "ort" else variant,
            precision.fallback.sensitivity_batches, run, threads, length_bucket=bucket)]
        if exclusion_schedule(ranking, precision.fallback):
            fallback = run_fallback(quantize, judge, passes, ranking, precision.fallback)
            report["fallback"] = {**fallback.to_json(), "pareto": [
                {"excluded": len(s.excluded), "answer_agreement": s.metrics["answer_agreement"],
                 "p50_ms": s.metrics["p50_ms"], "passed": s.passed}
                for s in fallback.pareto("answer_agreement", "p50_ms")]}
            kept = fallback.final_path
            best = next(s.metrics for s in fallback.steps if s.path == kept)
            logger.info("int8 fallback: kept %d node(s) in FP32, agreement %.2f%%, %s", len(fallback.final_excluded),
                        100 * best["answer_agreement"], "passed" if fallback.passed else "still short")
        else:
            report["fallback"] = {"skipped": f"the budget allows no try (max_tries {precision.fallback.max_tries}, "
                                             f"max_nodes {precision.fallback.max_nodes}, {len(ranking)} ranked nodes)"}
    float_parts = None
    if choosing:
        float_parts, best, report["float_parts"] = _float_parts(kept, best, judge, passes, backend,
                                                                cfg.engines.int8_float_parts)
        logger.info("int8 float parts on %s: %s (%s)", backend, float_parts, report["float_parts"]["why"])
    gate = GateResult(engine, "tune_answer_agreement", best["answer_agreement"],
                      precision.tune.min_answer_agreement, passes(best), "min")
    return Int8Choice(written=written[kept], calibration=calibration, tune=tune, report=report, gate=gate,
                      float_parts=float_parts)


def chooses_float_parts(backend: str) -> bool:
    """Whether `backend` runs an INT8 file's float parts at a precision of its choosing (OpenVINO's hint)."""
    return backend == "openvino"


def _float_parts(kept: str, fp32: dict, judge, passes, backend: str, setting: str) -> tuple[str, dict, dict]:
    """(float parts, the kept file's tune metrics with them, the report): BF16 where it runs and passes.

    `fp32`: the kept file judged with FP32 float parts, reported beside the choice either way.
    """
    from bertbuild.backends.registry import get_backend

    report = {"setting": setting, "fp32": fp32}
    if setting == "fp32":
        return "fp32", fp32, {**report, "chosen": "fp32", "why": "engines.int8_float_parts is fp32"}
    ok, why = get_backend(backend).supports("bf16")
    if not ok:
        if setting == "bf16":
            from bertbuild.errors import UserInputError

            raise UserInputError(f"engines.int8_float_parts is bf16, but {why}")
        return "fp32", fp32, {**report, "chosen": "fp32", "why": why}
    bf16 = judge(kept, "bf16")
    report["bf16"] = bf16
    if setting == "bf16" or passes(bf16):
        why = ("engines.int8_float_parts is bf16" if setting == "bf16" else
               f"BF16 float parts keep {100 * bf16['answer_agreement']:.2f}% of FP32's answers on the tune split "
               f"(FP32 float parts: {100 * fp32['answer_agreement']:.2f}%)")
        return "bf16", bf16, {**report, "chosen": "bf16", "why": why}
    return "fp32", fp32, {**report, "chosen": "fp32", "why": f"BF16 float parts fall short on the tune split "
                                                              f"({100 * bf16['answer_agreement']:.2f}%)"}
