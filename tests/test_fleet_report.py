"""The fleet report's pure logic: rows from a member's manifest, the change against the previous run, and
refusing a hostile previous report."""

from __future__ import annotations

import json

import pytest

from bertbuild.errors import IntegrityError
from bertbuild.evaluation.gates import GateResult
from bertbuild.fleet.report import FleetReport, MemberResult, compare, member_problem, parse_report, rows_from_bundle
from bertbuild.reporting.fleet_markdown import fleet_markdown


def manifest_rows(f1_int8: float = 86.0, p50_int8: float = 5.0) -> list[dict]:
    """`meta.results` as build-bert publishes it: the TF reference first, then each engine."""
    return [
        {"engine": "tensorflow-fp32", "precision": "fp32 (reference)", "exact_match": 80.0, "f1": 88.0},
        {"engine": "onnxruntime-fp32", "precision": "fp32", "exact_match": 80.0, "f1": 88.0, "p50_ms": 20.0,
         "delta": {"f1": {"delta": 0.0, "low": 0.0, "high": 0.0, "standard_error": 0.0}}, "gates": "PASS"},
        {"engine": "onnxruntime-int8", "precision": "int8", "exact_match": 78.0, "f1": f1_int8, "p50_ms": p50_int8,
         "delta": {"f1": {"delta": f1_int8 - 88.0, "low": -3.1, "high": 0.4}}, "gates": "PASS"},
    ]


GATES = [
    GateResult("onnxruntime-fp32", "max_abs_dlogit_vs_tensorflow", 1e-5, 5e-4, True, "max"),
    GateResult("onnxruntime-int8", "f1_drop_vs_fp32", 2.0, 2.5, True, "max"),
    GateResult("onnxruntime-int8", "max_f1_drop_vs_latest", 0.9, 0.5, False, "max"),
]


def member(label: str = "tiny-a", model: str = "tiny-a", rows=None, problem: str = "", **extra) -> MemberResult:
    fields = dict(label=label, config=f"configs/{label}.yaml", model=model, flow_run_id=f"id-{label}",
                  flow_run_name=f"fleet-{label}", state="Completed" if not problem else "Failed", message="",
                  worker="worker-a", run_id="20260102T020000Z-aaaa1111",
                  bundle="released" if not problem else "failed", bundle_url=None, problem=problem,
                  rows=rows_from_bundle(manifest_rows(), GATES[:2]) if rows is None else rows)
    return MemberResult(**(fields | extra))


def report(members, run_id: str = "20260102T020000Z-ffff0000", previous: FleetReport | None = None,
           **extra) -> FleetReport:
    members = tuple(members)
    fields = dict(name="fleet-nightly", run_id=run_id, created="2026-01-02T02:00:00Z", members=members,
                  previous_run_id=previous.run_id if previous else None, changes=compare(members, previous))
    return FleetReport(**(fields | extra))


def test_rows_carry_delta_interval_p50_speedup_and_the_manifests_gates():
    rows = rows_from_bundle(manifest_rows(), GATES)
    assert [r.precision for r in rows] == ["fp32 (reference)", "fp32", "int8"]
    reference, fp32, int8 = rows
    assert reference.gates == "-" and reference.delta_f1 is None and reference.speedup is None
    assert fp32.speedup == 1.0 and fp32.gates == "PASS"
    assert int8.speedup == 4.0  # 20 ms / 5 ms
    assert (int8.delta_f1.delta, int8.delta_f1.low, int8.delta_f1.high) == (-2.0, -3.1, 0.4)
    # the regression gate failed in the manifest although the row itself was marked PASS before it ran
    assert int8.gates == "FAIL" and int8.failed_gates == ("max_f1_drop_vs_latest",)


def test_rows_from_a_hostile_manifest_keep_only_what_checks_out():
    hostile = [
        "not a row", {"precision": ""}, {"engine": "x"},
        {"engine": "e|1", "precision": "fp16", "exact_match": "80", "f1": float("nan"), "p50_ms": True,
         "delta": {"f1": {"delta": "bad", "low": 0, "high": 1}}},
    ]
    (row,) = rows_from_bundle(hostile, [GateResult("e|1", "g", None, 1.0, False, "min")])
    assert (row.exact_match, row.f1, row.p50_ms, row.delta_f1, row.speedup) == (None, None, None, None, None)
    assert row.gates == "FAIL" and row.failed_gates == ("g",)
    assert rows_from_bundle({"results": 1}) == () and rows_from_bundle(None) == ()


