"""Prefect tasks that publish a run's bundle and report it as Prefect artifacts.

Thin on purpose: the logic lives in `artifacts/` and the plots and markdown in `reporting/`, both
without Prefect.

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


def current_run_id() -> str:
    """The run id of the flow run in progress: its scheduled start time + id prefix (stable across retries).

    The run directory and the published bundle are both named with it.
    """
    from prefect.runtime import flow_run

    from bertbuild.artifacts.store import make_run_id

    return make_run_id(flow_run.scheduled_start_time, flow_run.id)


def current_attempt() -> int:
    """1 for a flow run's first attempt, 2 for its first retry, ...: a retry reuses the run id."""
    from prefect.runtime import flow_run

    return max(1, int(flow_run.run_count or 1))


@task(name="render-plots", cache_policy=NO_CACHE)
def render_plots(rows: list[dict], out_dir: str) -> dict[str, str]:
    """Accuracy and latency PNGs under `<out_dir>/plots/`: bundle name -> local path."""
    from pathlib import Path

    from bertbuild.reporting.run_plots import write_plots

    return {name: str(path) for name, path in write_plots(rows, Path(out_dir) / "plots").items()}


@task(name="publish-bundle", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_worth_retrying,
      cache_policy=NO_CACHE)
def publish(store: str, model: str, files: dict[str, str], meta: dict, gates: list,
            passed: bool | None = None, run_id: str | None = None, precisions: dict[str, str] | None = None,
            storage_options: dict | None = None) -> dict:
    """Publish `files` (bundle name -> local path) to `store`; returns `PublishResult.to_dict()`.

    `gates` are `GateResult`s; `passed` defaults to "every gate passed". A failing
    run publishes its reports under `failed/` and leaves `latest` alone; raise
    `GateFailed` after this task so the flow run still fails. `precisions`: the
    precision each file belongs to (`artifacts.layout.Bundle`), recorded in the manifest.
    `storage_options`: fsspec's options for a URL store (`publish.storage_options`).
    """
    from prefect.runtime import flow_run

    from bertbuild.artifacts.publish import publish_bundle

    passed = all(g.passed for g in gates) if passed is None else passed
    meta = {"flow_run_id": flow_run.id, **(meta or {})}
    return publish_bundle(store, model, run_id or current_run_id(), files, meta, gates, passed,
                          precisions=precisions, storage_options=storage_options).to_dict()


@task(name="report-artifacts", cache_policy=NO_CACHE)
def report_artifacts(published: dict, rows: list[dict], plots: dict[str, str] | None = None,
                     steps: list[dict] | None = None) -> dict[str, str]:
    """Keyed table (history per model), markdown report with the plots embedded, and a link to the bundle."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    from bertbuild.reporting.run_report import history_rows, results_markdown

    model = published["model"]
    table = create_table_artifact(
        table=history_rows(published, rows), key=artifact_key(model),
        description=f"build-bert results for {model}, one version per run",
    )
    markdown = create_markdown_artifact(
        markdown=results_markdown(published, rows, plots, steps), key=artifact_key(model, "report"),
        description=f"build-bert report for {model} run {published['run_id']}",
    )
    link = create_link_artifact(
        link=published["url"], link_text=f"{model} {published['run_id']}", key=artifact_key(model, "bundle"),
        description="the published bundle" if published["released"] else "reports of a failed run",
    )
    return {"table": str(table), "markdown": str(markdown), "link": str(link)}


@task(name="compare-with-last-release", cache_policy=NO_CACHE)
def compare_with_last_release(store: str, cfg, run, rows: list[dict], files: dict[str, str]) -> dict:
    """The regression report against the model's `latest` release: its file, summary and enforced gates.

    Writes `regression.json` into the run directory and a markdown artifact.
    Gates skipped (first release, another kind of host, turned off) are in the
    report but not enforced; the rest join the run's gates.
    """
    from prefect.artifacts import create_markdown_artifact

    from bertbuild.artifacts.regression import compare_with_latest
    from bertbuild.artifacts.store import as_store
    from bertbuild.reporting.regression_markdown import regression_markdown

    report = compare_with_latest(as_store(store, cfg.publish.storage_options), cfg.model_name, rows, files,
                                 run_id=run.run_id, max_f1_drop=cfg.regression.max_f1_drop_vs_latest,
                                 max_latency_ratio=cfg.regression.max_latency_ratio_vs_latest)
    path = run.path("regression.json")
    path.write_text(report.to_json())
    create_markdown_artifact(markdown=regression_markdown(report), key=artifact_key(cfg.model_name, "regression"),
                             description=f"{cfg.model_name} run {run.run_id} against the last release")
    return {"path": str(path), "gates": [g for g in report.gates if not g.skipped],  # skipped: said why, in the report
            "summary": {"latest_run_id": report.latest_run_id, "same_host": report.same_host,
                        "passed": report.passed, "gates": [g.to_json() for g in report.gates]}}


@task(name="assemble-bundle", cache_policy=NO_CACHE)
def assemble_bundle(vocab: str, onnx: dict[str, str], int8_paths: dict[str, str], int8_ranges: str | None,
                    engines: list, reference):
    """The run's bundle (`artifacts.layout.run_bundle`): what it publishes, each file with its precision."""
    from bertbuild.artifacts.layout import run_bundle

    return run_bundle(vocab, onnx, int8_paths, int8_ranges, engines, reference)


