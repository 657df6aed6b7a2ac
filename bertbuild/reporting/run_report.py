"""The run report as Prefect shows it: markdown with the numbers, the gates and the plots, and history rows.

Pure formatting (no Prefect here); `bertbuild.tasks.publish` turns these into artifacts.
"""

from __future__ import annotations

from bertbuild.artifacts.publish import latencies
from bertbuild.evaluation.gates import GateResult
from bertbuild.reporting.cells import number


def _fmt(value, spec: str) -> str:
    """`number`, but a value of another type than the column's is shown as it is rather than failing the report."""
    try:
        return number(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _delta(row: dict) -> str:
    """ΔF1 with its paired bootstrap interval, e.g. `-0.32 [-1.10, +0.41]` (`-` for the reference row)."""
    f1 = (row.get("delta") or {}).get("f1")
    return "-" if not f1 else f"{f1['delta']:+.2f} [{f1['low']:+.2f}, {f1['high']:+.2f}]"


def png_data_uri(path: str) -> str:
    """A PNG as a `data:` URI, so the report shows its plots wherever it is opened.

    A bundle path (`plots/x.png`) or a store URL (`file://`, `s3://`) is nothing a
    browser viewing the Prefect UI can fetch. Both Prefect UIs render `data:image/`
    sources in markdown artifacts (the v1 renderer binds the image source as is,
    and the v2 one allows `data:image/` explicitly), and each plot is a few tens of KB.
    """
    import base64
    from pathlib import Path

    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def results_markdown(published: dict, rows: list[dict], plots: dict[str, str] | None = None,
                     steps: list[dict] | None = None) -> str:
    """The run report: status, numbers per engine, gates, each step's time and memory, and the plots.

    `plots` maps each plot's bundle name to its local PNG file; `steps` are
    `bertbuild.resources.read_journal` records.
    """
    label, latency = latencies(rows)
    status = "released" if published["released"] else "FAILED (reports only, not released)"
    lines = [
        f"# build-bert: {published['model']}",
        "",
        f"Run `{published['run_id']}`: **{status}**" + ("; `latest` now points here." if published["latest"] else "."),
        f"Bundle: `{published['url']}`",
        "",
        f"| engine | EM | F1 | ΔF1 vs TF [95% CI] | max abs dlogit vs TF | {label} | eval windows/s | "
        "eval real tokens/s | questions |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r, ms in zip(rows, latency):
        lines.append(f"| {r.get('engine', '-')} | {_fmt(r.get('exact_match'), '.2f')} | {_fmt(r.get('f1'), '.2f')} | "
                     f"{_delta(r)} | {_fmt(r.get('max_abs_dlogit'), '.2e')} | {_fmt(ms, '.1f')} | "
                     f"{_fmt(r.get('windows_per_s'), '.1f')} | {_fmt(r.get('real_tokens_per_s'), '.0f')} | "
                     f"{_fmt(r.get('questions'), 'd')} |")
    if published.get("gates"):
        lines += ["", "| gate | result | value | threshold |", "| --- | --- | ---: | ---: |"]
        for g in map(GateResult.from_json, published["gates"]):
            lines.append(f"| {g.name} | {'pass' if g.passed else '**FAIL**'} | {_fmt(g.measured, '.4g')} | "
                         f"{_fmt(g.threshold, '.4g')} |")
    if steps:
        lines += ["", "## Time and memory per step", "", "| step | seconds | peak RSS MiB | measured in | cached |",
                  "| --- | ---: | ---: | --- | --- |"]
        for step in steps:
            cached = {True: "yes", False: "no"}.get(step.get("cached"), "-")
            lines.append(f"| {step['step']}{' (failed)' if step.get('failed') else ''} | {step['seconds']:.1f} | "
                         f"{step['peak_rss_mb']:.0f} | {step['measured_in']} | {cached} |")
    if plots:
        lines += ["", "## Plots", ""]
        for name in sorted(plots):
            title = name.rsplit("/", 1)[-1].removesuffix(".png").replace("-", " ").replace("_", " ")
            lines.append(f"![{title}]({png_data_uri(plots[name])})  ")
            lines.append(f"`{name}` in the bundle")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def history_rows(published: dict, rows: list[dict]) -> list[dict]:
    """One table row per engine, tagged with the run: successive versions of a keyed artifact form the history."""
    label, latency = latencies(rows)
    key = "p50_ms" if label.startswith("p50") else "ms_per_question"
    return [{
        "run_id": published["run_id"], "released": published["released"], "engine": r.get("engine"),
        "precision": r.get("precision"), "exact_match": r.get("exact_match"), "f1": r.get("f1"),
        "max_abs_dlogit": r.get("max_abs_dlogit"), key: ms, "questions": r.get("questions"),
    } for r, ms in zip(rows, latency)]
