"""Prefect tasks over one engine each: build, score, validate, compare with TensorFlow, time.

Each task is one step: scoring needs only the engine and the questions (so it
runs while the TensorFlow reference does); validation and the comparison need
the reference; the gates are judged once the engine is timed
(`evaluation.gates.engine_gates`, a pure function). Every task takes the
backend *name* and file paths, so tasks for different precisions run side by
side (`.submit`) on any task runner, Dask included. Each is a cached step
(`bertbuild.steps`): engines and timings per host kind; scoring and
validation per engine file.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bertbuild.config import BenchmarkConfig, EvalConfig, ProfileConfig, Tolerance
from bertbuild.resources import measured
from bertbuild.runs import RunContext
from bertbuild.step_results import Comparison, EngineRef, Reference, Scores, SquadFile, Timing, Validation
from bertbuild.steps import CachedStep, Work, cached_step

# Every engine step runs a backend: its runtime's version is in the key (OpenVINO's through `runtime_fields`,
# a field of the steps that run it only).
RUNTIMES = ("onnxruntime", "tensorrt", "numpy")


def _profiles(profiles: tuple[ProfileConfig, ...]):
    from bertbuild.runner import Profile

    return [Profile(tuple(p.min), tuple(p.opt), tuple(p.max)) for p in profiles]


def _runner(engine: EngineRef, threads: int | None):
    from bertbuild.backends.registry import get_backend
    from bertbuild.kinds import engine_name

    runner = get_backend(engine.backend, threads=threads).load(Path(engine.path))
    runner.name = engine_name(engine.backend, engine.precision)
    return runner


@cached_step("engine", task_name="build-engine", code=("bertbuild.backends.registry",), libraries=RUNTIMES,
             host=True)
def build_engine(backend: str, onnx_path: str, precision: str, profiles: tuple[ProfileConfig, ...],
                 run: RunContext, threads: int | None, float_parts: str | None = None) -> Work:
    """The `EngineRef` of an engine for this kind of host (with its weights file for OpenVINO IR).
    `float_parts`: an INT8 engine's float precision where the runtime chooses it."""
    from bertbuild.backends import registry
    from bertbuild.kinds import as_written
    from bertbuild.runner import read_metadata

    def produce(out: Path) -> dict:
        engine = registry.get_backend(backend, threads=threads).build(Path(onnx_path), precision,
                                                                     _profiles(profiles), out, float_parts)
        weights = engine.metadata.get("weights_file")
        return {"path": str(engine.path), "metadata": str(engine.metadata_path),
                **({"weights": str(engine.path.with_name(weights))} if weights else {})}

    def finish(built: dict) -> EngineRef:
        compute = read_metadata(built["path"]).get("compute_precision") or as_written(precision)
        return EngineRef(path=built["path"], metadata=built["metadata"], weights=built.get("weights"),
                         backend=backend, precision=str(precision), onnx=onnx_path, compute_precision=compute,
                         cached=built["cached"])

    fields = {"backend": backend, "precision": str(precision), "threads": threads,
              "profiles": [p.model_dump(mode="json") for p in profiles], **registry.runtime_fields(backend),
              **({"float_parts": float_parts} if float_parts else {})}
    return Work(produce, files=[onnx_path], fields=fields, finish=finish)


@cached_step("evaluation", task_name="score-engine", code=("bertbuild.evaluation.score", "bertbuild.backends.registry"),
             libraries=(*RUNTIMES, "tokenizers"))
def score_engine(engine: EngineRef, squad: SquadFile, eval_cfg: EvalConfig, run: RunContext,
                 threads: int | None) -> Work:
    """The engine's `Scores` over the run's SQuAD questions: EM/F1, its saved logits and predictions, its rates.

    Needs nothing of the TensorFlow reference, so it runs while the reference does.
    """
    from bertbuild.backends.registry import runtime_fields
    from bertbuild.evaluation import score
    from bertbuild.squad.sets import SquadSet

    def produce(out: Path) -> dict:
        runner = _runner(engine, threads)
        return score.save_outputs(score.evaluate(runner, SquadSet.load(squad.path), eval_cfg,
                                                 get_run_logger().info), out, runner.name)

    return Work(produce, files=[*engine.files, squad.path],
                fields={"eval": eval_cfg.model_dump(mode="json"), **runtime_fields(engine.backend)},
                finish=Scores.from_step)


@cached_step("validation", task_name="validate-engine",
             code=("bertbuild.evaluation.validate", "bertbuild.evaluation.polygraphy_log", "bertbuild.backends.registry",
                   "bertbuild.squad.sets"),
             libraries=(*RUNTIMES, "polygraphy"))
