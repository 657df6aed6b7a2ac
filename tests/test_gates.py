"""Gates: each threshold checked, failures named with their margin."""

from __future__ import annotations

import pytest

from bertbuild.config import GateConfig
from bertbuild.errors import GateFailed
from bertbuild.evaluation.gates import check_engine, check_parity, enforce, failures

REFERENCE = {"engine": "tensorflow-fp32", "exact_match": 70.0, "f1": 80.0}


def _row(**values):
    return {"engine": "onnxruntime-int8", "exact_match": 69.0, "f1": 79.4, "argmax_agreement": 0.95,
            "seq_per_s": 20.0, "validation_passed": True} | values


def test_all_pass():
    gates = GateConfig(min_em=60, min_f1=70, max_f1_drop=1.0, max_em_drop=2.0, min_argmax_agreement=0.9,
                       min_throughput=10)
    results = check_engine(_row(), REFERENCE, gates)
    assert len(results) == 7 and not failures(results)
    enforce(results)  # does not raise


def test_f1_drop_fails_with_margin():
    results = check_engine(_row(f1=78.7), REFERENCE, GateConfig(max_f1_drop=1.0))
    (failed,) = failures(results)
    assert failed.gate == "f1_drop_vs_fp32" and failed.measured == pytest.approx(1.3)
    with pytest.raises(GateFailed) as info:
        enforce(results)
    message = str(info.value)
    assert "onnxruntime-int8: f1_drop_vs_fp32 1.3 fails <= 1 (by 0.3)" in message


def test_none_disables_and_validation_gate():
    assert check_engine(_row(), REFERENCE, GateConfig(require_validation=False)) == []
    (parity,) = check_engine(_row(validation_passed=False), REFERENCE, GateConfig())
    assert parity.gate == "polygraphy_parity" and not parity.passed


def test_every_failure_listed():
    results = check_engine(_row(exact_match=10, f1=20, argmax_agreement=0.5), REFERENCE,
                           GateConfig(min_em=60, min_f1=70, min_argmax_agreement=0.9))
    with pytest.raises(GateFailed, match="3 gate\\(s\\) failed") as info:
        enforce(results)
    assert all(g in str(info.value) for g in ("exact_match", "f1 ", "argmax_agreement"))


def test_parity_gate():
    assert check_parity({"engine": "e", "max_abs_dlogit": 5e-5}, 1e-4).passed
    assert not check_parity({"engine": "e", "max_abs_dlogit": 5e-3}, 1e-4).passed


def test_a_drop_judged_on_its_interval_uses_the_worst_end():
    """Point ΔF1 -0.6 passes a 1.0 budget; its interval [-1.8, +0.5] does not rule out a 1.8 drop."""
    delta = {"exact_match": {"delta": -1.0, "low": -2.0, "high": 0.0},
             "f1": {"delta": -0.6, "low": -1.8, "high": 0.5}}
    row = _row(f1=79.4, delta=delta)
    point = check_engine(row, REFERENCE, GateConfig(max_f1_drop=1.0))
    assert not failures(point) and point[0].gate == "f1_drop_vs_fp32" and point[0].measured == pytest.approx(0.6)
    interval = check_engine(row, REFERENCE, GateConfig(max_f1_drop=1.0, drop_judged_on="interval"))
    (failed,) = failures(interval)
    assert failed.gate == "f1_drop_vs_fp32_upper95" and failed.measured == pytest.approx(1.8)


def test_finish_row_adds_throughput_parity_and_earlier_gates():
    from bertbuild.evaluation.gates import GateResult, finish_row

    earlier = [GateResult("onnxruntime-int8", "tune_answer_agreement", 0.8, 0.9, False, "min").to_json(),
               GateResult("onnxruntime-fp16", "tune_answer_agreement", 1.0, 0.9, True, "min").to_json()]
    row = _row(max_abs_dlogit=2e-4)
    finished, checks = finish_row(row, REFERENCE, GateConfig(min_throughput=10), [], 1e-4, earlier)
    assert [c["gate"] for c in checks] == ["throughput_seq_per_s", "max_abs_dlogit_vs_tensorflow",
                                           "tune_answer_agreement"]  # only this engine's earlier gate
    assert finished["gates"] == "FAIL" and [c["passed"] for c in checks] == [True, False, False]
    ok, _ = finish_row(_row(max_abs_dlogit=5e-5), REFERENCE, GateConfig(min_throughput=10), [], 1e-4, [])
    assert ok["gates"] == "PASS"


def test_a_configured_gate_with_nothing_measured_fails_naming_it():
    row = _row()
    del row["argmax_agreement"], row["seq_per_s"], row["validation_passed"]
    results = check_engine(row, REFERENCE, GateConfig(min_argmax_agreement=0.9, min_throughput=10))
    assert {r.gate for r in failures(results)} == {"argmax_agreement", "throughput_seq_per_s", "polygraphy_parity"}
    with pytest.raises(GateFailed) as info:
        enforce(results)
    assert "onnxruntime-int8: argmax_agreement was not measured (gate >= 0.9)" in str(info.value)
    assert not check_parity({"engine": "e", "max_abs_dlogit": None}, 1e-4).passed
