"""The `build-bert` flow: checkpoint -> ONNX per precision -> engines -> scored, validated, gated, published.

Wiring only: each step is a task in `bertbuild/tasks/` over pure functions, and
each expensive one is cached by content. Run it with `bertbuild run --config
configs/X.yaml`, or as a deployment (`prefect deployment run build-bert/on-demand`).

    fetch -> featurize SQuAD (once) -> export -> TensorFlow reference (+ Polygraphy RunResults)
          -> fuse -> FP16;  -> choose-int8 subflow (calibrate, tune split, fallback)
    every ONNX -> engine -> score (EM/F1, validation vs TensorFlow, gates)   side by side
    then each engine timed alone -> publish exactly this run's files -> fail the run on a failed gate
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from bertbuild.config import ConfigParameter, with_overrides
from bertbuild.evaluation.gates import finish_row
from bertbuild.flows.int8 import choose_int8
from bertbuild.memory_budget import check_memory, engine_groups, side_by_side
from bertbuild.model.export import weight_bytes
from bertbuild.model.checkpoint import CONFIG_FILE, read_config
from bertbuild.flows.publishing import (current_attempt, current_run_id, engine_files, outcome, publish_run,
                                        tensorrt_files)
from bertbuild.precision import Precision
from bertbuild.runs import check_commit, open_run
from bertbuild.sharing import threads_each
from bertbuild.backends.base import engine_name
from bertbuild.backends.registry import TENSORRT_BACKENDS, resolve_backend
from bertbuild.tasks.engines import benchmark_engine, build_engine, check_tensorrt_ready, score_engine
from bertbuild.tasks.model import export_onnx, fetch_model, tensorflow_reference
from bertbuild.tasks.precision import fp16_onnx, fuse
from bertbuild.tasks.squad import featurize_squad


@flow(name="build-bert")
def build_bert(config: ConfigParameter = "configs/default.yaml", overrides: list[str] | None = None,
               require_commit: str | None = None) -> dict:
    """Build, score, validate, gate and publish engines for one checkpoint; returns the results.

    `require_commit`: a CI gate's commit; the run refuses to start unless this code is that commit, clean
    (a worker runs its own checkout, which need not be what was pushed).
    """
    if require_commit:
        check_commit(require_commit)
    cfg = with_overrides(config, overrides or [])
    logger = get_run_logger()
    run = open_run(cfg.output_dir, cfg.model_name, current_run_id(), cache_enabled=cfg.cache.enabled,
                   cache_dir=cfg.cache.dir, refresh=cfg.cache.refresh, attempt=current_attempt())
    backend, why = resolve_backend(cfg.engines.backend)
    logger.info("run directory %s; backend %s (%s)", run.run_dir, backend, why)
    cfg = cfg.model_copy(update={"engines": cfg.engines.model_copy(update={"backend": backend})})
    threads, precisions = cfg.engines.threads, cfg.engines.precisions

    model = fetch_model(cfg.model, cfg.model_name)
    model_config = read_config(Path(model.checkpoint_dir) / CONFIG_FILE)
    if cfg.resources.check_memory:  # before any heavy step: refuse a build that clearly cannot fit
        check_memory(model_config, cfg.model.source)
    squad = featurize_squad(model, cfg.eval, run)
    exported = export_onnx(model, cfg.export, run)
    reference = tensorflow_reference.submit(model, squad, cfg.eval, cfg.validation, run)
    if not side_by_side(weight_bytes(model_config)):
        reference.wait()  # a big model: the TensorFlow child and the flow's heavy steps never hold memory at once
    onnx = {Precision.FP32: exported["path"]}
    files = {"model-fp32.onnx": exported["path"], "vocab.txt": model.vocab_path}
    reports, gates = {"export": exported}, []
    if set(precisions) - {Precision.FP32}:
        fused = fuse(exported, model, run, cfg.export.external_data)
        onnx[Precision.FUSED_FP32], files["model-fused.onnx"], reports["fusion"] = fused["path"], fused["path"], \
            fused["report"]
        if Precision.FP16 in precisions:
            reports["fp16"] = fp16_onnx(fused, cfg.precision.fp16, run, cfg.export.external_data)
            onnx[Precision.FP16] = files["model-fp16.onnx"] = reports["fp16"]["path"]
        if Precision.INT8 in precisions:
            variant = "s8s8" if backend in TENSORRT_BACKENDS else cfg.precision.int8.variant  # TensorRT: signed only
            int8 = choose_int8(fused, model, cfg, run, variant, engine_name(backend, Precision.INT8))
            written = int8["written"]
            onnx[Precision.INT8] = written["paths"][variant]
            files.update({f"int8/{Path(path).name}": path for path in written["paths"].values()})
            files["int8/calibration.json"] = int8["calibration"]["cache_path"]
            reports.update(int8=written, calibration=int8["calibration"], tune=int8["tune"], int8_choice=int8["report"])
            gates.append(int8["gate"])

    reports["trt_ready"] = check_tensorrt_ready(tensorrt_files(files), cfg.engines.profiles,
                                                backend in TENSORRT_BACKENDS, run)
    scored = {}  # all scoring done before any timing; `at_once` engines are held in memory together
    for group in engine_groups(precisions, cfg.engines.concurrent, weight_bytes(model_config)):
        engines = {p: build_engine.with_options(tags=["tensorrt"] if backend in TENSORRT_BACKENDS else [])
                   .submit(backend, onnx[p], p, cfg.engines.profiles, run, threads) for p in group}
        share = threads_each(threads, len(group))  # side by side: a share of the cores each, no spinning
        scoring = {p: score_engine.submit(engines[p], squad, reference, cfg.eval, cfg.validation.batches,
                                          cfg.tolerance_for(p), cfg.gate_for(p), run, share) for p in group}
        scored |= {p: future.result() for p, future in scoring.items()}
    reference = reference.result()
    rows, decided = [], gates  # `decided`: gates made before scoring (the INT8 tune gate)
    gates = []
    for precision in precisions:  # one engine at a time, with nothing else running: timings are not shared
        result = scored[precision]
        bench = benchmark_engine(result["engine"], squad, cfg.benchmark, cfg.eval, model.vocab_path,
                                 model.lower_case, run, threads)
        timed = {**result["row"], "seq_per_s": bench["sequences_per_s"], "p50_ms": bench["p50_ms"],
                 "p99_ms": bench["p99_ms"]}
        row, checks = finish_row(timed, reference, cfg.gate_for(precision), result["gates"],
                                 cfg.parity.max_abs_logit if precision == Precision.FP32 else None, decided)
        rows.append(row)
        gates += checks
        files.update(engine_files(result, bench))
        reports.setdefault("outputs", {})[row["engine"]] = {"logits": result["files"]["logits"], **result["engine"]}
        logger.info(result["files"]["validation_text"])

    orphans = [g for g in decided if g["engine"] not in {row["engine"] for row in rows}]
    if orphans:  # a gate decided before scoring must judge an engine of this run, or it would vanish unseen
        raise RuntimeError(f"gate(s) for engines this run did not score: {orphans}")
    reference_row = {k: reference.get(k) for k in ("engine", "exact_match", "f1", "questions", "seconds",
                                                   "windows_per_s", "real_tokens_per_s")}
    all_rows = [reference_row | {"precision": "fp32 (reference)"}, *rows]
    files[f"predictions-{reference['engine']}.json"] = reference["predictions"]
    result = publish_run(cfg, run, all_rows, files, reports, gates, checkpoint_dir=model.checkpoint_dir)
    logger.info("%s\n%s", result["title"], result["table"])
    return outcome(result, run.path("results.json"))  # Failed, naming each failed gate, if one failed
