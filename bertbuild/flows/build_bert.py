"""The `build-bert` flow: checkpoint -> ONNX per precision -> engines -> validated, gated, published.

Only wiring lives here; every step is a task in `tasks/` over pure functions in
`bertbuild/` and `artifacts/`. Run it with `bertbuild run --config configs/X.yaml`,
or as a Prefect deployment (`prefect deployment run build-bert/on-demand`).

    fetch -> export (fp32) -> TF reference
                 \\-> fuse (fused-fp32) -> fp16 ONNX
                                     \\-> calibrate (train half) -> int8 ONNX
    each ONNX -> engine -> EM/F1 + Polygraphy validation   (concurrent tasks)
             -> benchmark, one engine at a time (timings are not shared with other work)
    int8 misses its gate -> accuracy-driven fallback (sensitive nodes back to FP32)
    gates -> publish (released only if every gate passed) -> Prefect artifacts -> fail the run on a failed gate
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from bertbuild.config import BuildConfig, load_config, parse_config
from bertbuild.evaluation.gates import check_engine, check_parity, enforce, failures
from bertbuild.tasks.build import evaluate_tensorflow, export, max_abs_logit_diff, write_results
from bertbuild.tasks.engines import benchmark_engine, build_engine, evaluate_engine, validate_engine
from bertbuild.tasks.fetch import fetch_checkpoint_task
from bertbuild.tasks.fuse import fuse
from bertbuild.tasks.precision import calibrate_int8, fp16_onnx, int8_onnx, rank_int8_sensitivity
from bertbuild.tasks.publish import publish, render_plots, report_artifacts


def _config(config: str | dict | BuildConfig, overrides: list[str] | None) -> BuildConfig:
    if isinstance(config, BuildConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config, origin="flow parameter 'config'")
    return load_config(config, overrides or [])


def int8_variant(cfg: BuildConfig) -> str:
    """TensorRT takes only symmetric signed INT8; ONNX Runtime's CPU kernels prefer unsigned activations."""
    from bertbuild.precision.int8 import ACTIVATION_VARIANT

    return "s8s8" if cfg.engines.backend == "tensorrt" else ACTIVATION_VARIANT[cfg.precision.int8.activation_type]


def _row(evaluated: dict, validation: dict, reference: dict) -> dict:
    return {
        "engine": evaluated["engine"], "precision": evaluated["precision"],
        "exact_match": evaluated["exact_match"], "f1": evaluated["f1"],
        "f1_drop": round(reference["f1"] - evaluated["f1"], 2),
        "argmax_agreement": validation["argmax_agreement"], "validation_passed": validation["passed"],
        "questions": evaluated["questions"], "seconds": evaluated["seconds"],
    }


class _Build:
    """What the flow needs to build, score and validate one engine (keeps the task calls short)."""

    def __init__(self, cfg: BuildConfig, checkpoint_dir: str, reference_onnx: str, out: Path):
        self.cfg, self.checkpoint_dir, self.reference_onnx, self.out = cfg, checkpoint_dir, reference_onnx, out
        self.lower, self.threads = cfg.model.lower_case, cfg.engines.threads
        tags = ["tensorrt"] if cfg.engines.backend == "tensorrt" else []  # GPU concurrency limit, see prefect.yaml
        self.build_task = build_engine.with_options(tags=tags)

    def engine(self, onnx, precision: str, subdir: str | None = None):
        return self.build_task.submit(self.cfg.engines.backend, onnx, precision, list(self.cfg.engines.profiles),
                                      str(self.out / "engines" / (subdir or precision)), self.threads)

    def score(self, engine, precision: str, tag: str | None = None):
        """(evaluation, validation) futures for one engine future."""
        cfg, out = self.cfg, str(self.out if tag is None else self.out / tag)
        evaluated = evaluate_engine.submit(engine, self.checkpoint_dir, cfg.eval, self.lower, out, self.threads)
        validated = validate_engine.submit(engine, self.reference_onnx, self.checkpoint_dir, cfg.eval, self.lower,
                                           cfg.validation.batches, cfg.tolerance_for(precision), out, self.threads)
        return evaluated, validated

    def gated_row(self, evaluated: dict, validation: dict, reference: dict, precision: str):
        row = _row(evaluated, validation, reference)
        row["max_abs_dlogit"] = max_abs_logit_diff(reference, evaluated)
        results = check_engine(row, reference, self.cfg.gate_for(precision))
        return row, results


