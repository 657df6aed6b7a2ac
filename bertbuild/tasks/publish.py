"""Prefect tasks that publish a run's bundle and report it as Prefect artifacts.

Thin on purpose: the logic lives in `artifacts/` and works without Prefect.

    plots = render_plots(rows, str(out))                       # PNGs saved into the bundle
    published = publish(cfg.publish.store, cfg.model_name,
                        {**files, **plots}, meta, gates)       # -> PublishResult.to_dict()
    report_artifacts(published, rows, plots)                   # table + markdown (plots embedded) + link
"""

from __future__ import annotations

import re

from prefect import task
from prefect.cache_policies import NO_CACHE

from bertbuild.errors import UserInputError


def artifact_key(model: str, suffix: str = "") -> str:
    """Prefect artifact keys allow only [a-z0-9-]: `build-bert-<model>[-suffix]`."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "model"
    return f"build-bert-{slug}" + (f"-{suffix}" if suffix else "")


def _worth_retrying(task, task_run, state) -> bool:
    """Retry store I/O errors; never bad input or a conflicting run id (they won't fix themselves)."""
    from bertbuild.errors import RunConflict

    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:  # noqa: BLE001 - we only classify it
            exc = raised
    return not isinstance(exc, (UserInputError, RunConflict))


def _run_id(given: str | None) -> str:
    """Stable across task retries: the flow run's scheduled start time + id prefix."""
    if given:
        return given
    from prefect.runtime import flow_run

    from bertbuild.artifacts.store import make_run_id

    return make_run_id(flow_run.scheduled_start_time, flow_run.id)


@task(name="render-plots", cache_policy=NO_CACHE)
def render_plots(rows: list[dict], out_dir: str) -> dict[str, str]:
    """Accuracy and latency PNGs under `<out_dir>/plots/`: bundle name -> local path."""
    from pathlib import Path

    from bertbuild.artifacts.publish import write_plots

    return {name: str(path) for name, path in write_plots(rows, Path(out_dir) / "plots").items()}


@task(name="publish-bundle", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)
def publish(store: str, model: str, files: dict[str, str], meta: dict, gates: list[dict],
            passed: bool | None = None, run_id: str | None = None) -> dict:
    """Publish `files` (bundle name -> local path) to `store`; returns `PublishResult.to_dict()`.

    `passed` defaults to "every gate passed". A failing run publishes its
    reports under `failed/` and leaves `latest` alone; raise `GateFailed`
    after this task so the flow run still fails.
    """
    from prefect.runtime import flow_run

    from bertbuild.artifacts.publish import publish_bundle

    passed = all(g.get("passed", False) for g in gates) if passed is None else passed
    meta = {"flow_run_id": flow_run.id, **(meta or {})}
    return publish_bundle(store, model, _run_id(run_id), files, meta, gates, passed).to_dict()


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _gate_name(gate: dict) -> str:
    """`gate_result` dicts have `name`; `bertbuild.evaluation.gates.GateResult.to_json()` has `engine` + `gate`."""
    if gate.get("name"):
        return str(gate["name"])
    return ": ".join(str(gate[k]) for k in ("engine", "gate") if gate.get(k)) or "-"


def _png_data_uri(path: str) -> str:
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


def results_markdown(published: dict, rows: list[dict], plots: dict[str, str] | None = None) -> str:
    """The run report: status, numbers per engine, gates, and the plots embedded as images.

    `plots` maps each plot's bundle name to its local PNG file.
    """
    from bertbuild.artifacts.publish import latencies

    label, latency = latencies(rows)
    status = "released" if published["released"] else "FAILED (reports only, not released)"
    lines = [
        f"# build-bert: {published['model']}",
        "",
        f"Run `{published['run_id']}`: **{status}**" + ("; `latest` now points here." if published["latest"] else "."),
        f"Bundle: `{published['url']}`",
        "",
        f"| engine | EM | F1 | max abs dlogit vs TF | {label} | questions |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r, ms in zip(rows, latency):
        lines.append(f"| {r.get('engine', '-')} | {_fmt(r.get('exact_match'), '.2f')} | {_fmt(r.get('f1'), '.2f')} | "
                     f"{_fmt(r.get('max_abs_dlogit'), '.2e')} | {_fmt(ms, '.1f')} | "
                     f"{_fmt(r.get('questions'), 'd')} |")
    if published.get("gates"):
        lines += ["", "| gate | result | value | threshold |", "| --- | --- | ---: | ---: |"]
        for g in published["gates"]:
            lines.append(f"| {_gate_name(g)} | {'pass' if g.get('passed') else '**FAIL**'} | "
                         f"{_fmt(g.get('value', g.get('measured')), '.4g')} | {_fmt(g.get('threshold'), '.4g')} |")
    if plots:
        lines += ["", "## Plots", ""]
        for name in sorted(plots):
            title = name.rsplit("/", 1)[-1].removesuffix(".png").replace("-", " ").replace("_", " ")
            lines.append(f"![{title}]({_png_data_uri(plots[name])})  ")
            lines.append(f"`{name}` in the bundle")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def history_rows(published: dict, rows: list[dict]) -> list[dict]:
    """One table row per engine, tagged with the run: successive versions of a keyed artifact form the history."""
    from bertbuild.artifacts.publish import latencies

    label, latency = latencies(rows)
    key = "p50_ms" if label.startswith("p50") else "ms_per_question"
    return [{
        "run_id": published["run_id"], "released": published["released"], "engine": r.get("engine"),
        "precision": r.get("precision"), "exact_match": r.get("exact_match"), "f1": r.get("f1"),
        "max_abs_dlogit": r.get("max_abs_dlogit"), key: ms, "questions": r.get("questions"),
    } for r, ms in zip(rows, latency)]


@task(name="report-artifacts", cache_policy=NO_CACHE)
def report_artifacts(published: dict, rows: list[dict], plots: dict[str, str] | None = None) -> dict[str, str]:
    """Keyed table (history per model), markdown report with the plots embedded, and a link to the bundle."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    model = published["model"]
    table = create_table_artifact(
        table=history_rows(published, rows), key=artifact_key(model),
        description=f"build-bert results for {model}, one version per run",
    )
    markdown = create_markdown_artifact(
        markdown=results_markdown(published, rows, plots), key=artifact_key(model, "report"),
        description=f"build-bert report for {model} run {published['run_id']}",
    )
    link = create_link_artifact(
        link=published["url"], link_text=f"{model} {published['run_id']}", key=artifact_key(model, "bundle"),
        description="the published bundle" if published["released"] else "reports of a failed run",
    )
    return {"table": str(table), "markdown": str(markdown), "link": str(link)}
