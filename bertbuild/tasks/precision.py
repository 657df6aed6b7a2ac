"""Prefect tasks that write the fused, FP16 and INT8 ONNX files (the file carries the precision).

Each is a thin wrapper over `bertbuild.fuse` / `bertbuild.precision`, cached by
content: the key holds the input file's sha256 and the config fields the step
reads, so a rerun with an unchanged model reuses every file, and changing only
a gate threshold rebuilds nothing.

`external_data` (the config's `export.external_data`): how the written files
keep their weights (`bertbuild.onnx_files`). None, the default, follows each
step's input: a model past protobuf's 2 GB limit stays external while it is
over it, and an input external by choice keeps its outputs external.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bertbuild.precision.config import Fp16Config, Int8Config
from bertbuild.squad.batching import DEFAULT_LENGTH_BUCKET
from bertbuild.resources import measured
from bertbuild.runs import RunContext
from bertbuild.tasks.model import ModelInfo


def _external(external_data: bool | None) -> dict:
    """The cache-key field for `external_data`: none when unset, so existing keys stay valid."""
    return {} if external_data is None else {"external_data": external_data}


@task(name="fuse-onnx", cache_policy=NO_CACHE)
@measured("fuse-onnx")
def fuse(exported: dict, model: ModelInfo, run: RunContext, external_data: bool | None = None) -> dict:
    """{"path": fused file, "report": FusionReport}; a wrong fusion count fails the task."""
    from bertbuild import fuse as fusion
    from bertbuild import onnx_files
    from bertbuild.step_cache import package_modules, step_key

    def produce(out: Path) -> dict:
        report = fusion.fuse_onnx(exported["path"], out / "model-fused.onnx", model.num_layers,
                                  external_data=external_data)
        return {"path": str(out / "model-fused.onnx"), "report": report.to_dict()}

    key = step_key("fuse", files=[exported["path"]], fields={"layers": model.num_layers, **_external(external_data)},
                   modules=[*package_modules(fusion), onnx_files])
    return run.cache.run("fuse", key, produce)


def _sixteen_bit(step: str, convert, fused: dict, fp16_cfg: Fp16Config, run: RunContext,
                 external_data: bool | None) -> dict:
    """The FP16 or BF16 file (`convert`) with FP32 islands, cached under `step`; its report as a dict."""
    from bertbuild import onnx_files
    from bertbuild.precision import fp16
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        return convert(fused["path"], out / f"model-{step}.onnx", fp16_cfg, external_data).to_json()

    fields = {**fp16_cfg.model_dump(mode="json"), **_external(external_data)}
    key = step_key(step, files=[fused["path"]], fields=fields, modules=[fp16, onnx_files])
    return run.cache.run(step, key, produce)


@task(name="fp16-onnx", cache_policy=NO_CACHE)
@measured("fp16-onnx")
def fp16_onnx(fused: dict, fp16_cfg: Fp16Config, run: RunContext, external_data: bool | None = None) -> dict:
    """FP16 file with FP32 islands; the Fp16Report as a dict (with "path")."""
    from bertbuild.precision import fp16

    return _sixteen_bit("fp16", fp16.convert_to_fp16, fused, fp16_cfg, run, external_data)


@task(name="bf16-onnx", cache_policy=NO_CACHE)
@measured("bf16-onnx")
def bf16_onnx(fused: dict, fp16_cfg: Fp16Config, run: RunContext, external_data: bool | None = None) -> dict:
    """BF16 file with the FP16 file's FP32 islands (`precision.fp16` names them); the report as a dict."""
    from bertbuild.precision import fp16

    return _sixteen_bit("bf16", fp16.convert_to_bf16, fused, fp16_cfg, run, external_data)


def calibration_windows(model: ModelInfo, int8_cfg: Int8Config, dataset: str,
                        length_bucket: int = DEFAULT_LENGTH_BUCKET):
    """The train-half windows calibration reads (seeded; no held-out question is read), batched by `length_bucket`."""
    from bertbuild.precision.calibration_set import calibration_set

    return calibration_set(int8_cfg, model.vocab_path, model.lower_case, dataset, length_bucket=length_bucket)


def _int8_fields(int8_cfg: Int8Config, dataset: str, model: ModelInfo,
                 length_bucket: int = DEFAULT_LENGTH_BUCKET) -> dict:
    return {"int8": int8_cfg.model_dump(mode="json"), "dataset": dataset, "lower_case": model.lower_case,
            "length_bucket": length_bucket}