def _int8_fallback(build: _Build, onnx_path: str, calibration: dict, reference: dict,
                   logger) -> tuple[tuple, dict, list[str]]:
    """Return the most sensitive INT8 nodes to FP32 until the INT8 gates pass (or the budget is spent).

    Each try re-quantizes from the same cached calibration, rebuilds the
    engine and scores it on the same questions as every other engine, all
    under its own directory `int8-fallback-<nodes>/`. Returns the kept try's
    (engine, evaluation, validation, row, gate results), the report, and the
    directories of the rejected tries (never published).
    """
    from bertbuild.precision.fallback import run_fallback

    cfg = build.cfg
    variant = int8_variant(cfg)
    int8_cfg = cfg.precision.int8.model_dump()
    ranking = rank_int8_sensitivity(onnx_path, calibration, build.checkpoint_dir, build.lower, cfg.eval.dataset,
                                    int8_cfg, variant, cfg.precision.fallback.sensitivity_batches, build.threads)
    tries: dict[str, tuple] = {}

    def quantize(excluded: list[str]) -> str:
        tag = f"int8-fallback-{len(excluded)}"
        made = int8_onnx(onnx_path, str(build.out / tag), calibration, int8_cfg, excluded)
        return made["paths"][variant]

    def evaluate(path: str) -> dict:
        tag = Path(path).parent.name
        engine = build.engine(path, "int8", subdir=tag).result()
        evaluated, validated = (f.result() for f in build.score(engine, "int8", tag))
        row, results = build.gated_row(evaluated, validated, reference, "int8")
        tries[path] = (engine, evaluated, validated, row, results)
        return {"exact_match": row["exact_match"], "f1": row["f1"], "passed": not failures(results)}

    report = run_fallback(quantize, evaluate, lambda metrics: metrics["passed"],
                          [node for node, _ in ranking], cfg.precision.fallback)
    for step in report.steps:
        logger.info("int8 fallback: %d nodes in FP32 -> F1 %.2f, %s", len(step.excluded), step.metrics["f1"],
                    "passed" if step.passed else "failed")
    rejected = [Path(step.path).parent.name for step in report.steps if step.path != report.final_path]
    return tries[report.final_path], report.to_json(), rejected


def _onnx_files(cfg: BuildConfig, exported: dict, checkpoint_dir: str, out: Path) -> tuple[dict, dict]:
    """(precision -> ONNX path or future, reports): the file each precision's engine builds from."""
    precisions = cfg.engines.precisions
    files, reports = {"fp32": exported["path"]}, {}
    if not set(precisions) - {"fp32"}:
        return files, reports
    fused = fuse(exported["path"], str(out / "model-fused.onnx"), exported["num_layers"])  # seconds
    files["fused-fp32"], reports["fusion"] = fused["path"], fused["report"]
    if "fp16" in precisions:
        files["fp16"] = fp16_onnx.submit(fused["path"], str(out / "model-fp16.onnx"),
                                         cfg.precision.fp16.model_dump())
    if "int8" in precisions:
        calibration = calibrate_int8.submit(fused["path"], checkpoint_dir, cfg.model.lower_case,
                                            cfg.precision.int8.model_dump(), cfg.eval.dataset,
                                            str(out / "calibration"), cfg.engines.threads)
        files["int8"] = int8_onnx.submit(fused["path"], str(out / "int8"), calibration,
                                         cfg.precision.int8.model_dump(), [])
        reports["calibration"] = calibration
    return files, reports


