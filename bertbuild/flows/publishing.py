"""The end of a build-bert run: the results file, the plots, the run directory, the bundle, the artifacts.

Wiring over `bertbuild.tasks.publish` and `bertbuild.runs`: the bundle is
exactly the files this run's tasks returned (`files`), given their bundle names
in the run directory, never a scan of a directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect.states import Failed, State

from bertbuild.config import BuildConfig
from bertbuild.errors import GateFailed
from bertbuild.evaluation.gates import enforce
from bertbuild.reporting.run_table import format_table
from bertbuild.interrupts import stop_if_interrupted
from bertbuild.resources import read_journal
from bertbuild.artifacts.layout import REGRESSION, RESULTS, Bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.evaluation.rows import with_verdicts
from bertbuild.runs import RunContext, mark_complete, materialize
from bertbuild.artifacts.store import default_store
from bertbuild.tasks.publish import (compare_with_last_release, current_attempt, current_run_id, publish,
                                     render_plots, report_artifacts)

__all__ = ["current_attempt", "current_run_id", "outcome", "publish_run"]


def outcome(result: dict, report: Path) -> dict | State:
    """`result`, or a Failed state carrying `GateFailed` (naming every failed gate) when a gate failed.

    A failed gate is a verdict, not a crash: returned as a state, it ends the
    run Failed without Prefect logging a traceback, and a caller of the flow
    still gets `GateFailed` raised (`bertbuild run` prints it and exits 1).
    """
    try:
        enforce(result["gates"], report=str(report))
    except GateFailed as failed:
        return Failed(message=str(failed), data=failed)
    return result


def publish_run(cfg: BuildConfig, run: RunContext, rows: list[dict], bundle: Bundle, reports: dict,
                gates: list[GateResult], checkpoint_dir: str | None = None) -> dict:
    """Write results.json and the plots, lay the bundle out in the run directory, publish it when enabled.

    `checkpoint_dir`: the fetched checkpoint the engines were built from; the manifest records its digest
    (`source.checkpoint_sha256`), so a release names exactly the weights it came from.

    Every ONNX file in the bundle brings its external data files, added here.
    """
    bundle.add_triton(cfg.model_name, reports.get("outputs", {}).values(), cfg.engines.profiles,
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
