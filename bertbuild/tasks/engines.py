"""Prefect tasks that build, score, validate and time one engine each.

Every task takes the backend *name* and file paths, so tasks for different
precisions run side by side (`.submit`) on any task runner, Dask included.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from bertbuild.config import BenchmarkConfig, EvalConfig, ProfileConfig, Tolerance
from bertbuild.tasks.build import _save_outputs


def _profiles(profiles: list[ProfileConfig]):
    from bertbuild.backends.base import Profile

    return [Profile(tuple(p.min), tuple(p.opt), tuple(p.max)) for p in profiles]


def _eval_set(checkpoint_dir: str, eval_cfg: EvalConfig, lower_case: bool | None):
    from bertbuild.model.checkpoint import vocab_and_case
    from bertbuild.evaluation.score import prepare_eval_set

    return prepare_eval_set(eval_cfg, *vocab_and_case(checkpoint_dir, lower_case))


@task(name="build-engine")
def build_engine(backend: str, onnx_path: str, precision: str, profiles: list[ProfileConfig],
                 out_dir: str, threads: int | None) -> dict:
    from bertbuild.backends.registry import get_backend

    engine = get_backend(backend, threads=threads).build(Path(onnx_path), precision, _profiles(profiles), Path(out_dir))
    return {"path": str(engine.path), "backend": backend, "precision": precision, "onnx": onnx_path,
            "metadata": str(engine.metadata_path)}


@task(name="evaluate-engine")
def evaluate_engine(engine: dict, checkpoint_dir: str, eval_cfg: EvalConfig, lower_case: bool | None,
                    out_dir: str, threads: int | None) -> dict:
    from bertbuild.backends.registry import get_backend
    from bertbuild.evaluation.score import evaluate

    runner = get_backend(engine["backend"], threads=threads).load(Path(engine["path"]))
    runner.name = f"{engine['backend']}-{engine['precision']}"
    result = evaluate(runner, _eval_set(checkpoint_dir, eval_cfg, lower_case), eval_cfg)
    return {**_save_outputs(result, Path(out_dir), runner.name), "precision": engine["precision"]}


@task(name="validate-engine")
def validate_engine(engine: dict, reference_onnx: str, checkpoint_dir: str, eval_cfg: EvalConfig,
                    lower_case: bool | None, batches: int, tolerance: Tolerance, out_dir: str,
                    threads: int | None) -> dict:
    """Polygraphy comparison with the FP32 ONNX on the first `batches` SQuAD batches."""
    from itertools import islice

    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.backends.registry import get_backend
    from bertbuild.evaluation.validate import validate

    features = _eval_set(checkpoint_dir, eval_cfg, lower_case).features
    feeds = list(islice(features.batches(eval_cfg.batch_size), batches))
    reference = OnnxRuntimeRunner(reference_onnx, threads=threads, name="onnx-fp32-reference")
    candidate = get_backend(engine["backend"], threads=threads).load(Path(engine["path"]))
    report = validate(reference, candidate, feeds, tolerance.atol, tolerance.rtol, tolerance.error_stat)
    stem = Path(out_dir) / f"validation-{engine['backend']}-{engine['precision']}"
    report.save(stem)
    return {**report.to_json(), "text": report.to_text(), "report": f"{stem}.json"}


@task(name="benchmark-engine")
def benchmark_engine(engine: dict, checkpoint_dir: str, eval_cfg: EvalConfig, lower_case: bool | None,
                     bench: BenchmarkConfig, out_dir: str, threads: int | None) -> dict:
    """Latency and throughput on real held-out SQuAD windows at the benchmark shape."""
    from bertbuild.backends.registry import get_backend
    from bertbuild.evaluation.latency import machine_note, measure, squad_feed
    from bertbuild.model.checkpoint import vocab_and_case

    vocab, lower = vocab_and_case(checkpoint_dir, lower_case)
    feed = squad_feed(bench.batch, bench.seq, vocab, lower, dataset=eval_cfg.dataset)
    runner = get_backend(engine["backend"], threads=threads).load(Path(engine["path"]))
    stats = measure(runner, feed, warmup=bench.warmup, iterations=bench.iterations,
                    name=f"{engine['backend']}-{engine['precision']}")
    record = {**stats.to_dict(), "backend": engine["backend"], "precision": engine["precision"],
              "machine": machine_note()}
    path = Path(out_dir) / f"benchmark-{engine['backend']}-{engine['precision']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record
