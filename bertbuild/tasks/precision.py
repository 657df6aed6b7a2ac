"""Prefect tasks that write the fused, FP16, BF16 and INT8 ONNX files (the file carries the precision).

Each is a cached step (`bertbuild.steps`) over `bertbuild.fuse` / `bertbuild.precision`:
the key holds the input file's sha256 and the config fields the step reads,
so a rerun with an unchanged model reuses every file, and changing only a
gate threshold rebuilds nothing.

`external_data` (the config's `export.external_data`): how the written files
keep their weights (`bertbuild.onnx_files`). None, the default, follows each
step's input: a model past protobuf's 2 GB limit stays external while it is
over it, and an input external by choice keeps its outputs external.
"""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bertbuild.config.precision import Fp16Config, Int8Config
from bertbuild.resources import measured
from bertbuild.runs import RunContext
from bertbuild.shapes import DEFAULT_LENGTH_BUCKET
from bertbuild.kinds import Precision
from bertbuild.step_results import Int8Source, Int8Variants, OnnxFile, RangesFile, TuneSplit
from bertbuild.steps import CachedStep, Work, cached_step
from bertbuild.tasks.model import ModelInfo

ONNX = ("onnx", "numpy")  # every step that writes an ONNX file depends on these libraries' versions
# The INT8 steps also run ONNX Runtime (calibration, bias correction, sensitivity) and read SQuAD windows.
INT8_LIBRARIES = (*ONNX, "onnxruntime", "tokenizers")


def _external(external_data: bool | None) -> dict:
    """The cache-key field for `external_data`: none when unset, so existing keys stay valid."""
    return {} if external_data is None else {"external_data": external_data}


@cached_step("fuse", task_name="fuse-onnx", code=("bertbuild.fuse", "bertbuild.fuse.fuse_file", "bertbuild.onnx_files"),
             libraries=(*ONNX, "onnx-graphsurgeon"))
def fuse(exported: OnnxFile, model: ModelInfo, run: RunContext, external_data: bool | None = None) -> Work:
    """The fused `OnnxFile`, its report the FusionReport; a wrong fusion count fails the task."""
    from bertbuild.fuse.fuse_file import fuse_onnx

    def produce(out: Path) -> dict:
        report = fuse_onnx(exported.path, out / "model-fused.onnx", model.num_layers, external_data=external_data)
        return {"path": str(out / "model-fused.onnx"), "report": report.to_dict()}

    return Work(produce, files=[exported.path], fields={"layers": model.num_layers, **_external(external_data)},
                finish=lambda result: OnnxFile.from_step(Precision.FUSED_FP32, result, report="report"))


def _sixteen_bit(name: str, convert, fused: OnnxFile, fp16_cfg: Fp16Config, external_data: bool | None) -> Work:
    """The FP16 or BF16 file (`convert`) with FP32 islands, named after the step; its report as a dict."""
    def produce(out: Path) -> dict:
        return convert(fused.path, out / f"model-{name}.onnx", fp16_cfg, external_data).to_json()

    return Work(produce, files=[fused.path], fields={**fp16_cfg.model_dump(mode="json"), **_external(external_data)},
                finish=lambda result: OnnxFile.from_step(name, result))


SIXTEEN_BIT = dict(code=("bertbuild.precision.fp16", "bertbuild.onnx_files"), libraries=(*ONNX, "ml-dtypes"))


@cached_step("fp16", task_name="fp16-onnx", **SIXTEEN_BIT)
def fp16_onnx(fused: OnnxFile, fp16_cfg: Fp16Config, run: RunContext, external_data: bool | None = None) -> Work:
    """FP16 file with FP32 islands, its report the Fp16Report."""
    from bertbuild.precision import fp16

    return _sixteen_bit("fp16", fp16.convert_to_fp16, fused, fp16_cfg, external_data)


@cached_step("bf16", task_name="bf16-onnx", **SIXTEEN_BIT)
def bf16_onnx(fused: OnnxFile, fp16_cfg: Fp16Config, run: RunContext, external_data: bool | None = None) -> Work:
    """BF16 file with the FP16 file's FP32 islands (`precision.fp16` names them), its report the Fp16Report."""
    from bertbuild.precision import fp16

    return _sixteen_bit("bf16", fp16.convert_to_bf16, fused, fp16_cfg, external_data)


def calibration_windows(model: ModelInfo, int8_cfg: Int8Config, dataset: str,
                        length_bucket: int = DEFAULT_LENGTH_BUCKET):
    """The train-half windows calibration reads (seeded; no held-out question is read), batched by `length_bucket`."""
    from bertbuild.precision.calibration_set import calibration_set

    return calibration_set(int8_cfg, model.vocab_path, model.lower_case, dataset, length_bucket=length_bucket)


def _int8_fields(int8_cfg: Int8Config, dataset: str, model: ModelInfo,
                 length_bucket: int = DEFAULT_LENGTH_BUCKET) -> dict:
    return {"int8": int8_cfg.model_dump(mode="json"), "dataset": dataset, "lower_case": model.lower_case,
            "length_bucket": length_bucket}


