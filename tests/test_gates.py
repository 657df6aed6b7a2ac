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


def test_engine_gates_add_parity_and_only_this_engines_earlier_gates():
    from bertbuild.evaluation.gates import GateResult, engine_gates, parity_limit
    from bertbuild.evaluation.rows import REFERENCE_PRECISION, with_verdicts

    earlier = [GateResult("onnxruntime-int8", "tune_answer_agreement", 0.8, 0.9, False, "min"),
               GateResult("onnxruntime-fp16", "tune_answer_agreement", 1.0, 0.9, True, "min")]
    row = _row(max_abs_dlogit=2e-4)
    checks = engine_gates(row, REFERENCE, GateConfig(min_throughput=10), parity_limit("fp32", 1e-4), earlier)
    assert [c.gate for c in checks] == ["throughput_seq_per_s", "polygraphy_parity", "max_abs_dlogit_vs_tensorflow",
                                        "tune_answer_agreement"]  # only this engine's earlier gate
    assert [c.passed for c in checks] == [True, True, False, False]
    reference = {"engine": "tensorflow-fp32", "precision": REFERENCE_PRECISION}
    marked = with_verdicts([reference, row, _row(engine="onnxruntime-fp16")], checks)
    assert [r.get("gates") for r in marked] == [None, "FAIL", "PASS"]


def test_only_the_plain_fp32_export_is_held_to_tensorflows_logits():
    from bertbuild.evaluation.gates import parity_limit

    assert parity_limit("fp32", 5e-4) == 5e-4
    assert [parity_limit(p, 5e-4) for p in ("fused-fp32", "fp16", "int8")] == [None, None, None]


def test_a_gate_record_round_trips_and_a_malformed_one_is_refused():
    from bertbuild.errors import IntegrityError
    from bertbuild.evaluation.gates import GateResult, skipped

    gate = skipped("onnxruntime-int8", "max_f1_drop_vs_latest", 0.5, "max", "first release of tiny")
    assert gate.passed and GateResult.from_json(gate.to_json()) == gate
    assert gate.describe() == "onnxruntime-int8: max_f1_drop_vs_latest skipped: first release of tiny"
    for bad in ({**gate.to_json(), "passed": "yes"}, {**gate.to_json(), "kind": "sideways"},
                {**gate.to_json(), "extra": 1}, ["not", "a", "record"]):
        with pytest.raises(IntegrityError, match="not a gate record"):
            GateResult.from_json(bad)
