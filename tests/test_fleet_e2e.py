"""A fleet end to end on a REAL Prefect server with TWO process workers on the pool.

server (on PostgreSQL) -> pool -> `prefect --no-prompt deploy --all` -> workers `worker-a` and `worker-b` (2 runs at a time
each) -> `prefect deployment run build-fleet/fleet-nightly --param members=<3 tiny configs> --watch`.

The fleet run holds one slot of the worker that took it, so that worker can
take at most one member and the other at most two: the three members must be
spread over both workers. Which worker ran each member is read from the
server (the `prefect.worker.name` label the worker puts on each flow run), not
from the fleet's own report. A second fleet run on the same server has a
member whose parity gate cannot pass: the fleet run fails naming it, the other
member still releases its bundle, and the fleet report is still published.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from prefect_server import Prefect, deployed_server, server_log_checked

from bertbuild.artifacts.store import ArtifactStore
from bertbuild.fleet.report import REPORT_NAME, parse_report

pytestmark = pytest.mark.slow

FLEET = "build-fleet/fleet-nightly"
MEMBER_DEPLOYMENT = "build-bert/on-demand"
NAME = "fleet-e2e"
TIMINGS: dict[str, float] = {}


@pytest.fixture(autouse=True)
def server_log_stays_clean(request):
    yield from server_log_checked(request, "fleet_server")


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory, postgres):
    workers = {name: ["--name", name, "--limit", "2"] for name in ("worker-a", "worker-b")}
    with deployed_server(tmp_path_factory.mktemp("fleet-e2e"), workers, TIMINGS,
                         database=postgres.database("fleet_e2e")) as prefect:
        yield prefect


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """One store, run directory root and step cache for every member of both fleet runs (as on one host)."""
    return tmp_path_factory.mktemp("fleet-shared")


def tiny_config(shared: Path, model: str, precisions: list[str]) -> str:
    raw = {
        "model": {"source": "generated:tiny", "name": model},
        "eval": {"limit": 10, "batch_size": 4},
        "engines": {"precisions": precisions},
        "output_dir": str(shared / "out"),
        "cache": {"dir": str(shared / "cache")},
        "publish": {"store": str(shared / "store")},
        # three builds share two cores: their timings say nothing about a release against the last one
        "regression": {"max_latency_ratio_vs_latest": None},
    }
    path = shared / f"{model}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run_fleet(prefect: Prefect, directory: Path, members: list[dict]):
    members_file = directory / "members.yaml"
    members_file.write_text(yaml.safe_dump({"members": members}))
    args = ["deployment", "run", FLEET, "--watch", "--watch-timeout", "900",
            "--param", f"members={members_file}", "--param", f"name={NAME}", "--param", "poll_s=2",
            "--param", "timeout_s=840", "--param", f"output_dir={directory / 'fleet-out'}"]
    t = time.monotonic()
    result = prefect.cli(*args, timeout=960)
    fleet_run = [r for r in prefect.flow_runs(FLEET) if not r["auto_scheduled"]][-1]  # not tonight's Scheduled
    return result, fleet_run, time.monotonic() - t


def members_of(prefect: Prefect, fleet_run: dict) -> dict[str, dict]:
    """The fleet run's member flow runs, read from the server: flow run name -> flow run."""
    runs = prefect.flow_runs(MEMBER_DEPLOYMENT)
    return {r["name"]: r for r in runs if r["name"].startswith(f"{NAME}-")
            and r["created"] >= fleet_run["created"]}


def fleet_report(shared: Path, failed: bool):
    """The newest fleet report in the store (released or under failed/), checked as any stored report is."""
    store = ArtifactStore(shared / "store")
    run_id = store.runs(NAME, failed=failed)[-1]
    manifest = store.read_manifest(NAME, run_id, failed=failed)
    bundle = store.bundle_path(NAME, run_id, failed=failed)
    read = {name: store.read_bytes(store.content_path(bundle, manifest, name)) for name in manifest.files}
    assert set(read) == {REPORT_NAME, "fleet-report.md", "plots/fleet.png"}
    return parse_report(read[REPORT_NAME], NAME, run_id), read["fleet-report.md"].decode()