def validate_engine(engine: EngineRef, squad: SquadFile, reference: Reference, eval_cfg: EvalConfig, batches: int,
                    tolerance: Tolerance, run: RunContext, threads: int | None) -> Work:
    """Polygraphy's comparison of the engine with TensorFlow's saved RunResults on the validation batches.

    Its `Validation`: the report's JSON and text files are bundle files,
    and so is Polygraphy's log of the comparison beside them (`validation-<engine>.log`), which the terminal
    does not get (`bertbuild run -v` shows it).
    """
    from bertbuild.backends.registry import runtime_fields
    from bertbuild.evaluation import validate
    from bertbuild.squad.sets import SquadSet

    def produce(out: Path) -> dict:
        runner = _runner(engine, threads)
        feeds = validate.validation_feeds(SquadSet.load(squad.path).features, eval_cfg.batch_size,
                                          eval_cfg.length_bucket, batches)
        stem = out / f"validation-{runner.name}"
        report = validate.validate(reference.run_results, runner, feeds, tolerance.atol, tolerance.rtol,
                                   tolerance.error_stat, details=validate.log_path(stem))
        report.save(stem)
        return {**report.to_json(), "text": report.to_text(), "report": f"{stem}.json"}

    fields = {"batch_size": eval_cfg.batch_size, "length_bucket": eval_cfg.length_bucket, "batches": batches,
              "tolerance": tolerance.model_dump(mode="json"), **runtime_fields(engine.backend)}
    return Work(produce, files=[*engine.files, squad.path, reference.run_results], fields=fields,
                finish=Validation.from_step)


@task(name="compare-with-reference", cache_policy=NO_CACHE)
@measured("compare-with-reference")
def compare_with_reference(scored: Scores, squad: SquadFile, reference: Reference, run: RunContext) -> Comparison:
    """Against TensorFlow, by question and by logit: ΔEM and ΔF1 with paired bootstrap 95 % intervals
    (fixed seed), and the largest |Δlogit| over every window. `run`: whose step journal records it."""
    from bertbuild.evaluation.bootstrap import paired_bootstrap
    from bertbuild.evaluation.score import max_abs_logit_diff
    from bertbuild.squad.metrics import question_scores, read_predictions
    from bertbuild.squad.sets import SquadSet

    examples = SquadSet.load(squad.path).examples
    intervals = paired_bootstrap(question_scores(examples, read_predictions(reference.predictions)),
                                 question_scores(examples, read_predictions(scored.predictions)))
    return Comparison(delta={metric: interval.to_json() for metric, interval in intervals.items()},
                      max_abs_dlogit=max_abs_logit_diff(reference.logits, scored.logits))


@cached_step("benchmark", task_name="benchmark-engine",
             code=("bertbuild.evaluation.latency", "bertbuild.backends.registry"), libraries=(*RUNTIMES, "tokenizers"),
             host=True)
def benchmark_engine(engine: EngineRef, squad: SquadFile, bench: BenchmarkConfig, eval_cfg: EvalConfig,
                     model_vocab: str, lower_case: bool, run: RunContext, threads: int | None) -> Work:
    """The engine's `Timing`: latency and throughput on real held-out SQuAD windows at the benchmark shape.

    Reused from an earlier run of the same engine file on this kind of host
    only when `benchmark.reuse` is on; otherwise timed afresh, alone.
    """
    from bertbuild.backends.registry import runtime_fields
    from bertbuild.evaluation import latency
    from bertbuild.host import machine_note
    from bertbuild.squad.sets import SquadSet

    def produce(out: Path) -> dict:
        if bench.seq == eval_cfg.max_seq_length:  # the run's own held-out windows
            feed = latency.feed_from(SquadSet.load(squad.path).features, bench.batch)
        else:
            feed = latency.squad_feed(bench.batch, bench.seq, model_vocab, lower_case, dataset=eval_cfg.dataset)
        runner = _runner(engine, threads)
        stats = latency.measure(runner, feed, warmup=bench.warmup, iterations=bench.iterations, name=runner.name)
        record = {**stats.to_dict(), "backend": engine.backend, "precision": engine.precision,
                  "compute_precision": engine.compute_precision, "machine": machine_note()}
        path = out / f"benchmark-{runner.name}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        return {**record, "path": str(path)}

    fields = {"bench": bench.model_dump(mode="json", exclude={"reuse"}), "threads": threads,
              **runtime_fields(engine.backend)}
    return Work(produce, files=[*engine.files, squad.path], fields=fields, reuse=bench.reuse, finish=Timing.from_step)


# One cached check per file, inside one task (the files are few and each check takes milliseconds).
TRT_CHECK = CachedStep("trt_check", ("bertbuild.trt_check",), ("onnx",), wiring=(__name__,))


@task(name="check-tensorrt-ready", cache_policy=NO_CACHE)
@measured("check-tensorrt-ready")
def check_tensorrt_ready(onnx_files: dict[str, str], profiles: tuple[ProfileConfig, ...], required: bool,
                         run: RunContext) -> dict[str, dict]:
    """The static TensorRT readiness of every TensorRT-bound file: bundle name -> report (`trt_ready`).

    With `required` (a TensorRT build follows) a file that is not ready fails
    the run here, one line per offending node, before a GPU is touched.
    """
    from bertbuild import trt_check

    version = trt_check.host_version()
    reports = {}
    for name, path in onnx_files.items():
        def produce(out: Path, path=path) -> dict:
            return trt_check.check_onnx(path, trt_version=version, profiles=list(profiles)).to_json()

        fields = {"tensorrt": version, "profiles": [p.model_dump(mode="json") for p in profiles]}
        checked = TRT_CHECK.run(run, Work(produce, files=[path], fields=fields))
        reports[name] = {k: v for k, v in checked.items() if k != "cached"}
        if required and not reports[name]["ready"]:
            trt_check.check_onnx(path, trt_version=version, profiles=list(profiles)).require_ready()
    return reports