def test_change_against_the_previous_run_matches_member_model_and_precision():
    before = report([member(rows=rows_from_bundle(manifest_rows(86.0, 5.0), GATES[:2])),
                     member("gone", "gone")], run_id="20260101T020000Z-eeee0000")
    now_members = [member(rows=rows_from_bundle(manifest_rows(85.5, 6.0), GATES[:2])),
                   member("renamed-model", "other"), member("new", "new")]
    changes = {(c.label, c.precision): c for c in compare(tuple(now_members), before)}
    assert set(changes) == {("tiny-a", "fp32 (reference)"), ("tiny-a", "fp32"), ("tiny-a", "int8")}
    int8 = changes[("tiny-a", "int8")]
    assert int8.f1 == pytest.approx(-0.5) and int8.exact_match == 0.0 and int8.p50_ratio == pytest.approx(1.2)
    assert changes[("tiny-a", "fp32 (reference)")].p50_ratio is None
    assert compare(tuple(now_members), None) == ()


def test_report_round_trips_and_its_markdown_lists_every_member():
    ok, failed = member(), member("tiny-b", "tiny-b", rows=(), problem="Failed: gate max_abs_dlogit | failed")
    first = report([ok], run_id="20260101T020000Z-eeee0000")
    current = report([ok, failed], previous=first)
    assert not current.passed and current.failures == ["tiny-b (Failed: gate max_abs_dlogit | failed)"]
    assert parse_report(current.to_json().encode(), "fleet-nightly", current.run_id) == current
    text = fleet_markdown(current, plot_src="plots/fleet.png")
    assert "1 of 2 members released: **FAILED**: tiny-b (Failed: gate max_abs_dlogit \\| failed)" in text
    assert "| tiny-a | int8 | onnxruntime-int8 | 78.00 | 86.00 | -2.00 [-3.10, +0.40] | 5.0 | 4.00x | PASS |" in text
    assert "| tiny-b | - |" in text and "gate max_abs_dlogit \\| failed" in text  # a pipe cannot break the table
    assert f"Against run `{first.run_id}`" in text and "| tiny-a | int8 | +0.00 | +0.00 | 1.00x |" in text
    assert text.rstrip().endswith("(plots/fleet.png)")
    assert "nothing to compare with" in fleet_markdown(first) and "\n1 of 1 members released.\n" in fleet_markdown(first)
    unreadable = report([ok], previous_run_id="20251231T020000Z-dddd0000", previous_problem="checksum mismatch")
    assert "could not be compared with: checksum mismatch" in fleet_markdown(unreadable)


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d.update(kind="something-else"), "kind"),
    (lambda d: d.update(schema=2), "schema"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["members"][0].update(label="../../etc"), "members.0.label"),
    (lambda d: d["members"][0]["rows"][0].update(f1="88"), "f1"),
    (lambda d: d["members"][0]["rows"][0].update(f1=True), "f1"),
    (lambda d: d["members"][0]["rows"][0].update(gates="MAYBE"), "gates"),
    (lambda d: d["members"][0].update(rows={"a": 1}), "rows"),
    (lambda d: d.update(members="all"), "members"),
    (lambda d: d["members"][0].update(message="x" * 5000), "message"),
    (lambda d: d.update(run_id="20260101T020000Z-other"), "describes run"),
    (lambda d: d.update(name="another-fleet"), "describes run"),
])
def test_a_hostile_previous_report_is_refused_with_one_line(mutate, problem):
    good = report([member()], run_id="20260101T020000Z-eeee0000")
    data = json.loads(good.to_json())
    mutate(data)
    with pytest.raises(IntegrityError) as raised:
        parse_report(json.dumps(data).encode(), "fleet-nightly", "20260101T020000Z-eeee0000")
    message = str(raised.value)
    assert problem in message and "\n" not in message


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"f1": NaN}', b"\xff\xfe", b" " * (9 * 1024 * 1024)])
def test_previous_report_that_is_not_even_json_is_refused(data):
    with pytest.raises(IntegrityError, match="fleet-report.json of run r1"):
        parse_report(data, "fleet-nightly", "r1")


def test_nan_in_a_previous_report_is_refused():
    data = report([member()], run_id="r1").to_json().replace('"f1": 88.0', '"f1": NaN', 1)
    with pytest.raises(IntegrityError, match="finite"):
        parse_report(data.encode(), "fleet-nightly", "r1")


def test_member_problem_names_why_a_member_fails_the_fleet():
    base = dict(state="Completed", finished=True, completed=True, message="", bundle="released",
                bundle_problem="", store="s3://b/p", timeout_s=60)
    assert member_problem(**base) == ""
    assert member_problem(**base | {"state": "Running", "finished": False, "completed": False}) == \
        "still Running after 60 s"
    assert member_problem(**base | {"state": "Failed", "completed": False,
                                    "message": "gate\nparity failed"}) == "Failed: gate parity failed"
    assert "published under failed/" in member_problem(**base | {"bundle": "failed"})
    assert "no bundle of its run in s3://b/p: is that store shared" in member_problem(**base | {"bundle": "missing"})
