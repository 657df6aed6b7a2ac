"""The fleet report: every member's outcome and numbers, and the change against the previous fleet run.

Pure data (no Prefect, no store I/O; shown by `bertbuild.reporting.fleet_*`).
Per member and precision: EM/F1, ΔF1 against the member's TensorFlow FP32
reference with its paired bootstrap 95 % interval, p50 latency, speed-up over
the member's own FP32 engine, and the gate outcome. The numbers come from
each member's published manifest (`rows_from_bundle`), which is untrusted; so
is a previous report read back from the store (`parse_report` refuses anything
but a well-formed one).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bertbuild.errors import IntegrityError
from bertbuild.evaluation.gates import GateResult

SCHEMA = 1
KIND = "bertbuild-fleet-report"
REPORT_NAME = "fleet-report.json"
MAX_REPORT_BYTES = 8 * 1024 * 1024  # a fleet of hundreds of members is a few hundred kB
FP32 = "fp32"

Text = Annotated[str, StringConstraints(max_length=4000)]
Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")]
Bundle = Literal["released", "failed", "missing"]


class _Record(BaseModel):
    """Stored form: unknown keys, wrong types, NaN/inf and oversized strings are refused when read back."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Interval(_Record):
    delta: float
    low: float
    high: float


class FleetRow(_Record):
    """One engine of one member (the TensorFlow reference row included, with no ΔF1, p50 or gates)."""

    precision: Text
    engine: Text
    exact_match: float | None
    f1: float | None
    delta_f1: Interval | None  # against the member's TensorFlow FP32 reference
    p50_ms: float | None
    speedup: float | None  # the member's FP32 engine p50 / this p50
    gates: Literal["PASS", "FAIL", "-"]
    failed_gates: tuple[Text, ...] = Field(default=(), max_length=200)


class MemberResult(_Record):
    label: Name
    config: Text
    model: Name
    flow_run_id: Text
    flow_run_name: Text
    state: Text  # the final state's name (Completed, Failed, Crashed, ...), or the last one seen
    message: Text
    worker: Text | None  # the work-pool worker that ran it (the flow run's `prefect.worker.name` label)
    run_id: Text  # the bundle's run id in the store
    bundle: Bundle
    bundle_url: Text | None
    problem: Text  # why this member fails the fleet; "" when it does not
    rows: tuple[FleetRow, ...] = Field(default=(), max_length=64)

    @property
    def ok(self) -> bool:
        return not self.problem


class Change(_Record):
    """One (member, precision) against the previous fleet run: differences now - before, and the p50 ratio."""

    label: Name
    model: Name
    precision: Text
    exact_match: float | None
    f1: float | None
    p50_ratio: float | None  # now / before: above 1 is slower


class FleetReport(_Record):
    kind: Literal["bertbuild-fleet-report"] = KIND
    schema_version: Literal[1] = Field(default=SCHEMA, alias="schema")
    name: Name
    run_id: Name
    created: Text
    members: tuple[MemberResult, ...] = Field(max_length=1000)
    previous_run_id: Name | None = None
    previous_problem: Text = ""  # why the previous report could not be compared with, if it could not
    changes: tuple[Change, ...] = Field(default=(), max_length=64000)

    model_config = ConfigDict(populate_by_name=True)

    @property
    def passed(self) -> bool:
        return all(member.ok for member in self.members)

    @property
    def failures(self) -> list[str]:
        return [f"{m.label} ({m.problem})" for m in self.members if not m.ok]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2) + "\n"


def parse_report(data: bytes, name: str, run_id: str) -> FleetReport:
    """A previous fleet report read from the store: valid, and the report of fleet `name`'s run `run_id`."""
    if len(data) > MAX_REPORT_BYTES:
        raise IntegrityError(f"{REPORT_NAME} of run {run_id} is {len(data)} bytes, more than a fleet report holds")
    try:
        report = FleetReport.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise IntegrityError(f"{REPORT_NAME} of run {run_id} is not a fleet report: {where}: {first['msg']} "
                             f"({exc.error_count()} problem(s))") from None
    if report.name != name or report.run_id != run_id:
        raise IntegrityError(f"{REPORT_NAME} of run {run_id} of {name} describes run {report.run_id!r} "
                             f"of {report.name!r}")
    return report


