"""Prefect tasks of the `build-fleet` flow: wait for the members' runs, read their results, report.

Thin on purpose: what a member's outcome means, the report and its plot are in
`bertbuild/fleet/` (no Prefect there).
"""

from __future__ import annotations

import time
from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bertbuild.errors import UserInputError
from bertbuild.fleet.members import ResolvedMember
from bertbuild.fleet.report import FleetReport, MemberResult, member_problem, rows_from_bundle
from bertbuild.reporting.fleet_markdown import fleet_markdown
from bertbuild.tasks.publish import artifact_key

WORKER_LABEL = "prefect.worker.name"  # the label a Prefect worker puts on each flow run it submits


@task(name="check-deployment", cache_policy=NO_CACHE)
def check_deployment(name: str) -> str:
    """The members' deployment exists on the server: checked before any member starts."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            return str(client.read_deployment_by_name(name).id)
    except ObjectNotFound:
        raise UserInputError(f"deployment {name!r} not found on the Prefect server: run `prefect --no-prompt "
                             f"deploy --all` from the project directory") from None


@task(name="wait-for-members", cache_policy=NO_CACHE)
def wait_for_members(flow_run_ids: list[str], timeout_s: float, poll_s: float) -> list[dict]:
    """Each member's flow run once all have reached a final state, or as they stand after `timeout_s`."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    logger = get_run_logger()
    deadline = time.monotonic() + timeout_s
    wanted = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in flow_run_ids]))
    reported = -1
    with get_client(sync_client=True) as client:
        while True:
            runs = {str(r.id): r for r in client.read_flow_runs(flow_run_filter=wanted, limit=len(flow_run_ids))}
            finished = sum(1 for r in runs.values() if r.state is not None and r.state.is_final())
            if finished != reported:
                logger.info("%d of %d member runs finished", finished, len(flow_run_ids))
                reported = finished
            if finished == len(flow_run_ids) or time.monotonic() >= deadline:
                break
            time.sleep(poll_s)
    return [_run_record(runs.get(i), i) for i in flow_run_ids]


def _run_record(run, flow_run_id: str) -> dict:
    """What the fleet needs of a member's flow run, as plain data."""
    from bertbuild.artifacts.store import make_run_id

    if run is None:  # deleted from the server meanwhile
        return {"id": flow_run_id, "name": "-", "state": "Deleted", "finished": True, "completed": False,
                "message": "the flow run no longer exists on the server", "worker": None, "run_id": None}
    state = run.state
    worker = (run.labels or {}).get(WORKER_LABEL)
    return {
        "id": flow_run_id, "name": run.name,
        "state": state.name if state else "Unknown",
        "finished": bool(state and state.is_final()), "completed": bool(state and state.is_completed()),
        "message": (state.message or "") if state else "",
        "worker": None if worker is None else str(worker),
        # the run id the member's run published under (`tasks.publish.current_run_id` inside that run)
        "run_id": make_run_id(run.expected_start_time, flow_run_id),
    }


@task(name="collect-members", cache_policy=NO_CACHE)
def collect_members(members: list[ResolvedMember], runs: list[dict], timeout_s: float) -> tuple[MemberResult, ...]:
    """Each member's outcome and numbers, read from the bundle its run published in its store."""
    from bertbuild.artifacts.store import ArtifactStore
    from bertbuild.fleet.stored import MemberBundle, find_member_bundle

    results = []
    for member, run in zip(members, runs, strict=True):
        store = ArtifactStore(member.store, **member.storage_options)
        bundle = (find_member_bundle(store, member.model, run["run_id"], run["id"]) if run["run_id"]
                  else MemberBundle("missing", problem="its flow run is gone"))
        problem = member_problem(state=run["state"], finished=run["finished"], completed=run["completed"],
                                 message=run["message"], bundle=bundle.status, bundle_problem=bundle.problem,
                                 store=store.url, timeout_s=timeout_s)
        results.append(MemberResult(
            label=member.label, config=member.member.config, model=member.model, flow_run_id=run["id"],
            flow_run_name=run["name"], state=run["state"], message=run["message"][:4000], worker=run["worker"],
            run_id=run["run_id"] or "-", bundle=bundle.status, bundle_url=bundle.url, problem=problem[:4000],
            rows=rows_from_bundle(bundle.results, bundle.gates)))
    return tuple(results)


@task(name="write-fleet-report", cache_policy=NO_CACHE)
def write_fleet_report(report: FleetReport, run_dir: str) -> dict[str, str]:
    """The report's files in the fleet's run directory: bundle name -> path (JSON, markdown, plot)."""
    from bertbuild.reporting.fleet_plot import write_fleet_plot
    from bertbuild.fleet.report import REPORT_NAME

    out = Path(run_dir)
    plot = write_fleet_plot(report, out / "plots" / "fleet.png")
    (out / REPORT_NAME).write_text(report.to_json())
    (out / "fleet-report.md").write_text(fleet_markdown(report, plot_src="plots/fleet.png"))
    return {REPORT_NAME: str(out / REPORT_NAME), "fleet-report.md": str(out / "fleet-report.md"),
            "plots/fleet.png": str(plot)}


@task(name="fleet-report-artifact", cache_policy=NO_CACHE)
def fleet_report_artifact(report: FleetReport, plot: str, bundle_url: str) -> str:
    """The report as a Prefect markdown artifact, its plot embedded (the UI cannot fetch from the store)."""
    from prefect.artifacts import create_markdown_artifact

    from bertbuild.reporting.run_report import png_data_uri

    markdown = fleet_markdown(report, plot_src=png_data_uri(plot)) + f"\nReport bundle: `{bundle_url}`\n"
    return str(create_markdown_artifact(markdown=markdown, key=artifact_key(report.name, "report"),
                                        description=f"fleet {report.name} run {report.run_id}"))
