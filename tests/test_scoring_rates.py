"""Scoring records its own rate, windows/s and real tokens/s, and the run's tables show it."""

from __future__ import annotations

import numpy as np

from bertbuild.evaluation.score import EvalResult


def _result(seconds: float) -> EvalResult:
    empty = np.zeros((0, 8), dtype=np.float32)
    return EvalResult("engine", 50.0, 60.0, 3, seconds, empty, empty, {}, windows=4, real_tokens=100,
                      length_bucket=32)


def test_summary_has_windows_and_real_tokens_per_second():
    summary = _result(2.0).summary()
    assert summary["windows"] == 4 and summary["windows_per_s"] == 2.0 and summary["real_tokens_per_s"] == 50.0
    assert summary["length_bucket"] == 32
    assert _result(0.0).summary()["windows_per_s"] is None  # nothing timed: no rate, not infinity


def test_the_engine_table_and_the_run_report_show_the_scoring_rate():
    from bertbuild.reporting.run_report import results_markdown
    from bertbuild.reporting.run_table import format_table

    row = {"engine": "onnxruntime-fp32", "exact_match": 1.0, "f1": 2.0, "questions": 4, "windows_per_s": 12.34,
           "real_tokens_per_s": 2345.6, "p50_ms": 10.0}
    table = format_table([row])
    assert "eval win/s" in table.splitlines()[0] and "12.3" in table.splitlines()[2]
    published = {"model": "m", "run_id": "r", "released": True, "latest": True, "url": "file:///store/m/runs/r"}
    markdown = results_markdown(published, [row])
    header = next(line for line in markdown.splitlines() if line.startswith("| engine"))
    assert "eval windows/s" in header and "eval real tokens/s" in header
    assert "| 12.3 | 2346 |" in markdown
