"""The `build-fleet` flow: many build-bert runs on the work pool's workers, waited for and reported as one.

    check members (every config, with its overrides) and the deployment   -> nothing starts on a bad entry
    start each member as a run of `build-bert/on-demand` (run_deployment)  -> any worker of the pool, any host
    wait for all of them (bounded)  -> read each one's bundle from the store (shared by every host)
    -> fleet report (JSON, markdown, plot) published to the store and as a Prefect artifact
    -> Failed, naming each member that did not complete with a released bundle

Deployed as `build-fleet/fleet-nightly` (prefect.yaml). Prefect names a
deployment `<flow name>/<deployment name>`, so a flow of its own cannot be
`build-bert/...`: that prefix belongs to the build-bert flow.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.states import Failed
from pydantic import Field

from bertbuild.artifacts.store import ArtifactStore
from bertbuild.evaluation.gates import judge
from bertbuild.errors import FleetFailed
from bertbuild.fleet.members import FleetMember, load_members
from bertbuild.fleet.report import FleetReport, compare
from bertbuild.fleet.stored import check_fleet_name, fleet_store, previous_report
from bertbuild.runs import open_run
from bertbuild.tasks.fleet import (check_deployment, collect_members, fleet_report_artifact, wait_for_members,
                                   write_fleet_report)
from bertbuild.tasks.publish import current_attempt, current_run_id, publish


@flow(name="build-fleet")
def build_fleet(members: list[FleetMember] | str = "configs/fleets/nightly.yaml",
                deployment: str = "build-bert/on-demand", name: str = "fleet", store: str | None = None,
                output_dir: str = "runs", timeout_s: Annotated[float, Field(gt=0)] = 12 * 3600.0,
                poll_s: Annotated[float, Field(gt=0)] = 10.0, require_commit: str | None = None) -> dict:
    """Build every member on the pool's workers, then publish one report of them all; returns its summary.

    `members`: a members file (YAML, `members:` list) or the list itself; `deployment`: the build-bert
    deployment each member runs as; `name`: the fleet's name in the store and the artifact key;
    `store`: where the report goes (default: the store the members publish to); `timeout_s`: how long
    to wait for the members; `require_commit`: passed to every member (see build-bert).
    """
    logger = get_run_logger()
    resolved = load_members(members)
    location = fleet_store(resolved, store)
    check_fleet_name(name, resolved)
    check_deployment(deployment)
    run_id = current_run_id()
    run = open_run(output_dir, name, run_id, cache_enabled=False, attempt=current_attempt())

    started = [run_deployment(name=deployment, parameters=member.parameters(require_commit), timeout=0,
                              flow_run_name=f"{name}-{member.label}") for member in resolved]
    for member, flow_run in zip(resolved, started):
        logger.info("member %s: flow run %s (%s)", member.label, flow_run.name, flow_run.id)
    runs = wait_for_members([str(r.id) for r in started], timeout_s, poll_s)
    results = collect_members(resolved, runs, timeout_s)

    options = {} if store else resolved[0].storage_options  # the members' own store: reached as they reach it
    previous_id, previous, problem = previous_report(ArtifactStore(location, **options), name, run_id)
    report = FleetReport(name=name, run_id=run_id, created=_now(), members=results, previous_run_id=previous_id,
                         previous_problem=problem, changes=compare(results, previous))
    files = write_fleet_report(report, str(run.run_dir))
    gates = [judge(m.label, "released", float(m.ok), 1.0, "min", detail=m.problem or m.state) for m in results]
    published = publish(location, name, files, {"deployment": deployment, "members": [m.label for m in results]},
                        gates, passed=report.passed, run_id=run_id, storage_options=options)
    fleet_report_artifact(report, files["plots/fleet.png"], published["url"])
    logger.info("fleet report %s\n%s", published["url"], (run.run_dir / "fleet-report.md").read_text())
    summary = {"name": name, "run_id": run_id, "passed": report.passed, "bundle": published["url"],
               "members": [m.model_dump(mode="json") for m in results]}
    if not report.passed:  # a verdict, not a crash: Failed without a traceback, as a failed gate ends build-bert
        failed = FleetFailed(f"fleet {name}: {len(report.failures)} of {len(results)} member(s) failed: "
                             + "; ".join(report.failures))
        return Failed(message=str(failed), data=failed)
    return summary


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
