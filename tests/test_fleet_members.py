"""A fleet's members are checked before anything starts; its members' bundles and its previous report are read
back from the store, which is untrusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import judge
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.errors import ConfigError, UserInputError
from bertbuild.fleet.members import load_members
from bertbuild.reporting.fleet_plot import write_fleet_plot
from bertbuild.fleet.report import REPORT_NAME, FleetReport, MemberResult, rows_from_bundle
from bertbuild.fleet.stored import check_fleet_name, find_member_bundle, fleet_store, previous_report


def write_config(directory: Path, name: str, **extra) -> str:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"model": {"source": "generated:tiny", "name": name},
                                    "publish": {"store": str(directory / "store")}, **extra}))
    return str(path)


def test_members_file_is_read_with_labels_overrides_and_stores(tmp_path):
    a, b = write_config(tmp_path, "tiny-a"), write_config(tmp_path, "tiny-b")
    members_file = tmp_path / "fleet.yaml"
    members_file.write_text(yaml.safe_dump({"members": [
        {"config": a}, {"config": b, "label": "b-int8", "overrides": ["engines.precisions=[fp32, int8]"]}]}))
    first, second = load_members(str(members_file))
    assert (first.label, first.model, second.label, second.model) == ("tiny-a", "tiny-a", "b-int8", "tiny-b")
    assert second.config.engines.precisions == ("fp32", "int8")
    # the run gets the path as written (it reads it on its own host) and the overrides
    assert second.parameters("abc123") == {"config": b, "overrides": ["engines.precisions=[fp32, int8]"],
                                           "require_commit": "abc123"}
    assert first.parameters() == {"config": a, "overrides": []}
    assert fleet_store([first, second], None) == str(tmp_path / "store")
    assert [m.label for m in load_members([{"config": a}])] == ["tiny-a"]  # a list works as well as a file


@pytest.mark.parametrize("entries, problem", [
    ([], "members: List should have at least 1 item"),
    ([{"config": "nowhere.yaml"}], "members[0]: nowhere.yaml: config file not found"),
    ([{"config": "A"}, {"config": "A"}], "members[1]: label 'tiny-a' is also members[0]'s"),
    ([{"config": "A", "label": "a/b"}], "members[0]: invalid label 'a/b'"),
    ([{"config": "A", "overrides": ["eval.limit"]}], "members[0]: --set 'eval.limit': expected KEY=VALUE"),
    ([{"config": "A", "overrides": ["evall.limit=3"]}], "evall: unknown key"),
    ([{"config": "A", "overrides": ["publish.enabled=false"]}], "publish.enabled false"),
    ([{"config": "A", "lable": "x"}], "members.0.lable: unknown key"),
])
def test_a_bad_member_stops_the_fleet_with_one_line(tmp_path, entries, problem):
    a = write_config(tmp_path, "tiny-a")
    entries = [{k: (a if v == "A" else v) for k, v in e.items()} for e in entries]
    with pytest.raises(UserInputError) as raised:
        load_members(entries)
    assert problem in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("text, problem", [(None, "members file not found"), ("members: [", "not valid YAML"),
                                           ("- config: x", "expected a mapping")])
def test_a_bad_members_file_is_one_line(tmp_path, text, problem):
    path = tmp_path / "fleet.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=problem):
        load_members(str(path))


def test_the_fleet_needs_one_store_and_a_name_of_its_own(tmp_path):
    a = load_members([{"config": write_config(tmp_path, "tiny-a")}])
    other = tmp_path / "other"
    other.mkdir()
    b = load_members([{"config": write_config(other, "tiny-b")}])
    with pytest.raises(ConfigError, match="members publish to different stores"):
        fleet_store(a + b, None)
    assert fleet_store(a + b, "s3://bucket/fleet") == "s3://bucket/fleet"
    with pytest.raises(ConfigError, match="model name of member"):
        check_fleet_name("tiny-a", a)
    with pytest.raises(UserInputError, match="reserved"):
        check_fleet_name("failed", a)
    assert check_fleet_name("fleet-nightly", a) == "fleet-nightly"


def gate(engine: str, name: str, passed: bool):
    """A gate record as publish_bundle takes it (the one place that knows its shape)."""
    return judge(engine, name, float(passed), 1.0, "min")


def publish_member(store: ArtifactStore, tmp_path: Path, run_id: str, flow_run_id: str, passed: bool) -> None:
    results = tmp_path / "results.json"
    results.write_text("{}")
    rows = [{"engine": "onnxruntime-fp32", "precision": "fp32", "exact_match": 1.0, "f1": 2.0, "p50_ms": 3.0}]
    publish_bundle(store, "tiny-a", run_id, {"results.json": results},
                   {"results": rows, "flow_run_id": flow_run_id},
                   [gate("onnxruntime-fp32", "parity", passed)], passed)


def test_a_members_bundle_is_found_released_or_failed_and_only_if_its_run_made_it(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    publish_member(store, tmp_path, "20260101T020000Z-aaaa0000", "flow-a", True)
    publish_member(store, tmp_path, "20260101T020000Z-bbbb0000", "flow-b", False)
    released = find_member_bundle(store, "tiny-a", "20260101T020000Z-aaaa0000", "flow-a")
    assert released.status == "released" and released.url.endswith("tiny-a/runs/20260101T020000Z-aaaa0000")
    (row,) = rows_from_bundle(released.results, released.gates)
    assert (row.f1, row.p50_ms, row.gates) == (2.0, 3.0, "PASS")
    failed = find_member_bundle(store, "tiny-a", "20260101T020000Z-bbbb0000", "flow-b")
    assert failed.status == "failed" and rows_from_bundle(failed.results, failed.gates)[0].gates == "FAIL"
    assert find_member_bundle(store, "tiny-a", "20260101T020000Z-cccc0000", "flow-c").status == "missing"
    foreign = find_member_bundle(store, "tiny-a", "20260101T020000Z-aaaa0000", "flow-x")
    assert foreign.status == "missing" and "made by flow run flow-a" in foreign.problem
    manifest = Path(store.run_path("tiny-a", "20260101T020000Z-aaaa0000")) / "manifest.json"
    manifest.write_text("{not json")
    broken = find_member_bundle(store, "tiny-a", "20260101T020000Z-aaaa0000", "flow-a")
    assert broken.status == "missing" and "cannot be read" in broken.problem


def fleet_report(run_id: str, f1: float = 2.0) -> FleetReport:
    rows = rows_from_bundle([{"engine": "onnxruntime-fp32", "precision": "fp32", "f1": f1, "p50_ms": 3.0}], [])
    member = MemberResult(label="tiny-a", config="c.yaml", model="tiny-a", flow_run_id="f", flow_run_name="n",
                          state="Completed", message="", worker="worker-a", run_id="r", bundle="released",
                          bundle_url=None, problem="", rows=rows)
    return FleetReport(name="fleet", run_id=run_id, created="2026-01-01T00:00:00Z", members=(member,))


def publish_fleet(store: ArtifactStore, tmp_path: Path, report: FleetReport, passed: bool = True) -> None:
    path = tmp_path / f"{report.run_id}.json"
    path.write_text(report.to_json())
    publish_bundle(store, "fleet", report.run_id, {REPORT_NAME: path}, {}, [gate("m", "released", passed)],
                   passed)


def test_previous_report_is_the_newest_earlier_one_released_or_failed(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    assert previous_report(store, "fleet", "20260105T000000Z-0") == (None, None, "")
    publish_fleet(store, tmp_path, fleet_report("20260101T000000Z-1"))
    publish_fleet(store, tmp_path, fleet_report("20260102T000000Z-2", f1=5.0), passed=False)
    publish_fleet(store, tmp_path, fleet_report("20260109T000000Z-9"))  # later than the run asking
    run_id, report, problem = previous_report(store, "fleet", "20260105T000000Z-0")
    assert (run_id, problem) == ("20260102T000000Z-2", "") and report.members[0].rows[0].f1 == 5.0
    assert previous_report(store, "fleet", "20260102T000000Z-2")[0] == "20260101T000000Z-1"


def test_a_tampered_or_hostile_previous_report_is_not_compared_with(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    publish_fleet(store, tmp_path, fleet_report("20260101T000000Z-1"))
    manifest = store.read_manifest("fleet", "20260101T000000Z-1")
    blob = Path(store.blob_path(manifest.files[REPORT_NAME]["sha256"]))
    original = blob.read_bytes()
    blob.write_bytes(original.replace(b'"f1": 2.0', b'"f1": 9.0'))  # same size, other bytes
    run_id, report, problem = previous_report(store, "fleet", "20260105T000000Z-0")
    assert run_id == "20260101T000000Z-1" and report is None and "checksum mismatch" in problem

    hostile = json.loads(original)
    hostile["members"][0]["rows"][0]["p50_ms"] = "fast"
    publish_fleet_raw = tmp_path / "hostile.json"
    publish_fleet_raw.write_text(json.dumps(hostile))
    publish_bundle(store, "fleet", "20260102T000000Z-2", {REPORT_NAME: publish_fleet_raw}, {}, [], True)
    run_id, report, problem = previous_report(store, "fleet", "20260105T000000Z-0")
    assert run_id == "20260102T000000Z-2" and report is None and "p50_ms" in problem

    other = tmp_path / "other.json"
    other.write_text("{}")
    publish_bundle(store, "fleet", "20260103T000000Z-3", {"other.json": other}, {}, [], True)
    assert previous_report(store, "fleet", "20260105T000000Z-0")[2] == f"its bundle has no {REPORT_NAME}"


def test_the_fleet_plot_is_a_png(tmp_path):
    path = write_fleet_plot(fleet_report("20260101T000000Z-1"), tmp_path / "plots" / "fleet.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 5000


def test_the_nightly_fleet_file_is_valid(monkeypatch):
    """prefect.yaml's build-fleet/fleet-nightly default: every member loads, as the flow would check it."""
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)  # deployments run from the project directory
    spec = yaml.safe_load((root / "prefect.yaml").read_text())
    (fleet,) = [d for d in spec["deployments"] if d["name"] == "fleet-nightly"]
    members = load_members(fleet["parameters"]["members"])
    assert [(m.label, m.model) for m in members] == [
        ("minilm", "minilm-l6-squad"), ("bert-base", "bert-base-ngc"), ("bert-large", "bert-large-ngc")]
    check_fleet_name(fleet["parameters"]["name"], members)