@task(name="prepare-int8-source", cache_policy=NO_CACHE)
@measured("prepare-int8-source")
def prepare_int8_source(fused: dict, model: ModelInfo, int8_cfg: Int8Config, dataset: str, run: RunContext,
                        threads: int | None, external_data: bool | None = None,
                        length_bucket: int = DEFAULT_LENGTH_BUCKET) -> dict:
    """The FP32 file INT8 is written from: the fused graph, smoothed and outlier-split when configured."""
    from bertbuild import onnx_files
    from bertbuild.precision import outliers, recipe, smoothing
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        source, techniques = recipe.prepare_source(fused["path"], out,
                                                   calibration_windows(model, int8_cfg, dataset, length_bucket),
                                                   int8_cfg, threads, external_data)
        return {"path": str(source), "techniques": techniques}

    key = step_key("int8", files=[fused["path"], model.vocab_path],
                   fields={**_int8_fields(int8_cfg, dataset, model, length_bucket), **_external(external_data)},
                   modules=[recipe, smoothing, outliers, onnx_files])
    return run.cache.run("int8", key, produce)


@task(name="calibrate-int8", cache_policy=NO_CACHE)
@measured("calibrate-int8")
def calibrate_int8(source: dict, model: ModelInfo, int8_cfg: Int8Config, dataset: str, run: RunContext,
                   threads: int | None, length_bucket: int = DEFAULT_LENGTH_BUCKET) -> dict:
    """Activation ranges of the prepared file from train-half windows; the summary, ranges file as "cache_path"."""
    from bertbuild.precision import calibration, range_choice
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        samples = calibration_windows(model, int8_cfg, dataset, length_bucket)
        return calibration.calibrate(source["path"], samples, int8_cfg, out, threads,
                                     log=get_run_logger().info).summary()

    key = step_key("calibration", files=[source["path"], model.vocab_path],
                   fields=_int8_fields(int8_cfg, dataset, model, length_bucket), modules=[calibration, range_choice])
    return run.cache.run("calibration", key, produce)


@task(name="int8-onnx", cache_policy=NO_CACHE)
@measured("int8-onnx")
def int8_onnx(source: dict, calibration: dict, model: ModelInfo, int8_cfg: Int8Config, dataset: str,
              excluded: list[str], run: RunContext, threads: int | None, external_data: bool | None = None,
              length_bucket: int = DEFAULT_LENGTH_BUCKET) -> dict:
    """Every INT8 file (s8s8 for TensorRT, u8s8, and ONNX Runtime's own) with `excluded` nodes left in FP32."""
    from bertbuild import onnx_files
    from bertbuild.precision import bias_correction, int8, ort_int8, recipe
    from bertbuild.precision.ranges import load_calibration
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        samples = calibration_windows(model, int8_cfg, dataset, length_bucket) if int8_cfg.bias_correction else None
        return recipe.write_int8_files(source["path"], out, load_calibration(calibration["cache_path"]),
                                       int8_cfg, samples, excluded, threads=threads,
                                       external_data=external_data).to_json()

    fields = {**_int8_fields(int8_cfg, dataset, model, length_bucket), "excluded": sorted(excluded),
              **_external(external_data)}
    key = step_key("int8", files=[source["path"], calibration["cache_path"]], fields=fields,
                   modules=[recipe, int8, ort_int8, bias_correction, onnx_files])
    return run.cache.run("int8", key, produce)


@task(name="rank-int8-sensitivity", cache_policy=NO_CACHE)
@measured("rank-int8-sensitivity")
def rank_int8_sensitivity(source: dict, calibration: dict, model: ModelInfo, int8_cfg: Int8Config, dataset: str,
                          variant: str, batches: int, run: RunContext, threads: int | None,
                          length_bucket: int = DEFAULT_LENGTH_BUCKET) -> list[list]:
    """[node, noise-to-signal] for every INT8 MatMul, most sensitive first (train-half windows only)."""
    from bertbuild.precision.ranges import load_calibration
    from bertbuild.precision import sensitivity
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        ranked = sensitivity.rank_sensitivity(source["path"], load_calibration(calibration["cache_path"]),
                                              calibration_windows(model, int8_cfg, dataset, length_bucket),
                                              variant, batches,
                                              int8_cfg.batch_size, threads)
        return {"ranking": [[s.node, s.noise_to_signal] for s in ranked]}

    fields = {**_int8_fields(int8_cfg, dataset, model, length_bucket), "variant": variant, "batches": batches}
    key = step_key("sensitivity", files=[source["path"], calibration["cache_path"], model.vocab_path],
                   fields=fields, modules=[sensitivity])
    return run.cache.run("sensitivity", key, produce)["ranking"]


