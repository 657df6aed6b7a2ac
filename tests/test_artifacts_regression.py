"""Regression report against the last release: deltas, answer agreement, latency on like hosts, gates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertbuild.host import hardware, package_versions
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.artifacts.layout import REGRESSION as REGRESSION_NAME
from bertbuild.artifacts.regression import F1_GATE, LATENCY_GATE, compare_with_latest, latest_snapshot
from bertbuild.evaluation.gates import GateResult
from bertbuild.errors import IntegrityError
from bertbuild.hashing import sha256_file
from bertbuild.host import host_kind
from bertbuild.reporting.regression_markdown import regression_markdown
from bundlefiles import write_files

LATEST_ANSWERS = {"q1": "Denver Broncos", "q2": "1990", "q3": "Santa Clara", "q4": "gold"}
INT8_ANSWERS = {**LATEST_ANSWERS, "q4": "gold medal"}  # its own blob, not shared with the fp32 predictions


def result_rows(int8_f1: float = 86.0, int8_p50: float | None = 5.0) -> list[dict]:
    return [
        {"engine": "tensorflow-fp32", "precision": "fp32 (reference)", "exact_match": 80.0, "f1": 88.0,
         "p50_ms": None, "questions": 4},
        {"engine": "onnxruntime-fp32", "precision": "fp32", "exact_match": 80.0, "f1": 88.0, "p50_ms": 10.0,
         "questions": 4},
        {"engine": "onnxruntime-int8", "precision": "int8", "exact_match": int8_f1 - 8, "f1": int8_f1,
         "p50_ms": int8_p50, "questions": 4},
    ]


def write_bundle(directory: Path, int8_bytes: bytes = b"int8 v1", int8_answers: dict | None = None,
                 rows: list[dict] | None = None) -> dict[str, Path]:
    contents = {
        "model-fp32.onnx": b"fp32 v1",
        "model-int8.onnx": int8_bytes,
        "engines/int8/bert.plan": b"plan " + int8_bytes,
        "predictions-tensorflow-fp32.json": json.dumps(LATEST_ANSWERS).encode(),
        "predictions-onnxruntime-fp32.json": json.dumps(LATEST_ANSWERS).encode(),
        "predictions-onnxruntime-int8.json": json.dumps(int8_answers or INT8_ANSWERS).encode(),
        "results.json": json.dumps({"results": rows or result_rows()}).encode(),
    }
    return write_files(directory, contents)


@pytest.fixture
def released(store, tmp_path):
    """A store whose `latest` is a release with results, predictions and this host's hardware."""
    publish_bundle(store, "tiny", "r1", write_bundle(tmp_path / "r1"), {"results": result_rows()},
                   [GateResult("onnxruntime-fp32", "parity", 1e-6, 1e-4, True, "max")], True)
    return store


def by_precision(report) -> dict[str, dict]:
    return {row["precision"]: row for row in report.precisions}


def gates_by_name(report) -> dict[str, GateResult]:
    return {g.name: g for g in report.gates}


def test_first_release_skips_both_gates(store, tmp_path):
    report = compare_with_latest(store, "tiny", result_rows(), write_bundle(tmp_path / "run"))
    assert report.latest_run_id is None and report.passed and report.precisions == []
    engines = [row["engine"] for row in result_rows()]
    assert [(g.name, g.passed, g.measured) for g in report.gates] == [
        *((f"{e}:{F1_GATE}", True, None) for e in engines), *((f"{e}:{LATENCY_GATE}", True, None) for e in engines)]
    assert all(g.skipped == "first release of tiny" for g in report.gates)
    assert json.loads(report.to_json())["latest_run_id"] is None
    assert "No earlier release of `tiny`" in regression_markdown(report)


def test_an_identical_rebuild_passes_with_zero_deltas(released, tmp_path):
    report = compare_with_latest(released, "tiny", result_rows(), write_bundle(tmp_path / "run"))
    assert report.latest_run_id == "r1" and report.same_host and report.passed
    int8 = by_precision(report)["int8"]
    assert (int8["em_delta"], int8["f1_delta"], int8["answer_agreement"], int8["p50_ratio"]) == (0, 0, 1.0, 1.0)
    assert report.files == {"changed": [], "added": [], "removed": [], "unchanged": 3} and report.versions == {}
    assert by_precision(report)["fp32 (reference)"]["latency_note"] == "not compared: no p50 in one of the runs"
    reference_latency = gates_by_name(report)[f"tensorflow-fp32:{LATENCY_GATE}"]
    assert reference_latency.passed and reference_latency.skipped == "no p50 in one of the runs"
    assert gates_by_name(report)[f"onnxruntime-int8:{F1_GATE}"].measured == 0.0