def test_fleet_spreads_three_members_over_both_workers_and_reports_them(fleet_server, shared, tmp_path):
    members = [{"config": tiny_config(shared, "tiny-a", ["fp32"])},
               {"config": tiny_config(shared, "tiny-b", ["fp32", "fused-fp32"])},
               {"config": tiny_config(shared, "tiny-a", ["fp32"]), "label": "tiny-c",
                "overrides": ["eval.limit=6", "model.name=tiny-c"]}]
    result, fleet_run, seconds = run_fleet(fleet_server, tmp_path, members)
    TIMINGS["fleet_completed_s"] = seconds
    assert result.returncode == 0, (f"--watch exit {result.returncode}\n{result.stdout[-4000:]}\n"
                                    f"worker-a:\n{fleet_server.log('worker-a')}\nworker-b:\n{fleet_server.log('worker-b')}")
    assert fleet_run["state"]["type"] == "COMPLETED"

    runs = members_of(fleet_server, fleet_run)
    labels = ["tiny-a", "tiny-b", "tiny-c"]
    assert sorted(runs) == sorted(f"{NAME}-{label}" for label in labels)
    assert all(r["state"]["type"] == "COMPLETED" for r in runs.values()), [r["state"] for r in runs.values()]
    worker_of = {name: r["labels"].get("prefect.worker.name") for name, r in runs.items()}
    print("\nmember -> worker:", json.dumps(worker_of))
    assert set(worker_of.values()) == {"worker-a", "worker-b"}, worker_of

    report, markdown = fleet_report(shared, failed=False)
    assert report.passed and [m.label for m in report.members] == labels
    assert {m.label: m.worker for m in report.members} == {k.removeprefix(f"{NAME}-"): v for k, v in worker_of.items()}
    assert {m.label: m.flow_run_id for m in report.members} == {
        k.removeprefix(f"{NAME}-"): r["id"] for k, r in runs.items()}
    by_label = {m.label: m for m in report.members}
    assert [r.precision for r in by_label["tiny-b"].rows] == ["fp32 (reference)", "fp32", "fused-fp32"]
    assert all(m.bundle == "released" and m.rows[1].gates == "PASS" and m.rows[1].speedup == 1.0
               and m.rows[1].delta_f1 is not None for m in report.members)
    assert by_label["tiny-c"].model == "tiny-c" and by_label["tiny-c"].rows[0].exact_match is not None
    assert all(f"| {label} |" in markdown for label in labels)

    artifact = fleet_server.api_call("POST", "/artifacts/latest/filter",
                                     {"artifacts": {"key": {"any_": [f"build-bert-{NAME}-report"]}}})
    assert len(artifact) == 1 and report.run_id in artifact[0]["data"]
    assert "data:image/png;base64," in artifact[0]["data"]
    print(f"\n--- fleet report ({report.run_id}) ---\n{markdown}")


def test_a_failed_member_fails_the_fleet_naming_it_and_the_others_still_publish(fleet_server, shared, tmp_path):
    members = [{"config": tiny_config(shared, "tiny-a", ["fp32"])},
               {"config": tiny_config(shared, "tiny-bad", ["fp32"]), "overrides": ["parity.max_abs_logit=1e-12"]}]
    store = ArtifactStore(shared / "store")
    earlier = sorted({*store.runs(NAME), *store.runs(NAME, failed=True)})
    released_before = len(store.runs("tiny-a"))
    result, fleet_run, seconds = run_fleet(fleet_server, tmp_path, members)
    TIMINGS["fleet_failed_s"] = seconds
    assert result.returncode != 0 and "Failed" in result.stdout, result.stdout[-4000:]
    assert fleet_run["state"]["type"] == "FAILED"
    message = fleet_run["state"]["message"]
    assert "1 of 2 member(s) failed: tiny-bad (Failed:" in message and "tiny-a (" not in message, message

    runs = members_of(fleet_server, fleet_run)
    assert runs[f"{NAME}-tiny-a"]["state"]["type"] == "COMPLETED"
    assert runs[f"{NAME}-tiny-bad"]["state"]["type"] == "FAILED"
    assert len(store.runs("tiny-a")) == released_before + 1  # the passing member released its bundle
    assert store.runs("tiny-bad") == [] and len(store.runs("tiny-bad", failed=True)) == 1

    report, markdown = fleet_report(shared, failed=True)  # a failed fleet's report: published, under failed/
    assert not report.passed and [m.label for m in report.members] == ["tiny-a", "tiny-bad"]
    bad = report.members[1]
    assert bad.bundle == "failed" and bad.state == "Failed" and bad.problem.startswith("Failed:")
    assert bad.rows[1].gates == "FAIL" and "max_abs_dlogit_vs_tensorflow" in bad.rows[1].failed_gates
    assert report.previous_run_id == (earlier[-1] if earlier else None) and not report.previous_problem
    if earlier:  # after the first test: tiny-a is in both fleet runs, so its change is reported
        assert any(c.label == "tiny-a" and c.precision == "fp32" for c in report.changes)
    assert "**FAILED**" in markdown and "| tiny-bad | fp32 |" in markdown
    print(f"\n--- failed fleet report ({report.run_id}) ---\n{markdown}")
