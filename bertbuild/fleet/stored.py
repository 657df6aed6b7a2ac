"""A fleet in the artifact store: its members' bundles, and its own reports.

The store is what every host shares, so a fleet reads each member's numbers
from the manifest that member's run published (released, or under `failed/`),
never from the worker's local disk. The fleet report is itself published as a
bundle of report files under the fleet's name (`<name>/runs/<run id>/`, or
`failed/<name>/...` when a member failed): it gets the store's checksums,
atomic publish, `latest`, `artifacts list`/`download`/`prune` for free, and the
previous report is the newest earlier bundle of that name. No Prefect here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from bertbuild.artifacts.store import ArtifactStore, check_model
from bertbuild.evaluation.gates import GateResult
from bertbuild.errors import BertbuildError, ConfigError
from bertbuild.fleet.members import ResolvedMember
from bertbuild.fleet.report import MAX_REPORT_BYTES, REPORT_NAME, FleetReport, parse_report


@dataclass(frozen=True)
class MemberBundle:
    """What the store holds for one member's run."""

    status: str  # "released", "failed" (reports only, under failed/) or "missing"
    url: str | None = None
    results: Any = None  # the manifest's `meta.results` rows, unchecked (`report.rows_from_bundle` checks them)
    gates: tuple[GateResult, ...] = ()  # the manifest's gate records
    problem: str = ""  # a manifest that could not be used, and why


def fleet_store(members: list[ResolvedMember], store: str | None) -> str:
    """Where the fleet report goes: `store` if given, else the one store every member publishes to."""
    if store:
        return store
    urls = {ArtifactStore(m.store, **m.storage_options).url: m.store for m in members}
    if len(urls) > 1:
        raise ConfigError(f"fleet members publish to different stores ({', '.join(sorted(urls))}): "
                          f"pass the fleet's own store= parameter")
    return next(iter(urls.values()))


def check_fleet_name(name: str, members: list[ResolvedMember]) -> str:
    """The fleet's name is its bundle's model name in the store: a valid one, and no member's model."""
    check_model(name)
    clash = [m.label for m in members if m.model == name]
    if clash:
        raise ConfigError(f"fleet name {name!r} is the model name of member(s) {', '.join(clash)}: "
                          f"the fleet report would land among that model's bundles; pick another name")
    return name


def find_member_bundle(store: ArtifactStore, model: str, run_id: str, flow_run_id: str) -> MemberBundle:
    """The bundle member run `flow_run_id` published as run `run_id` of `model`, released or failed."""
    for failed in (False, True):
        try:
            manifest = store.read_manifest(model, run_id, failed=failed)
        except BertbuildError as exc:  # an unreadable or foreign manifest under that run id
            return MemberBundle("missing", problem=f"its manifest cannot be read: {str(exc).splitlines()[0]}")
        if manifest is None:
            continue
        if manifest.flow_run_id != flow_run_id:
            return MemberBundle("missing", problem=f"the bundle {run_id} of {model} was made by flow run "
                                                   f"{manifest.flow_run_id}, not by this member's")
        meta = manifest.meta if isinstance(manifest.meta, dict) else {}
        return MemberBundle("failed" if failed else "released",
                            store.url_of(store.bundle_path(model, run_id, failed=failed)),
                            meta.get("results"), tuple(manifest.gates))
    return MemberBundle("missing")


def previous_report(store: ArtifactStore, name: str, run_id: str) -> tuple[str | None, FleetReport | None, str]:
    """(run id, report, problem) of the newest fleet report of `name` older than `run_id`, released or failed.

    (None, None, "") when there is none; (run id, None, why) when it cannot be
    used: its manifest, its report file or the report itself fails a check.
    """
    released = set(store.runs(name))
    earlier = sorted(r for r in released | set(store.runs(name, failed=True)) if r < run_id)
    if not earlier:
        return None, None, ""
    previous = earlier[-1]
    failed = previous not in released
    try:
        manifest = store.read_manifest(name, previous, failed=failed)
        entry = manifest.files.get(REPORT_NAME) if manifest is not None else None
        if entry is None:
            return previous, None, f"its bundle has no {REPORT_NAME}"
        if entry["size"] > MAX_REPORT_BYTES:
            return previous, None, f"its {REPORT_NAME} is {entry['size']} bytes, more than a fleet report holds"
        data = store.read_bytes(store.content_path(store.bundle_path(name, previous, failed=failed), manifest,
                                                   REPORT_NAME))
        if data is None:
            return previous, None, f"the bytes of its {REPORT_NAME} are missing from the store"
        manifest.check(REPORT_NAME, hashlib.sha256(data).hexdigest(), len(data))
        return previous, parse_report(data, name, previous), ""
    except BertbuildError as exc:
        return previous, None, str(exc).splitlines()[0]
