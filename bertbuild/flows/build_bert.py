"""The `build-bert` flow: checkpoint -> ONNX per precision -> engines -> scored, validated, gated, published.

Wiring only: each step is a task in `bertbuild/tasks/` over pure functions, and
each expensive one is cached by content. Run it with `bertbuild run --config
configs/X.yaml`, or as a deployment (`prefect deployment run build-bert/on-demand`).

    fetch -> featurize SQuAD (once) -> export -> TensorFlow reference (in the background)
          -> fuse -> FP16, BF16;  -> choose-int8 subflow (calibrate, tune split, fallback, float parts)
    every ONNX file the backend computes here -> engine -> score (EM/F1), side by side, while the reference runs
    reference done -> validate each engine (Polygraphy) and compare it with TensorFlow (ΔF1 intervals, logits)
    then each engine timed alone -> its gates -> publish exactly this run's files -> fail the run on a failed gate
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed

from bertbuild.artifacts.layout import run_bundle
from bertbuild.backends.registry import TENSORRT_BACKENDS, computable, int8_variant, with_backend_resolved
from bertbuild.config import ConfigParameter, with_overrides
from bertbuild.console import NOT_ON_CONSOLE
from bertbuild.errors import UserInputError
from bertbuild.evaluation.gates import engine_gates, parity_limit
from bertbuild.evaluation.rows import engine_row, reference_row
from bertbuild.flows.int8 import choose_int8
from bertbuild.flows.publishing import outcome
from bertbuild.interrupts import flow_run_noted, note_run
from bertbuild.kinds import Precision, engine_name
from bertbuild.memory_budget import engine_groups, side_by_side
from bertbuild.preflight import checkpoint_checks, flow_checks
from bertbuild.runs import check_commit, open_run
from bertbuild.sharing import threads_each
from bertbuild.step_results import Comparison, EngineRef, EngineResult, Scores, Validation
from bertbuild.tasks.engines import (benchmark_engine, build_engine, check_tensorrt_ready, compare_with_reference,
                                     score_engine, validate_engine)
from bertbuild.tasks.model import export_onnx, fetch_model, tensorflow_reference
from bertbuild.tasks.precision import bf16_onnx, fp16_onnx, fuse
from bertbuild.tasks.publish import assemble_bundle, current_attempt, current_run_id, publish_run
from bertbuild.tasks.squad import featurize_squad


@flow(name="build-bert")
def build_bert(config: ConfigParameter = "configs/default.yaml", overrides: list[str] | None = None,
               require_commit: str | None = None) -> dict:
    """Build, score, validate, gate and publish engines for one checkpoint; returns the results.

    `require_commit`: a CI gate's commit; the run refuses to start unless this code is that commit, clean
    (a worker runs its own checkout, which need not be what was pushed).
    """
    with flow_run_noted(flow_run.id):  # Ctrl-C/SIGTERM: Cancelled/Crashed, INTERRUPTED (bertbuild/interrupts.py)
        try:
            return _build_bert(config, overrides, require_commit)
        except UserInputError as mistake:  # one line in the run's log, no traceback; a caller still gets it raised
            return Failed(message=str(mistake), data=mistake)


def _build_bert(config, overrides: list[str] | None, require_commit: str | None) -> dict:
    if require_commit:
        check_commit(require_commit)
    cfg = with_overrides(config, overrides or [])
    flow_checks(cfg)
    logger = get_run_logger()
    run = open_run(cfg.output_dir, cfg.model_name, current_run_id(), cache_enabled=cfg.cache.enabled,
                   cache_dir=cfg.cache.dir, refresh=cfg.cache.refresh, attempt=current_attempt())
    note_run(flow_run.id, run.run_dir)  # ... and its run directory is marked INTERRUPTED
    cfg, why = with_backend_resolved(cfg)
    backend, threads, precisions = cfg.engines.backend, cfg.engines.threads, cfg.engines.precisions
    logger.info("run directory %s; backend %s (%s)", run.run_dir, backend, why)

    model = fetch_model(cfg.model, cfg.model_name)
    weights = checkpoint_checks(cfg, model.checkpoint_dir)
    squad = featurize_squad(model, cfg.eval, run)
    exported = export_onnx(model, cfg.export, run)
    reference = tensorflow_reference.submit(model, squad, cfg.eval, cfg.validation, run)
    if not side_by_side(weights):
        reference.wait()  # a big model: the TensorFlow child and the flow's heavy steps never hold memory at once

    onnx = {Precision.FP32: exported.path}
    reports, decided = {"export": exported.as_report()}, []  # `decided`: gates made before scoring (INT8's tune gate)
    int8 = None
    if set(precisions) - {Precision.FP32}:
        fused = fuse(exported, model, run, cfg.export.external_data)
        onnx[Precision.FUSED_FP32], reports["fusion"] = fused.path, fused.report
        for half, write in ((Precision.FP16, fp16_onnx), (Precision.BF16, bf16_onnx)):
            if half in precisions:  # the file is written (and published, for TensorRT) even where no engine runs it
                written = write(fused, cfg.precision.fp16, run, cfg.export.external_data)
                onnx[half], reports[str(half)] = written.path, written.as_report()
        if Precision.INT8 in precisions:
            variant = int8_variant(backend, cfg.precision.int8.variant)
            int8 = choose_int8(fused, model, cfg, run, variant, engine_name(backend, Precision.INT8))
            onnx[Precision.INT8] = int8.written.paths[variant]
            reports.update(int8=int8.written.report, calibration=int8.calibration.report, int8_choice=int8.report,
                           tune=int8.tune.model_dump(include={"questions", "windows", "seed", "question_ids"}))
            decided.append(int8.gate)
    int8_files = (int8.written.paths, int8.calibration.path) if int8 else ({}, None)

    precisions, reports["skipped_engines"] = computable(backend, precisions)
    for engine, why_not in reports["skipped_engines"].items():
        logger.info("%s engine skipped: %s", engine, why_not)
    trt_inputs = run_bundle(model.vocab_path, onnx, *int8_files).tensorrt_inputs(int8_files[0])
    reports["trt_ready"] = check_tensorrt_ready(trt_inputs, cfg.engines.profiles, backend in TENSORRT_BACKENDS, run)
    # Scoring needs no reference, so it runs while the TensorFlow reference does. It starts once every
    # ONNX file exists: started earlier, beside the INT8 choice, it measured no faster (the two cores are
    # busy either way: 15:38 vs 15:45 for the nightly) and blurred the tune split's timings.
    groups = engine_groups(precisions, cfg.engines.concurrent, weights)
    tags = ["tensorrt"] if backend in TENSORRT_BACKENDS else []
    engines: dict[str, EngineRef] = {}
    scores: dict[str, Scores] = {}  # all scoring done before any timing
    for group in groups:  # `at_once` engines at a time, each holding its weights
        share = threads_each(threads, len(group))  # side by side: a share of the cores each, no spinning
        building = {p: build_engine.with_options(tags=tags).submit(
            backend, onnx[p], p, cfg.engines.profiles, run, threads,
            int8.float_parts if p == Precision.INT8 else None) for p in group}
        scoring = {p: score_engine.submit(building[p], squad, cfg.eval, run, share) for p in group}
        engines |= {p: building[p].result() for p in group}
        scores |= {p: scoring[p].result() for p in group}
    reference = reference.result()
    validations: dict[str, Validation] = {}
    comparisons: dict[str, Comparison] = {}
    for group in groups:  # against the reference, as many engines at a time as were scored together
        share = threads_each(threads, len(group))
        validating = {p: validate_engine.submit(engines[p], squad, reference, cfg.eval, cfg.validation.batches,
                                                cfg.tolerance_for(p), run, share) for p in group}
        comparing = {p: compare_with_reference.submit(scores[p], squad, reference, run) for p in group}
        validations |= {p: validating[p].result() for p in group}
        comparisons |= {p: comparing[p].result() for p in group}

    finished, rows, gates = [], [], []
    for p in precisions:  # one engine at a time, with nothing else running: timings are not shared
        timing = benchmark_engine(engines[p], squad, cfg.benchmark, cfg.eval, model.vocab_path,
                                  model.lower_case, run, threads)
        result = EngineResult(engine=engines[p], scores=scores[p], validation=validations[p],
                              comparison=comparisons[p], timing=timing)
        rows.append(engine_row(result, reference))
        gates += engine_gates(rows[-1], reference_row(reference), cfg.gate_for(p),
                              parity_limit(p, cfg.parity.max_abs_logit), decided)
        finished.append(result)
        logger.info(result.validation.text)

    orphans = [g for g in decided if g.engine not in {row["engine"] for row in rows}]
    if orphans:  # a gate decided before scoring must judge an engine of this run, or it would vanish unseen
        raise RuntimeError(f"gate(s) for engines this run did not score: {[g.describe() for g in orphans]}")
    bundle = assemble_bundle(model.vocab_path, onnx, *int8_files, finished, reference)
    result = publish_run(cfg, run, [reference_row(reference), *rows], bundle, reports, gates, finished,
                         checkpoint_dir=model.checkpoint_dir)
    # In the run's log (the server's, the UI's); `bertbuild run` prints it itself, so not twice on its terminal.
    logger.info("%s\n%s", result["title"], result["table"], extra=NOT_ON_CONSOLE)
    return outcome(result, run.path("results.json"))  # Failed, naming each failed gate, if one failed