@task(name="tune-windows", cache_policy=NO_CACHE)
@measured("tune-windows")
def tune_windows(model: ModelInfo, tune_cfg, calibration: dict, eval_cfg, run: RunContext) -> dict:
    """The tune split as a `SquadSet` file: seeded train-half questions that calibration did not read."""
    from bertbuild.precision.ranges import load_calibration
    from bertbuild.precision import tuning
    from bertbuild.squad import sets
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        used = set(load_calibration(calibration["cache_path"]).question_ids)
        chosen = tuning.tune_set(eval_cfg.dataset, model.vocab_path, model.lower_case, tune_cfg.questions,
                                 tune_cfg.seed, used, max_seq_length=eval_cfg.max_seq_length,
                                 doc_stride=eval_cfg.doc_stride, max_query_length=eval_cfg.max_query_length)
        return {"path": str(chosen.save(out / "squad-tune.npz")), "questions": len(chosen.examples),
                "windows": len(chosen), "question_ids": chosen.question_ids, "seed": tune_cfg.seed}

    fields = {"tune": tune_cfg.model_dump(mode="json", include={"questions", "seed"}),
              "eval": eval_cfg.model_dump(mode="json"), "lower_case": model.lower_case}
    key = step_key("tune", files=[model.vocab_path, calibration["cache_path"]], fields=fields,
                   modules=[tuning, sets])
    return run.cache.run("tune", key, produce)


@task(name="tune-try", cache_policy=NO_CACHE)
@measured("tune-try")
def tune_try(onnx_path: str, tune: dict, reference_onnx: str, batch_size: int, bench, run: RunContext,
             threads: int | None, length_bucket: int = DEFAULT_LENGTH_BUCKET, backend: str = "onnxruntime",
             float_parts: str | None = None) -> dict:
    """A candidate INT8 file on the tune windows: agreement with the FP32 file, and its latency there.

    Both run on the run's `backend` as its engines would compute (`Backend.onnx_runner`: OpenVINO with
    `float_parts`; TensorRT runs judge on ONNX Runtime's CPU provider, as no engine is built per try).
    The agreement is cached by content. The latency is cached per host kind and
    reused only when `benchmark.reuse` is on; every candidate of one run is
    timed in that run, one after the other, so their ratios are comparable.
    """
    import numpy as np

    from bertbuild.arrays import load_npz
    from bertbuild.backends.registry import get_backend, runtime_fields
    from bertbuild.evaluation import latency, score
    from bertbuild.precision import Precision
    from bertbuild.precision import tuning
    from bertbuild.squad.sets import SquadSet
    from bertbuild.step_cache import step_key

    windows = SquadSet.load(tune["path"])
    runtime = get_backend(backend, threads=threads)
    on = {"backend": backend, **runtime_fields(backend)} if backend != "onnxruntime" else {}

    def runner(path: str, precision: str):
        return runtime.onnx_runner(path, precision, float_parts if precision == Precision.INT8 else None)

    def logits(path: str, precision: str = Precision.INT8) -> tuple:
        start, end, _ = score.run_logits(runner(path, precision), windows.features, batch_size,
                                         length_bucket=length_bucket)
        return start, end

    def reference(out: Path) -> dict:  # the FP32 logits, once per (file, tune split)
        start, end = logits(reference_onnx, Precision.FUSED_FP32)
        np.savez(out / "tune-fp32-logits.npz", start=start, end=end)
        return {"path": str(out / "tune-fp32-logits.npz")}

    def agreement(out: Path) -> dict:
        saved = load_npz(run.cache.run("tune", step_key("tune", files=[reference_onnx, tune["path"]],
                                                       fields={"batch": batch_size, "length_bucket": length_bucket,
                                                               **on},
                                                       modules=[score]),
                                      reference)["path"])
        return tuning.compare(windows, (saved["start"], saved["end"]), logits(onnx_path)).to_json()

    def timing(out: Path) -> dict:
        stats = latency.measure(runner(onnx_path, Precision.INT8), latency.feed_from(windows.features, batch_size),
                                warmup=bench.warmup, iterations=bench.iterations)
        return {"p50_ms": round(stats.p50_ms, 2)}

    parts = {"float_parts": float_parts} if float_parts else {}
    files = [onnx_path, reference_onnx, tune["path"]]
    signal = run.cache.run("tune", step_key("tune", files=files, fields={"batch": batch_size,
                                                                       "length_bucket": length_bucket, **on, **parts},
                                           modules=[tuning, score]), agreement)
    timed = run.timing_cache(bench.reuse)
    fields = {"batch": batch_size, "warmup": bench.warmup, "iterations": bench.iterations, "threads": threads,
              **on, **parts}
    p50 = timed.cache.run("benchmark", step_key("benchmark", files=[onnx_path, tune["path"]], fields=fields,
                                                modules=[latency], host=True), timing)["p50_ms"]
    return {"path": onnx_path, "signal": {k: v for k, v in signal.items() if k != "cached"}, "p50_ms": p50}