@cached_step("int8_source", task_name="prepare-int8-source",
             code=("bertbuild.precision.recipe", "bertbuild.precision.calibration_set", "bertbuild.onnx_files"),
             libraries=INT8_LIBRARIES)
def prepare_int8_source(fused: OnnxFile, model: ModelInfo, int8_cfg: Int8Config, dataset: str, run: RunContext,
                        threads: int | None, external_data: bool | None = None,
                        length_bucket: int = DEFAULT_LENGTH_BUCKET) -> Work:
    """The FP32 file INT8 is written from: the fused graph, smoothed and outlier-split when configured."""
    from bertbuild.precision import recipe

    def produce(out: Path) -> dict:
        source, techniques = recipe.prepare_source(fused.path, out,
                                                   calibration_windows(model, int8_cfg, dataset, length_bucket),
                                                   int8_cfg, threads, external_data)
        return {"path": str(source), "techniques": techniques}

    return Work(produce, files=[fused.path, model.vocab_path],
                fields={**_int8_fields(int8_cfg, dataset, model, length_bucket), **_external(external_data)},
                finish=Int8Source.from_step)


@cached_step("calibration", task_name="calibrate-int8",
             code=("bertbuild.precision.calibration", "bertbuild.precision.calibration_set"), libraries=INT8_LIBRARIES)
def calibrate_int8(source: Int8Source, model: ModelInfo, int8_cfg: Int8Config, dataset: str, run: RunContext,
                   threads: int | None, length_bucket: int = DEFAULT_LENGTH_BUCKET) -> Work:
    """Activation ranges of the prepared file from train-half windows; the ranges file, the summary its report."""
    from bertbuild.precision import calibration

    def produce(out: Path) -> dict:
        samples = calibration_windows(model, int8_cfg, dataset, length_bucket)
        return calibration.calibrate(source.path, samples, int8_cfg, out, threads,
                                     log=get_run_logger().info).summary()

    return Work(produce, files=[source.path, model.vocab_path],
                fields=_int8_fields(int8_cfg, dataset, model, length_bucket), finish=RangesFile.from_step)


@cached_step("int8", task_name="int8-onnx",
             code=("bertbuild.precision.recipe", "bertbuild.precision.ranges", "bertbuild.precision.calibration_set",
                   "bertbuild.onnx_files"), libraries=INT8_LIBRARIES)
def int8_onnx(source: Int8Source, calibration: RangesFile, model: ModelInfo, int8_cfg: Int8Config, dataset: str,
              excluded: list[str], run: RunContext, threads: int | None, external_data: bool | None = None,
              length_bucket: int = DEFAULT_LENGTH_BUCKET) -> Work:
    """Every INT8 file (s8s8 for TensorRT, u8s8, and ONNX Runtime's own) with `excluded` nodes left in FP32."""
    from bertbuild.precision import recipe
    from bertbuild.precision.ranges import load_calibration

    def produce(out: Path) -> dict:
        samples = calibration_windows(model, int8_cfg, dataset, length_bucket) if int8_cfg.bias_correction else None
        return recipe.write_int8_files(source.path, out, load_calibration(calibration.path),
                                       int8_cfg, samples, excluded, threads=threads,
                                       external_data=external_data).to_json()

    fields = {**_int8_fields(int8_cfg, dataset, model, length_bucket), "excluded": sorted(excluded),
              **_external(external_data)}
    return Work(produce, files=[source.path, calibration.path], fields=fields, finish=Int8Variants.from_step)


@cached_step("sensitivity", task_name="rank-int8-sensitivity",
             code=("bertbuild.precision.sensitivity", "bertbuild.precision.ranges",
                   "bertbuild.precision.calibration_set"), libraries=INT8_LIBRARIES)
def rank_int8_sensitivity(source: Int8Source, calibration: RangesFile, model: ModelInfo, int8_cfg: Int8Config,
                          dataset: str, variant: str, batches: int, run: RunContext, threads: int | None,
                          length_bucket: int = DEFAULT_LENGTH_BUCKET) -> Work:
    """[node, noise-to-signal] for every INT8 MatMul, most sensitive first (train-half windows only)."""
    from bertbuild.precision import sensitivity
    from bertbuild.precision.ranges import load_calibration

    def produce(out: Path) -> dict:
        ranked = sensitivity.rank_sensitivity(source.path, load_calibration(calibration.path),
                                              calibration_windows(model, int8_cfg, dataset, length_bucket),
                                              variant, batches, int8_cfg.batch_size, threads)
        return {"ranking": [[s.node, s.noise_to_signal] for s in ranked]}

    fields = {**_int8_fields(int8_cfg, dataset, model, length_bucket), "variant": variant, "batches": batches}
    return Work(produce, files=[source.path, calibration.path, model.vocab_path], fields=fields,
                finish=lambda result: result["ranking"])


