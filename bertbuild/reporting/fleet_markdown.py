"""The fleet report as markdown: verdict, members, numbers per model and precision, change, plot."""

from __future__ import annotations

from typing import Any

from bertbuild.fleet.report import FleetReport, FleetRow, one_line
from bertbuild.reporting.cells import number


def _cell(value: Any) -> str:
    """Table-safe text: one line, no column breaks."""
    return one_line(value, 300).replace("|", "\\|") or "-"


def _gates(row: FleetRow) -> str:
    if row.gates == "FAIL":
        return "**FAIL**: " + _cell(", ".join(row.failed_gates))
    return row.gates


def fleet_markdown(report: FleetReport, plot_src: str | None = None) -> str:
    """The report as markdown: verdict, members, numbers per model and precision, change, plot."""
    released = sum(m.ok for m in report.members)
    verdict = "." if report.passed else ": **FAILED**: " + "; ".join(_cell(f) for f in report.failures)
    lines = [f"# Fleet `{report.name}`, run `{report.run_id}`", "",
             f"{released} of {len(report.members)} members released{verdict}", "",
             "| member | model | state | worker | bundle | run |", "| --- | --- | --- | --- | --- | --- |"]
    for m in report.members:
        lines.append(f"| {_cell(m.label)} | {_cell(m.model)} | {_cell(m.state)} | {_cell(m.worker)} | "
                     f"{m.bundle} | `{_cell(m.run_id)}` |")
    lines += ["", "## Per model and precision", "",
              "| member | precision | engine | EM | F1 | ΔF1 vs TF [95% CI] | p50 ms | speed-up vs FP32 | gates |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m in report.members:
        if not m.rows:
            lines.append(f"| {_cell(m.label)} | - | - | - | - | - | - | - | no results: {_cell(m.problem)} |")
        for r in m.rows:
            delta = "-" if r.delta_f1 is None else \
                f"{r.delta_f1.delta:+.2f} [{r.delta_f1.low:+.2f}, {r.delta_f1.high:+.2f}]"
            lines.append(f"| {_cell(m.label)} | {_cell(r.precision)} | {_cell(r.engine)} | "
                         f"{number(r.exact_match, '.2f')} | {number(r.f1, '.2f')} | {delta} | "
                         f"{number(r.p50_ms, '.1f')} | {number(r.speedup, '.2f', 'x')} | {_gates(r)} |")
    lines += ["", "## Change against the previous fleet run", ""]
    lines += _change_lines(report)
    if plot_src:
        lines += ["", f"![ΔF1 and speed-up per member and precision]({plot_src})"]
    return "\n".join(lines) + "\n"


def _change_lines(report: FleetReport) -> list[str]:
    if report.previous_run_id is None:
        return ["No earlier run of this fleet in the store: nothing to compare with."]
    if report.previous_problem:
        return [f"The previous run `{report.previous_run_id}` could not be compared with: "
                f"{_cell(report.previous_problem)}"]
    lines = [f"Against run `{report.previous_run_id}` (now minus before; p50 now / before).", ""]
    if not report.changes:
        return lines + ["No member and precision appears in both runs."]
    lines += ["| member | precision | ΔEM | ΔF1 | p50 now/before |", "| --- | --- | ---: | ---: | ---: |"]
    for c in report.changes:
        lines.append(f"| {_cell(c.label)} | {_cell(c.precision)} | {number(c.exact_match, '+.2f')} | "
                     f"{number(c.f1, '+.2f')} | {number(c.p50_ratio, '.2f', 'x')} |")
    return lines