# -- a member's rows, from its (untrusted) manifest ---------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _interval(delta: Any) -> Interval | None:
    f1 = delta.get("f1") if isinstance(delta, dict) else None
    if not isinstance(f1, dict):
        return None
    values = [_number(f1.get(key)) for key in ("delta", "low", "high")]
    return None if None in values else Interval(delta=values[0], low=values[1], high=values[2])


def rows_from_bundle(results: Any, gates: Sequence[GateResult] = ()) -> tuple[FleetRow, ...]:
    """Rows per precision from a member manifest's `meta.results` (untrusted) and its gates.

    The gate outcome of an engine comes from the manifest's gate records (all
    of them, the regression gates against `latest` included), not from the
    row's own PASS/FAIL mark; an engine with no gate record (the TensorFlow
    reference) shows `-`.
    """
    by_engine: dict[str, list[tuple[str, bool]]] = {}  # engine -> [(gate, passed)]
    for gate in gates:  # validated when the manifest was read
        by_engine.setdefault(gate.engine, []).append((gate.gate[:200], gate.passed))
    raw = [r for r in (results if isinstance(results, list) else [])[:64]
           if isinstance(r, dict) and isinstance(r.get("precision"), str) and r["precision"]]
    fp32 = next((_number(r.get("p50_ms")) for r in raw if r["precision"] == FP32), None)
    rows = []
    for r in raw:
        engine = str(r.get("engine") or "")[:200]
        p50 = _number(r.get("p50_ms"))
        checks = by_engine.get(engine, [])
        failed = tuple(name for name, passed in checks if not passed)
        rows.append(FleetRow(
            precision=r["precision"][:200], engine=engine, exact_match=_number(r.get("exact_match")),
            f1=_number(r.get("f1")), delta_f1=_interval(r.get("delta")), p50_ms=p50,
            speedup=fp32 / p50 if fp32 and p50 else None,
            gates="-" if not checks else ("FAIL" if failed else "PASS"), failed_gates=failed[:200]))
    return tuple(rows)


# -- a member's verdict ----------------------------------------------------------

def member_problem(*, state: str, finished: bool, completed: bool, message: str, bundle: str,
                   bundle_problem: str, store: str, timeout_s: float) -> str:
    """Why a member fails the fleet ("" when it does not): it did not complete, or its bundle is not released."""
    if not finished:
        return f"still {state} after {timeout_s:.0f} s"
    if not completed:
        return f"{state}: {one_line(message) or 'no message'}"
    if bundle == "released":
        return ""
    if bundle == "failed":
        return "Completed, but its bundle was published under failed/"
    return (f"Completed, but no bundle of its run in {store}: "
            + (bundle_problem or "is that store shared by every worker's host?"))


def one_line(text: str, limit: int = 600) -> str:
    """`text` on one line, whitespace runs collapsed, cut at `limit` characters (a member's message can be a
    whole traceback)."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


# -- against the previous fleet run ------------------------------------------------

def compare(members: tuple[MemberResult, ...], previous: FleetReport | None) -> tuple[Change, ...]:
    """Per (member label, model, precision) present in both runs with numbers in both: EM, F1 and p50 change."""
    if previous is None:
        return ()
    before = {(m.label, m.model, r.precision): r for m in previous.members for r in m.rows}
    changes = []
    for member in members:
        for row in member.rows:
            old = before.get((member.label, member.model, row.precision))
            if old is None:
                continue
            changes.append(Change(
                label=member.label, model=member.model, precision=row.precision,
                exact_match=_difference(row.exact_match, old.exact_match), f1=_difference(row.f1, old.f1),
                p50_ratio=row.p50_ms / old.p50_ms if row.p50_ms and old.p50_ms else None))
    return tuple(changes)


def _difference(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before