@task(name="publish-run", cache_policy=NO_CACHE)
def publish_run(cfg, run, rows: list[dict], bundle, reports: dict, gates: list, engines: list = (),
                checkpoint_dir: str | None = None) -> dict:
    """Write results.json and the plots, lay the bundle out in the run directory, publish it when enabled.

    The flow's last task: what it writes and links shows in the UI as one task run, with the publishing
    tasks it runs (regression, plots, the bundle, the artifacts) inside it.

    `engines`: the run's `EngineResult`s, each engine with a Triton model folder in the bundle (results.json's
    `outputs` names each engine's files and saved logits). `checkpoint_dir`: the fetched checkpoint
    the engines were built from; the manifest records its digest (`source.checkpoint_sha256`), so a release
    names exactly the weights it came from.

    Every ONNX file in the bundle brings its external data files, added here.
    """
    import json

    from bertbuild.artifacts.layout import REGRESSION, RESULTS
    from bertbuild.artifacts.store import default_store
    from bertbuild.evaluation.rows import with_verdicts
    from bertbuild.interrupts import stop_if_interrupted
    from bertbuild.kinds import engine_name
    from bertbuild.reporting.run_table import format_table
    from bertbuild.resources import read_journal
    from bertbuild.runs import mark_complete, materialize

    reports["outputs"] = {engine_name(e.engine.backend, e.engine.precision): {"logits": e.scores.logits,
                                                                              **e.engine.as_mapping()} for e in engines}
    bundle.add_triton(cfg.model_name, [e.engine.as_mapping() for e in engines], cfg.engines.profiles,
                      cfg.benchmark.batch, run.run_dir)  # triton/<model>-<precision>/ per engine
    bundle.add_companions()  # before anything is compared, laid out or published
    title = (f"{cfg.model_name}: {rows[0]['questions']} SQuAD v1.1 {cfg.eval.split} questions, "
             f"backend {cfg.engines.backend}")
    store = cfg.publish.store or default_store()
    if cfg.publish.enabled:  # against the last release, before deciding whether this one is released
        regression = compare_with_last_release(store, cfg, run, rows, bundle.files)
        bundle.add(REGRESSION, regression["path"])
        gates = gates + regression["gates"]
        reports["regression"] = regression["summary"]
    rows = with_verdicts(rows, gates)
    table = format_table(rows)
    reports["steps"] = read_journal(run.run_dir)  # every step's wall time and peak memory, so far
    gate_records = [g.to_json() for g in gates]
    meta = {"model": cfg.model_name, "run_id": run.run_id, "config": cfg.model_dump(mode="json"),
            "results": rows, "trt_ready": reports.get("trt_ready", {}),
            **({"checkpoint_dir": checkpoint_dir} if checkpoint_dir else {})}
    results = run.path(RESULTS)
    results.write_text(json.dumps({**meta, "gates": gate_records, "reports": reports}, indent=2, default=str) + "\n")
    plots = render_plots(rows, str(run.run_dir))  # bundle name -> PNG in the run directory
    for name, path in plots.items():
        bundle.add(name, path)
    bundle.add(RESULTS, results)
    placed = materialize(bundle.files, run.run_dir)
    outcome = {"title": title, "table": table, "rows": rows, "run_dir": str(run.run_dir), "files": placed, **meta,
               "gates": gates, "reports": reports}
    stop_if_interrupted()  # an interrupted run publishes nothing and never becomes `latest`
    if cfg.publish.enabled:
        published = publish(store, cfg.model_name, placed, meta, gates, run_id=run.run_id,
                            precisions=bundle.precisions, storage_options=cfg.publish.storage_options)
        report_artifacts(published, rows, plots, reports["steps"])
        outcome["published"] = published
    stop_if_interrupted()
    mark_complete(run)  # only now may <output_dir>/<model>/latest name this run (gates passed or failed)
    return outcome