def test_a_worse_build_breaks_the_f1_gate(released, tmp_path):
    answers = {**INT8_ANSWERS, "q2": "1991"}
    files = write_bundle(tmp_path / "run", b"int8 v2", answers, result_rows(int8_f1=85.1))
    report = compare_with_latest(released, "tiny", result_rows(int8_f1=85.1), files)
    int8 = by_precision(report)["int8"]
    assert int8["f1_delta"] == pytest.approx(-0.9) and int8["em_delta"] == pytest.approx(-0.9)
    assert int8["answer_agreement"] == 0.75 and int8["answers_compared"] == 4
    gate = gates_by_name(report)[f"onnxruntime-int8:{F1_GATE}"]
    assert not gate.passed and gate.measured == pytest.approx(0.9) and gate.threshold == 0.5
    assert "F1 85.10 vs 86.00 in r1" == gate.detail and "fails <= 0.5 (by 0.4)" in gate.describe()
    assert gates_by_name(report)[f"onnxruntime-fp32:{F1_GATE}"].passed and not report.passed
    assert "**FAILED**" in regression_markdown(report)
    assert f"| onnxruntime-int8:{F1_GATE} | **FAIL** |" in regression_markdown(report)


def test_slower_on_the_same_host_breaks_the_latency_gate(released, tmp_path):
    report = compare_with_latest(released, "tiny", result_rows(int8_p50=6.0), write_bundle(tmp_path / "run"))
    assert report.same_host and by_precision(report)["int8"]["p50_ratio"] == 1.2
    gate = gates_by_name(report)[f"onnxruntime-int8:{LATENCY_GATE}"]
    assert not gate.passed and gate.measured == 1.2 and gate.threshold == 1.15
    assert gates_by_name(report)[f"onnxruntime-fp32:{LATENCY_GATE}"].passed
    assert not report.passed
    relaxed = compare_with_latest(released, "tiny", result_rows(int8_p50=6.0), write_bundle(tmp_path / "run2"),
                                  max_latency_ratio=1.25)
    assert relaxed.passed


def test_a_different_host_skips_latency_but_still_compares_accuracy(released, tmp_path):
    other = {**hardware(), "gpus": [{"name": "NVIDIA H200", "memory_bytes": 1, "driver": "1"}]}
    report = compare_with_latest(released, "tiny", result_rows(int8_f1=85.0, int8_p50=50.0),
                                 write_bundle(tmp_path / "run"), hardware=other)
    assert report.same_host is False and report.host["gpus"] == ["NVIDIA H200"]
    int8 = by_precision(report)["int8"]
    assert int8["p50_ratio"] is None and int8["latency_note"] == "not compared: different host"
    latency = [g for g in report.gates if g.gate == LATENCY_GATE]
    assert latency == [GateResult(row["engine"], LATENCY_GATE, None, 1.15, True, "max",
                                  skipped="latest was measured on a different host") for row in result_rows()]
    assert not gates_by_name(report)[f"onnxruntime-int8:{F1_GATE}"].passed  # a 1.0 F1 drop still fails
    assert "Different host" in regression_markdown(report)


def test_changed_hashes_and_versions_are_listed(released, tmp_path):
    files = write_bundle(tmp_path / "run", b"int8 v2")
    files.pop("model-fp32.onnx")
    files["model-fp16.onnx"] = tmp_path / "fp16.onnx"
    files["model-fp16.onnx"].write_bytes(b"fp16")
    versions = {**package_versions(), "onnxruntime": "9.9.9", "tensorrt": "10.0.1"}
    report = compare_with_latest(released, "tiny", result_rows(), files, versions=versions)
    assert report.files == {"changed": ["engines/int8/bert.plan", "model-int8.onnx"], "added": ["model-fp16.onnx"],
                            "removed": ["model-fp32.onnx"], "unchanged": 0}
    assert report.versions == {"onnxruntime": {"latest": package_versions()["onnxruntime"], "current": "9.9.9"},
                               "tensorrt": {"latest": package_versions()["tensorrt"], "current": "10.0.1"}}
    markdown = regression_markdown(report)
    assert "`engines/int8/bert.plan`, `model-int8.onnx`" in markdown and "-> 9.9.9" in markdown


