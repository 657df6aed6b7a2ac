"""The results table's rows: what the flow's tasks measured, merged into one row per engine.

Pure: the flow hands over what its tasks returned, and the row is the same
whichever runner ran them.
"""

from __future__ import annotations

from bertbuild.evaluation.gates import GateResult
from bertbuild.step_results import EngineResult, Scores

REFERENCE_PRECISION = "fp32 (reference)"


def reference_row(reference: Scores) -> dict:
    """The TensorFlow FP32 row every engine is compared with."""
    return {**reference.model_dump(include={"engine", "exact_match", "f1", "questions", "seconds", "windows_per_s",
                                            "real_tokens_per_s"}), "precision": REFERENCE_PRECISION}


def engine_row(result: EngineResult, reference: Scores) -> dict:
    """One engine's row: accuracy (`score_engine`), parity (`validate_engine`, `compare_with_reference`), speed.

    `windows_per_s` is the scoring pass's rate on the run's windows, batched as
    `eval.length_bucket` says; engines may score side by side, so it is a rate
    under contention. `seq_per_s` and the latencies come from the benchmark,
    which times each engine alone. `compute_precision`: what the engine computes in, as its backend
    reports it (OpenVINO's compiled layers; the file's own types elsewhere), e.g. "int8+bf16".
    """
    scores, timing = result.scores, result.timing
    return {
        "engine": scores.engine, "precision": result.engine.precision,
        "compute_precision": result.engine.compute_precision,
        "exact_match": scores.exact_match, "f1": scores.f1, "f1_drop": round(reference.f1 - scores.f1, 2),
        "delta": result.comparison.delta, "max_abs_dlogit": result.comparison.max_abs_dlogit,
        "argmax_agreement": result.validation.argmax_agreement, "validation_passed": result.validation.passed,
        "questions": scores.questions, "seconds": scores.seconds,
        "windows_per_s": scores.windows_per_s, "real_tokens_per_s": scores.real_tokens_per_s,
        "seq_per_s": timing.sequences_per_s, "p50_ms": timing.p50_ms, "p99_ms": timing.p99_ms,
    }


def with_verdicts(rows: list[dict], gates: list[GateResult]) -> list[dict]:
    """Each engine's row marked PASS or FAIL by every gate that judged it (the reference row has none)."""
    failed = {g.engine for g in gates if not g.passed}
    return [row if row.get("precision") == REFERENCE_PRECISION
            else row | {"gates": "FAIL" if row["engine"] in failed else "PASS"} for row in rows]
