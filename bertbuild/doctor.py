"""`bertbuild doctor`: is this host set up the way the lock and prefect.yaml say?

Each check is a `Check` (what, verdict, detail). `problem` marks what the user
must fix; the command exits 1 when any check has one. The checks:

- installed versions against `requirements.lock` (the key libraries are
  listed; any other locked package that differs is named too);
- the engine backends this host can run;
- whether a Prefect API is configured and answers;
- whether the work pool and the deployments of `prefect.yaml` exist;
- when the nightly deployment next runs (no Scheduled run means the server's
  scheduler is not creating them, as happened with SQLAlchemy 2.1).

Without `PREFECT_API_URL` the server checks are skipped, not failed: `bertbuild
run` needs no server. Nothing here starts a Prefect server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bertbuild.host import distribution_version

LOCK_FILE = "requirements.lock"
PREFECT_FILE = "prefect.yaml"
# Shown even when they match: the ones a user asks about first when something breaks.
KEY_LIBRARIES = ("prefect", "sqlalchemy", "fastapi", "pydantic", "numpy", "onnx", "onnx-graphsurgeon",
                 "onnxruntime", "openvino", "polygraphy", "tokenizers", "tensorflow-cpu", "tf2onnx")
_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?\s*$")


@dataclass(frozen=True)
class Check:
    section: str
    name: str
    ok: bool
    detail: str
    problem: bool = False  # True: the user must fix this (exit 1)

    def line(self, width: int = 34) -> str:
        mark = "ok  " if self.ok else ("FAIL" if self.problem else "--  ")
        return f"  [{mark}] {self.name:<{width}} {self.detail}".rstrip()


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    """{normalized name: version} of the lock's entries whose environment marker fits this interpreter."""
    from packaging.markers import Marker

    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = _LOCK_LINE.match(line)
        if not match:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[normalize(name)] = version
    return pins


def version_checks(pins: dict[str, str], installed=distribution_version) -> list[Check]:
    """Key libraries one line each, then one line naming every other locked package that differs.

    `installed`: the same reader of installed versions as the manifest and the step keys."""
    checks = []
    for name in KEY_LIBRARIES:
        want, have = pins.get(name), installed(name)
        if want is None:
            continue
        ok = have == want
        detail = f"{have} (locked {want})" if have else f"not installed (locked {want})"
        checks.append(Check("versions", name, ok, detail if not ok else f"{have}", problem=not ok))
    others = sorted(f"{name} {installed(name) or 'missing'} != {want}" for name, want in pins.items()
                    if name not in KEY_LIBRARIES and installed(name) != want)
    if others:
        shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
        checks.append(Check("versions", f"{len(others)} other package(s)", False, shown, problem=True))
    else:
        checks.append(Check("versions", "every other locked package", True, f"{len(pins) - len(checks)} match"))
    return checks


def find_file(name: str, given: Path | None = None) -> Path | None:
    """`given`, else `name` in the working directory, else in the project checkout this package sits in."""
    if given is not None:
        return given if given.is_file() else None
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / name).is_file():
            return base / name
    return None


def backend_checks() -> list[Check]:
    from bertbuild.backends.registry import availability

    return [Check("backends", name, ok, "can run here" if ok else why)
            for name, (ok, why) in availability().items()]


@dataclass(frozen=True)
class Deployment:
    name: str  # flow/deployment
    pool: str | None
    schedules: tuple[dict, ...]


def deployments_of(prefect_file: Path) -> list[Deployment]:
    """The deployments prefect.yaml declares, with their pool and schedules (anchors resolved)."""
    from bertbuild.config import read_yaml_file
    from bertbuild.errors import UserInputError

    spec = read_yaml_file(prefect_file, "prefect file")
    if not isinstance(spec, dict):
        raise UserInputError(f"{prefect_file}: expected a mapping with a `deployments:` list at the top level, "
                             f"got a YAML {type(spec).__name__}")
    entries = spec.get("deployments") or []
    if not isinstance(entries, list):
        raise UserInputError(f"{prefect_file}: deployments: expected a list, got a YAML {type(entries).__name__}")
    found = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("entrypoint", ""), str) \
                or not isinstance(entry.get("work_pool") or {}, dict) \
                or not isinstance(entry.get("schedules") or [], list):
            raise UserInputError(f"{prefect_file}: deployments[{number}]: expected a mapping with a text `name`, "
                                 "a text `entrypoint`, a `work_pool` mapping and a `schedules` list")
        try:
            flow = _flow_name(prefect_file.parent, entry.get("entrypoint", ""))
        except Exception as exc:  # noqa: BLE001 - Prefect raises many kinds for an entrypoint it cannot load
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise UserInputError(f"{prefect_file}: deployments[{number}] ({entry['name']}): cannot load its "
                                 f"entrypoint {entry.get('entrypoint', '')!r} ({reason})") from None
        pool = (entry.get("work_pool") or {}).get("name")
        found.append(Deployment(f"{flow}/{entry['name']}", pool, tuple(entry.get("schedules") or ())))
    return found


