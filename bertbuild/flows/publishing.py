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
from bertbuild.evaluation.table import format_table
from bertbuild.resources import read_journal
from bertbuild.runs import RunContext, materialize, onnx_companions
from bertbuild.artifacts.store import default_store
from bertbuild.serving.repository import repository_files
from bertbuild.tasks.publish import (compare_with_last_release, current_attempt, current_run_id, publish,
                                     render_plots, report_artifacts)

__all__ = ["current_attempt", "current_run_id", "engine_files", "outcome", "publish_run", "tensorrt_files"]


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


def tensorrt_files(files: dict[str, str]) -> dict[str, str]:
    """The bundle's ONNX files TensorRT builds from: all but the ONNX-Runtime-only INT8 files (u8s8, ort)."""
    return {name: path for name, path in files.items()
            if name.endswith(".onnx") and not name.endswith(("u8s8.onnx", "ort.onnx"))}


def engine_files(scored: dict, bench: dict) -> dict[str, str]:
    """Bundle name -> file for one engine: the engine and its metadata, validation, predictions, timing."""
    engine, made = scored["engine"], scored["files"]
    name = made["engine"]
    folder = f"engines/{engine['precision']}"
    validation = Path(made["validation_report"])
    return {
        f"{folder}/{Path(engine['path']).name}": engine["path"],
        f"{folder}/{Path(engine['metadata']).name}": engine["metadata"],
        f"validation-{name}.json": str(validation),
        f"validation-{name}.txt": str(validation.with_suffix(".txt")),
        f"predictions-{name}.json": made["predictions"],
        f"benchmark-{name}.json": bench["path"],
    }


def publish_run(cfg: BuildConfig, run: RunContext, rows: list[dict], files: dict[str, str], reports: dict,
                gates: list[dict], checkpoint_dir: str | None = None) -> dict:
    """Write results.json and the plots, lay the bundle out in the run directory, publish it when enabled.

    `checkpoint_dir`: the fetched checkpoint the engines were built from; the manifest records its digest
    (`source.checkpoint_sha256`), so a release names exactly the weights it came from.

    Every ONNX file in `files` brings its external data files (`onnx_companions`), added to `files` here.
    """
    files.update(repository_files(cfg.model_name, reports.get("outputs", {}).values(), cfg.engines.profiles,
                                  cfg.benchmark.batch, run.run_dir))  # triton/<model>-<precision>/ per engine
    files.update(onnx_companions(files))  # before anything is compared, laid out or published
    title = (f"{cfg.model_name}: {rows[0]['questions']} SQuAD v1.1 {cfg.eval.split} questions, "
             f"backend {cfg.engines.backend}")
    store = cfg.publish.store or default_store()
    if cfg.publish.enabled:  # against the last release, before deciding whether this one is released
        regression = compare_with_last_release(store, cfg, run, rows, files)
        files["regression.json"], gates = regression["path"], gates + regression["gates"]
        reports["regression"] = regression["summary"]
        _mark_failed_rows(rows, gates)
    table = format_table(rows)
    reports["steps"] = read_journal(run.run_dir)  # every step's wall time and peak memory, so far
    meta = {"model": cfg.model_name, "run_id": run.run_id, "config": cfg.model_dump(mode="json"),
            "results": rows, "gates": gates, "trt_ready": reports.get("trt_ready", {}),
            **({"checkpoint_dir": checkpoint_dir} if checkpoint_dir else {})}
    results = run.path("results.json")
    results.write_text(json.dumps({**meta, "reports": reports}, indent=2, default=str) + "\n")
    plots = render_plots(rows, str(run.run_dir))  # bundle name -> PNG in the run directory
    bundle = materialize({**files, **plots, "results.json": str(results)}, run.run_dir)
    outcome = {"title": title, "table": table, "rows": rows, "run_dir": str(run.run_dir), "files": bundle, **meta,
               "reports": reports}
    if cfg.publish.enabled:
        published = publish(store, cfg.model_name, bundle,
                            {k: v for k, v in meta.items() if k != "gates"}, _gate_records(gates), run_id=run.run_id)
        report_artifacts(published, rows, plots, reports["steps"])
        outcome["published"] = published
    return outcome


def _mark_failed_rows(rows: list[dict], gates: list[dict]) -> None:
    """A row whose engine failed a gate added late (the regression gates) shows FAIL like any other."""
    failed = {g["engine"] for g in gates if not g["passed"]}
    for row in rows:
        if row["engine"] in failed and "gates" in row:
            row["gates"] = "FAIL"


def _gate_records(gates: list[dict]) -> list[dict]:
    """Gate results in the manifest's form: one name, passed, value, threshold, message."""
    from bertbuild.artifacts.publish import gate_result
    from bertbuild.evaluation.gates import GateResult

    return [gate_result(f"{g['engine']}:{g['gate']}", g["passed"], g["measured"], g["threshold"],
                        GateResult(**g).describe()) for g in gates]