def test_new_and_missing_precisions_are_reported_not_gated(released, tmp_path):
    rows = [r for r in result_rows() if r["precision"] != "int8"]
    rows.append({"engine": "onnxruntime-fp16", "precision": "fp16", "exact_match": 1.0, "f1": 2.0})
    report = compare_with_latest(released, "tiny", rows, write_bundle(tmp_path / "run"))
    assert by_precision(report)["int8"]["status"] == "missing" and by_precision(report)["fp16"]["status"] == "new"
    assert not [g for g in report.gates if g.engine in ("onnxruntime-int8", "onnxruntime-fp16")]
    assert "**missing** in this run" in regression_markdown(report)


def test_unavailable_latest_predictions_are_reported(released, tmp_path):
    manifest = released.read_manifest("tiny", "r1")
    blob = released.blob_path(manifest.files["predictions-onnxruntime-int8.json"]["sha256"])
    released.write_atomic(blob, b'{"q1": "tampered"}')
    report = compare_with_latest(released, "tiny", result_rows(), write_bundle(tmp_path / "run"))
    int8 = by_precision(report)["int8"]
    assert int8["answer_agreement"] is None and "does not match its sha256" in int8["answer_note"]
    assert by_precision(report)["fp32"]["answer_agreement"] == 1.0
    released.remove_tree(blob)
    assert "absent from the store" in latest_snapshot(released, "tiny").missing_predictions["onnxruntime-int8"]


def test_a_dangling_latest_pointer_is_an_integrity_error(store, tmp_path):
    store.set_latest("tiny", "gone")
    with pytest.raises(IntegrityError, match="latest names run gone"):
        compare_with_latest(store, "tiny", result_rows(), write_bundle(tmp_path / "run"))


def test_disabled_gates(released, tmp_path):
    report = compare_with_latest(released, "tiny", result_rows(int8_f1=80.0, int8_p50=9.0),
                                 write_bundle(tmp_path / "run"), max_f1_drop=None, max_latency_ratio=None)
    assert report.passed and [g.skipped for g in report.gates] == ["disabled"] * 2 * len(result_rows())


def test_host_kind_ignores_what_does_not_change_timings():
    a = {"cpu": "Xeon", "cores": 16, "ram_bytes": 1, "platform": "x", "gpus": [{"name": "B", "driver": "1"},
                                                                                {"name": "A", "driver": "1"}]}
    b = {**a, "ram_bytes": 2, "platform": "y", "gpus": [{"name": "A", "driver": "2"}, {"name": "B", "driver": "2"}]}
    assert host_kind(a) == host_kind(b) == {"cpu": "Xeon", "cores": 16, "gpus": ["A", "B"]}
    assert host_kind({**a, "cores": 8}) != host_kind(a) and host_kind("garbage")["cpu"] == "unknown"


def test_a_broken_regression_gate_publishes_nothing_released(released, tmp_path):
    """How the flow uses it: regression gates join the others, regression.json rides in the bundle."""
    files = write_bundle(tmp_path / "run", b"int8 v2", rows=result_rows(int8_f1=84.0))
    report = compare_with_latest(released, "tiny", result_rows(int8_f1=84.0), files)
    (tmp_path / REGRESSION_NAME).write_text(report.to_json())
    result = publish_bundle(released, "tiny", "r2", {**files, REGRESSION_NAME: tmp_path / REGRESSION_NAME},
                            {"results": result_rows(int8_f1=84.0)}, [GateResult("onnxruntime-fp32", "parity", 1e-6, 1e-4, True, "max"),
                                                                        *report.gates], True)
    assert not result.released and released.latest("tiny") == "r1" and released.runs("tiny") == ["r1"]
    failed = released.read_manifest("tiny", "r2", failed=True)
    assert REGRESSION_NAME in failed.files and "model-int8.onnx" not in failed.files
    assert sha256_file(tmp_path / REGRESSION_NAME) == failed.files[REGRESSION_NAME]["sha256"]


def test_f1_over_other_questions_is_not_judged_against_latest(released, tmp_path):
    """A nightly over every held-out question against a 200-question demo release: its F1 says nothing of a trend."""
    answers = {"q1": "Denver Broncos", "q9": "elsewhere"}  # one question in common with the release's four
    files = write_bundle(tmp_path / "run", b"int8 v2", answers, result_rows(int8_f1=70.0))
    report = compare_with_latest(released, "tiny", result_rows(int8_f1=70.0), files)
    gate = gates_by_name(report)[f"onnxruntime-int8:{F1_GATE}"]
    assert gate.skipped and "scored on other questions: 1 questions in common (2 vs 4)" in gate.skipped