@flow(name="build-bert")
def build_bert(config: str | dict = "configs/default.yaml", overrides: list[str] | None = None) -> dict:
    """Build, score, validate, gate and publish engines for one checkpoint; returns the results."""
    cfg = _config(config, overrides)
    logger = get_run_logger()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)

    checkpoint_dir = fetch_checkpoint_task(cfg.model.source, cfg.model.sha256, str(out / "checkpoints"))
    exported = export(checkpoint_dir, str(out / "model-fp32.onnx"), cfg.export.opset, cfg.model.lower_case)
    logger.info("exported %s (%s nodes) in %.1f s", exported["path"], exported["nodes"], exported["seconds"])
    reference = evaluate_tensorflow(checkpoint_dir, cfg.eval, cfg.model.lower_case, str(out))

    files, made = _onnx_files(cfg, exported, checkpoint_dir, out)
    build = _Build(cfg, checkpoint_dir, exported["path"], out)
    variant = int8_variant(cfg)
    engines, scored, reports = {}, {}, {"fusion": made.get("fusion")}
    if "calibration" in made:
        reports["calibration"] = made["calibration"].result()
    for precision in cfg.engines.precisions:  # builds and scoring of every precision run side by side
        onnx = files[precision]
        if precision in ("fp16", "int8"):
            written = onnx.result()
            reports[precision] = written
            onnx = written["paths"][variant] if precision == "int8" else written["path"]
        engines[precision] = build.engine(onnx, precision)
        # INT8 files live under int8/ so a try the fallback replaces can be left out whole.
        scored[precision] = build.score(engines[precision], precision, "int8" if precision == "int8" else None)

    rows, gate_results, rejected = [], [], []  # rejected: run subdirectories of replaced INT8 tries
    for precision in cfg.engines.precisions:
        engine = engines[precision].result()
        evaluated, validation = (f.result() for f in scored[precision])
        row, results = build.gated_row(evaluated, validation, reference, precision)
        if precision == "int8" and failures(results) and cfg.precision.fallback.enabled:
            logger.warning("int8 missed its gates (%s); trying the accuracy fallback",
                           "; ".join(r.describe() for r in failures(results)))
            kept, reports["int8_fallback"], tried = _int8_fallback(
                build, files["fused-fp32"], made["calibration"].result(), reference, logger)
            engine, evaluated, validation, row, results = kept
            rejected += ["int8", *tried]
        # One engine at a time, after its scoring: latency is never measured beside other work.
        bench = benchmark_engine(engine, checkpoint_dir, cfg.eval, cfg.model.lower_case, cfg.benchmark,
                                 str(out), cfg.engines.threads)
        row.update(seq_per_s=bench["sequences_per_s"], p50_ms=bench["p50_ms"], p99_ms=bench["p99_ms"])
        results += check_engine(row, reference, _throughput_only(cfg.gate_for(precision)))
        logger.info(validation["text"])
        row["gates"] = "PASS" if not failures(results) else "FAIL"
        rows.append(row)
        gate_results += results
        reports[precision] = {"validation": validation["report"], "predictions": evaluated["predictions"],
                              "engine": engine["path"], "onnx": engine["onnx"],
                              **({"written": reports[precision]} if precision in reports else {})}

    # The unfused FP32 export must match TensorFlow to parity.max_abs_logit (issue: 1e-4).
    for row in rows:
        if row["precision"] == "fp32":
            parity = check_parity(row, cfg.parity.max_abs_logit)
            gate_results.append(parity)
            row["gates"] = "PASS" if parity.passed and row["gates"] == "PASS" else "FAIL"

    reference_row = {k: reference[k] for k in ("engine", "exact_match", "f1", "questions", "seconds")}
    all_rows = [reference_row | {"precision": "fp32 (reference)"}, *rows]
    meta = {"model": cfg.model_name, "export": exported, "config": cfg.model_dump(mode="json"),
            "gates": [g.to_json() for g in gate_results], "reports": reports}
    table = write_results(all_rows, meta, str(out))
    title = f"{cfg.model_name}: {reference['questions']} SQuAD v1.1 {cfg.eval.split} questions, backend {cfg.engines.backend}"
    logger.info("%s\n%s", title, table)
    result = {"title": title, "table": table, "rows": all_rows, **meta}
    if cfg.publish.enabled:
        result["published"] = _publish(cfg, out, all_rows, meta, gate_results, rejected)
    enforce(gate_results)
    return result


def _throughput_only(gate):
    """The gate with only its throughput threshold (the rest were checked before the benchmark)."""
    return gate.model_copy(update=dict(min_em=None, min_f1=None, max_em_drop=None, max_f1_drop=None,
                                       min_argmax_agreement=None, require_validation=False))


def _publish(cfg: BuildConfig, out: Path, rows: list[dict], meta: dict, gate_results, rejected: list[str]) -> dict:
    """Bundle the run directory; a failed run publishes only its reports, under failed/.

    INT8 tries the fallback replaced (`rejected` subdirectories and their
    engines) are left out: only engines that passed their gates are published.
    """
    from bertbuild.artifacts.publish import DEFAULT_EXCLUDE, bundle_files, gate_result
    from bertbuild.artifacts.store import default_store

    plots = render_plots(rows, str(out))
    left_out = DEFAULT_EXCLUDE + tuple(p for tag in rejected for p in (f"{tag}/*", f"engines/{tag}/*"))
    files = {name: str(path) for name, path in bundle_files(out, left_out).items()}  # plots are under out/ now
    gates = [gate_result(f"{g.engine}:{g.gate}", g.passed, g.measured, g.threshold, g.describe())
             for g in gate_results]
    published = publish(cfg.publish.store or default_store(), cfg.model_name, files,
                        {k: v for k, v in meta.items() if k != "reports"}, gates)
    report_artifacts(published, rows, plots)
    return published