@cached_step("tune", task_name="tune-windows",
             code=("bertbuild.evaluation.tune_split", "bertbuild.precision.ranges"), libraries=("tokenizers", "numpy"))
def tune_windows(model: ModelInfo, tune_cfg, calibration: RangesFile, eval_cfg, run: RunContext) -> Work:
    """The `TuneSplit` as a `SquadSet` file: seeded train-half questions that calibration did not read."""
    from bertbuild.evaluation import tune_split
    from bertbuild.precision.ranges import load_calibration

    def produce(out: Path) -> dict:
        used = set(load_calibration(calibration.path).question_ids)
        chosen = tune_split.tune_set(eval_cfg.dataset, model.vocab_path, model.lower_case, tune_cfg.questions,
                                     tune_cfg.seed, used, max_seq_length=eval_cfg.max_seq_length,
                                     doc_stride=eval_cfg.doc_stride, max_query_length=eval_cfg.max_query_length)
        return {"path": str(chosen.save(out / "squad-tune.npz")), "questions": len(chosen.examples),
                "windows": len(chosen), "question_ids": chosen.question_ids, "seed": tune_cfg.seed}

    fields = {"tune": tune_cfg.model_dump(mode="json", include={"questions", "seed"}),
              "eval": eval_cfg.model_dump(mode="json"), "lower_case": model.lower_case}
    return Work(produce, files=[model.vocab_path, calibration.path], fields=fields, finish=TuneSplit.from_step)


# The three kinds of work of one tune try, each its own cached step (its own name, code and libraries).
_RUNS_ON_BACKEND = ("onnxruntime", "numpy", "tensorrt")  # + OpenVINO's version where it runs (`runtime_fields`)
TUNE_LOGITS = CachedStep("tune_logits", ("bertbuild.evaluation.score", "bertbuild.backends.registry"),
                         _RUNS_ON_BACKEND, wiring=(__name__,))
TUNE_AGREEMENT = CachedStep("tune_agreement", ("bertbuild.evaluation.tune_split", "bertbuild.evaluation.score",
                                               "bertbuild.backends.registry"), _RUNS_ON_BACKEND, wiring=(__name__,))
TUNE_BENCHMARK = CachedStep("tune_benchmark", ("bertbuild.evaluation.latency", "bertbuild.backends.registry"),
                            _RUNS_ON_BACKEND, host=True, wiring=(__name__,))


@task(name="tune-try", cache_policy=NO_CACHE)
@measured("tune-try")
def tune_try(onnx_path: str, tune: TuneSplit, reference_onnx: str, batch_size: int, bench, run: RunContext,
             threads: int | None, length_bucket: int = DEFAULT_LENGTH_BUCKET, backend: str = "onnxruntime",
             float_parts: str | None = None) -> dict:
    """A candidate INT8 file on the tune windows: its agreement with the FP32 file, and its "p50_ms" there.

    Both run on the run's `backend` as its engines would compute (`Backend.onnx_runner`: OpenVINO with
    `float_parts`; TensorRT runs judge on ONNX Runtime's CPU provider, as no engine is built per try).
    The FP32 file's logits and the agreement are cached by content. The latency is cached per host
    kind and reused only when `benchmark.reuse` is on; every candidate of one run is timed in that
    run, one after the other, so their ratios are comparable.
    """
    import numpy as np

    from bertbuild.arrays import load_npz
    from bertbuild.backends.registry import get_backend, runtime_fields
    from bertbuild.evaluation import latency, score, tune_split
    from bertbuild.squad.sets import SquadSet

    windows = SquadSet.load(tune.path)
    runtime = get_backend(backend, threads=threads)
    on = {"backend": backend, **runtime_fields(backend)} if backend != "onnxruntime" else {}
    batching = {"batch": batch_size, "length_bucket": length_bucket, **on}
    parts = {"float_parts": float_parts} if float_parts else {}

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
        saved = load_npz(TUNE_LOGITS.run(run, Work(reference, files=[reference_onnx, tune.path],
                                                   fields=batching))["path"])
        return tune_split.compare(windows, (saved["start"], saved["end"]), logits(onnx_path)).to_json()

    def timing(out: Path) -> dict:
        stats = latency.measure(runner(onnx_path, Precision.INT8), latency.feed_from(windows.features, batch_size),
                                warmup=bench.warmup, iterations=bench.iterations)
        return {"p50_ms": round(stats.p50_ms, 2)}

    signal = TUNE_AGREEMENT.run(run, Work(agreement, files=[onnx_path, reference_onnx, tune.path],
                                          fields={**batching, **parts}))
    fields = {"batch": batch_size, "warmup": bench.warmup, "iterations": bench.iterations, "threads": threads,
              **on, **parts}
    p50 = TUNE_BENCHMARK.run(run, Work(timing, files=[onnx_path, tune.path], fields=fields,
                                       reuse=bench.reuse))["p50_ms"]
    return {**{k: v for k, v in signal.items() if k != "cached"}, "p50_ms": p50}