def _flow_name(root: Path, entrypoint: str) -> str:
    """The name of the flow an entrypoint (`path.py:function`) points at, as Prefect loads it."""
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(root / entrypoint)).name


def prefect_checks(deployments: list[Deployment], api_url: str | None) -> list[Check]:
    if not api_url:
        return [Check("prefect", "API", False, "PREFECT_API_URL is not set: `bertbuild run` works without a "
                      "server; deployments and the nightly schedule need one (docs/deploy.md)")]
    from prefect.client.orchestration import get_client

    checks = []
    with get_client(sync_client=True) as client:
        failure = client.api_healthcheck()
        if failure is not None:
            first = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
            return [Check("prefect", "API", False, f"{api_url} does not answer: {first}", problem=True)]
        checks.append(Check("prefect", "API", True, f"{api_url} answers"))
        for pool in sorted({d.pool for d in deployments if d.pool}):
            checks.append(_exists(lambda: client.read_work_pool(pool), "work pool", pool,
                                  f"prefect work-pool create {pool} --type process"))
        for deployment in deployments:
            found = _exists(lambda: client.read_deployment_by_name(deployment.name), "deployment",
                            deployment.name, "prefect --no-prompt deploy --all (from the project root)")
            checks.append(found)
            if found.ok and deployment.schedules:
                checks.append(_next_run(client, deployment))
    return checks


def _exists(read, kind: str, name: str, fix: str) -> Check:
    from prefect.exceptions import ObjectNotFound

    try:
        read()
    except ObjectNotFound:
        return Check("prefect", f"{kind} {name}", False, f"missing: {fix}", problem=True)
    return Check("prefect", f"{kind} {name}", True, "exists")


def _next_run(client, deployment: Deployment) -> Check:
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    found = client.read_deployment_by_name(deployment.name)
    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[found.id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1,
    )
    label = f"next run of {deployment.name}"
    if not runs:
        return Check("prefect", label, False, "none scheduled: the server's scheduler is not creating runs "
                     "(look for ERROR lines from schedule_deployments in the server log)", problem=True)
    when = runs[0].expected_start_time.astimezone(timezone.utc)
    zone = deployment.schedules[0].get("timezone")
    local = f" = {_local(when, zone)}" if zone else ""
    return Check("prefect", label, True, f"{when:%Y-%m-%d %H:%M} UTC{local}")


def _local(when: datetime, zone: str) -> str:
    from zoneinfo import ZoneInfo

    return f"{when.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"


def run_checks(lock: Path | None = None, prefect_file: Path | None = None,
               api_url: str | None = None) -> list[Check]:
    checks: list[Check] = []
    lock_path = find_file(LOCK_FILE, lock)
    if lock_path is None:
        checks.append(Check("versions", "lock", False, f"no {LOCK_FILE} found (pass --lock): versions not checked",
                            problem=lock is not None))
    else:
        checks.append(Check("versions", "lock", True, str(lock_path)))
        checks += version_checks(read_lock(lock_path))
    checks += backend_checks()
    spec = find_file(PREFECT_FILE, prefect_file)
    deployments = deployments_of(spec) if spec else []
    checks += prefect_checks(deployments, api_url)
    return checks


def report(checks: list[Check]) -> str:
    lines, section = [], None
    width = max([34, *(len(c.name) for c in checks)])  # every detail in one column, however long a name
    for check in checks:
        if check.section != section:
            section = check.section
            lines.append(f"{section}:")
        lines.append(check.line(width))
    problems = [c for c in checks if c.problem]
    lines.append("")
    lines.append(f"{len(problems)} problem(s) to fix" if problems else "no problems found")
    return "\n".join(lines)
