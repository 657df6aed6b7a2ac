"""Prefect tasks that build, score and time one engine each.

Every task takes the backend *name* and file paths, so tasks for different
precisions run side by side (`.submit`) on any task runner, Dask included.
Engines and timings are cached per host kind; scoring is cached per engine file.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bertbuild.config import BenchmarkConfig, EvalConfig, GateConfig, ProfileConfig, Tolerance
from bertbuild.resources import measured
from bertbuild.runs import RunContext


def _profiles(profiles: tuple[ProfileConfig, ...]):
    from bertbuild.backends.base import Profile

    return [Profile(tuple(p.min), tuple(p.opt), tuple(p.max)) for p in profiles]


def _runner(engine: dict, threads: int | None):
    from bertbuild.backends.base import engine_name
    from bertbuild.backends.registry import get_backend

    runner = get_backend(engine["backend"], threads=threads).load(Path(engine["path"]))
    runner.name = engine_name(engine["backend"], engine["precision"])
    return runner


@task(name="build-engine", cache_policy=NO_CACHE)
@measured("build-engine")
def build_engine(backend: str, onnx_path: str, precision: str, profiles: tuple[ProfileConfig, ...],
                 run: RunContext, threads: int | None) -> dict:
    """{"path", "backend", "precision", "onnx", "metadata"}: an engine for this kind of host."""
    from bertbuild.backends import base, onnxrt, registry, tensorrt
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        engine = registry.get_backend(backend, threads=threads).build(Path(onnx_path), precision,
                                                                     _profiles(profiles), out)
        return {"path": str(engine.path), "metadata": str(engine.metadata_path)}

    fields = {"backend": backend, "precision": str(precision), "threads": threads,
              "profiles": [p.model_dump(mode="json") for p in profiles]}
    key = step_key("engine", files=[onnx_path], fields=fields, modules=[base, onnxrt, tensorrt], host=True)
    built = run.cache.run("engine", key, produce)
    return {**built, "backend": backend, "precision": str(precision), "onnx": onnx_path}


@task(name="score-engine", cache_policy=NO_CACHE)
@measured("score-engine")
def score_engine(engine: dict, squad: dict, reference: dict, eval_cfg: EvalConfig, batches: int,
                 tolerance: Tolerance, gate: GateConfig, run: RunContext, threads: int | None) -> dict:
    """One engine's results row, its Polygraphy validation against TensorFlow, and its accuracy gates.

    The row: EM/F1 and their drop vs TensorFlow, max |Δlogit| vs TensorFlow over
    every window, start/end argmax agreement with TensorFlow and whether
    Polygraphy's comparison with TensorFlow's saved RunResults passed.
    """
    from bertbuild.evaluation import score, validate
    from bertbuild.evaluation.gates import check_engine, without_throughput
    from bertbuild.squad.sets import SquadSet
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        eval_set = SquadSet.load(squad["path"])
        runner = _runner(engine, threads)
        result = score.save_outputs(score.evaluate(runner, eval_set, eval_cfg, get_run_logger().info), out, runner.name)
        feeds = validate.validation_feeds(eval_set.features, eval_cfg.batch_size, eval_cfg.length_bucket, batches)
        report = validate.validate(reference["run_results"], runner, feeds, tolerance.atol, tolerance.rtol,
                                   tolerance.error_stat)
        stem = out / f"validation-{runner.name}"
        report.save(stem)
        return {**result, "validation": report.to_json(), "validation_text": report.to_text(),
                "validation_report": f"{stem}.json"}

    fields = {"eval": eval_cfg.model_dump(mode="json"), "batches": batches,
              "tolerance": tolerance.model_dump(mode="json")}
    key = step_key("evaluation", files=[engine["path"], squad["path"], reference["run_results"]], fields=fields,
                   modules=[score, validate])
    scored = run.cache.run("evaluation", key, produce)
    validation = scored["validation"]
    row = {
        "engine": scored["engine"], "precision": engine["precision"],
        "exact_match": scored["exact_match"], "f1": scored["f1"],
        "f1_drop": round(reference["f1"] - scored["f1"], 2),
        "delta": paired_delta(squad["path"], reference["predictions"], scored["predictions"]),
        "max_abs_dlogit": score.max_abs_logit_diff(reference["logits"], scored["logits"]),
        "argmax_agreement": validation["argmax_agreement"], "validation_passed": validation["passed"],
        "questions": scored["questions"], "seconds": scored["seconds"],
        # the scoring pass's rate on the run's held-out windows, batched as eval.length_bucket says; engines
        # score side by side (engines.concurrent), so it is a rate under contention: seq/s is the benchmark
        "windows_per_s": scored.get("windows_per_s"), "real_tokens_per_s": scored.get("real_tokens_per_s"),
    }
    gates = check_engine(row, reference, without_throughput(gate))  # throughput: judged once timed (finish_row)
    return {"row": row, "gates": [g.to_json() for g in gates], "files": scored, "engine": engine}


def paired_delta(squad_path: str, reference_predictions: str, predictions: str) -> dict:
    """ΔEM and ΔF1 against the reference with paired bootstrap 95 % intervals (fixed seed), by question."""
    from bertbuild.evaluation.bootstrap import paired_bootstrap
    from bertbuild.squad.metrics import question_scores, read_predictions
    from bertbuild.squad.sets import SquadSet

    examples = SquadSet.load(squad_path).examples
    intervals = paired_bootstrap(question_scores(examples, read_predictions(reference_predictions)),
                                 question_scores(examples, read_predictions(predictions)))
    return {metric: interval.to_json() for metric, interval in intervals.items()}


@task(name="benchmark-engine", cache_policy=NO_CACHE)
@measured("benchmark-engine")
def benchmark_engine(engine: dict, squad: dict, bench: BenchmarkConfig, eval_cfg: EvalConfig, model_vocab: str,
                     lower_case: bool, run: RunContext, threads: int | None) -> dict:
    """Latency and throughput on real held-out SQuAD windows at the benchmark shape.

    Reused from an earlier run of the same engine file on this kind of host
    only when `benchmark.reuse` is on; otherwise timed afresh, alone.
    """
    from bertbuild.evaluation import latency
    from bertbuild.squad.sets import SquadSet
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        if bench.seq == eval_cfg.max_seq_length:  # the run's own held-out windows
            feed = latency.feed_from(SquadSet.load(squad["path"]).features, bench.batch)
        else:
            feed = latency.squad_feed(bench.batch, bench.seq, model_vocab, lower_case, dataset=eval_cfg.dataset)
        runner = _runner(engine, threads)
        stats = latency.measure(runner, feed, warmup=bench.warmup, iterations=bench.iterations, name=runner.name)
        record = {**stats.to_dict(), "backend": engine["backend"], "precision": engine["precision"],
                  "machine": latency.machine_note()}
        path = out / f"benchmark-{runner.name}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        return {**record, "path": str(path)}

    fields = {"bench": bench.model_dump(mode="json", exclude={"reuse"}), "threads": threads}
    key = step_key("benchmark", files=[engine["path"], squad["path"]], fields=fields, modules=[latency], host=True)
    return run.timing_cache(bench.reuse).cache.run("benchmark", key, produce)


@task(name="check-tensorrt-ready", cache_policy=NO_CACHE)
@measured("check-tensorrt-ready")
def check_tensorrt_ready(onnx_files: dict[str, str], profiles: tuple[ProfileConfig, ...], required: bool,
                         run: RunContext) -> dict[str, dict]:
    """The static TensorRT readiness of every TensorRT-bound file: bundle name -> report (`trt_ready`).

    With `required` (a TensorRT build follows) a file that is not ready fails
    the run here, one line per offending node, before a GPU is touched.
    """
    from bertbuild import trt_check
    from bertbuild.step_cache import package_modules, step_key

    version = trt_check.host_version()
    reports = {}
    for name, path in onnx_files.items():
        def produce(out: Path, path=path) -> dict:
            return trt_check.check_onnx(path, trt_version=version, profiles=list(profiles)).to_json()

        fields = {"tensorrt": version, "profiles": [p.model_dump(mode="json") for p in profiles]}
        key = step_key("trt_check", files=[path], fields=fields, modules=package_modules(trt_check))
        reports[name] = {k: v for k, v in run.cache.run("trt_check", key, produce).items() if k != "cached"}
        if required and not reports[name]["ready"]:
            trt_check.check_onnx(path, trt_version=version, profiles=list(profiles)).require_ready()
    return reports
