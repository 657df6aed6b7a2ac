"""A `RegressionReport` as Markdown, for the Prefect artifact of a run."""

from __future__ import annotations

from bertbuild.artifacts.regression import RegressionReport
from bertbuild.host import describe_host
from bertbuild.reporting.cells import number


def _cell(value, delta, spec: str) -> str:
    return "-" if value is None else f"{number(value, spec)} ({number(delta, '+' + spec)})"


def _precision_line(row: dict) -> str:
    if row["status"] != "compared":
        what = "new in this run" if row["status"] == "new" else "**missing** in this run (present in latest)"
        return f"| {row['precision']} | {what} | | | |"
    agreement = "-" if row["answer_agreement"] is None else f"{row['answer_agreement']:.2%}"
    if row["answer_note"]:
        agreement += f" ({row['answer_note']})"
    latency = row["latency_note"] or f"{number(row['p50_ms'], '.2f')} ms (x{row['p50_ratio']:.3f})"
    return (f"| {row['precision']} | {_cell(row['exact_match'], row['em_delta'], '.2f')} | "
            f"{_cell(row['f1'], row['f1_delta'], '.2f')} | {agreement} | {latency} |")


def regression_markdown(report: RegressionReport) -> str:
    """Headline, per-precision table, gates, changed files and versions."""
    lines = [f"## Regression check: {report.model}", ""]
    if report.latest_run_id is None:
        lines += [f"No earlier release of `{report.model}`: nothing to compare, regression gates skipped.", ""]
    else:
        verdict = "passed" if report.passed else "**FAILED**"
        lines += [f"Compared with the latest release `{report.latest_run_id}`: {verdict}.", ""]
        if report.same_host:
            lines.append(f"Same kind of host ({describe_host(report.host)}): latency compared.")
        else:
            lines.append(f"Different host: this run on {describe_host(report.host)}, latest on "
                         f"{describe_host(report.latest_host)}; latency not compared.")
        lines += ["", "| precision | EM (delta) | F1 (delta) | same answer as latest | p50 (ratio) |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        lines += [_precision_line(row) for row in report.precisions]
    lines += ["", "| gate | result | value | threshold | |", "| --- | --- | ---: | ---: | --- |"]
    for g in report.gates:
        verdict = "skipped" if g.skipped else ("pass" if g.passed else "**FAIL**")
        lines.append(f"| {g.name} | {verdict} | {number(g.measured, '.4g')} | {number(g.threshold, 'g')} | "
                     f"{g.skipped or g.detail} |")
    if report.latest_run_id is not None:
        files = report.files
        changed = ", ".join(f"`{n}`" for n in files["changed"]) or "none"
        lines += ["", f"Model and engine files changed: {changed}; {files['unchanged']} unchanged."]
        for key in ("added", "removed"):
            if files[key]:
                lines.append(f"{key.capitalize()}: " + ", ".join(f"`{n}`" for n in files[key]) + ".")
        versions = ", ".join(f"{name} {v['latest'] or '-'} -> {v['current'] or '-'}"
                             for name, v in report.versions.items())
        lines.append(f"Versions changed: {versions or 'none'}.")
    return "\n".join(lines).rstrip() + "\n"
