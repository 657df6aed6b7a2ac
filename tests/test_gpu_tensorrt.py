"""TensorRT engines of the files the flow hands it: fused FP32, FP16 and INT8 s8s8 of the tiny model vs FP32.

Each file is first passed through the static readiness check (it must be
ready for the installed TensorRT), then built strongly typed with two
profiles, then compared with the FP32 export on ONNX Runtime (CPU) with the
project's default tolerances for its precision. Skips with the backend's own
reason on hosts without TensorRT or a GPU.
"""

from __future__ import annotations

import json

import pytest

from bertbuild.runner import Profile
from bertbuild.backends.onnxrt import OnnxRuntimeRunner
from bertbuild.backends.registry import availability, get_backend
from bertbuild.config import EvalConfig, ValidationConfig
from bertbuild.evaluation.score import scoring_set
from bertbuild.evaluation.validate import validate

pytestmark = pytest.mark.gpu
TRT_OK, TRT_WHY = availability()["tensorrt"]
if not TRT_OK:
    pytest.skip(f"TensorRT backend not available here: {TRT_WHY}", allow_module_level=True)

# Two profiles, both exercised: batches of up to 4 run on the first, the batch of 8 on the second.
PROFILES = [Profile((1, 128), (4, 128), (4, 128)), Profile((5, 128), (8, 384), (8, 384))]
PRECISION_OF = {"fused": "fused-fp32", "fp16": "fp16", "s8s8": "int8"}


@pytest.fixture(scope="module")
def feeds(tiny_trt_files):
    from bertbuild.model.checkpoint import vocab_and_case

    eval_set = scoring_set(EvalConfig(limit=10, max_seq_length=128, batch_size=4),
                                *vocab_and_case(tiny_trt_files["checkpoint"]))
    return list(eval_set.features.batches(4)) + list(eval_set.features.batches(8))[:1]


@pytest.mark.parametrize("kind", ["fused", "fp16", "s8s8"])
def test_tensorrt_engine_of_each_precision_matches_fp32(tiny_trt_files, feeds, kind, tmp_path):
    backend = get_backend("tensorrt")
    engine = backend.build(tiny_trt_files[kind], PRECISION_OF[kind], PROFILES, tmp_path / kind)
    meta = json.loads(engine.metadata_path.read_text())
    assert meta["trt_ready"]["ready"] and meta["strongly_typed"] and engine.path.suffix == ".plan"
    tolerance = ValidationConfig().tolerances[PRECISION_OF[kind]]
    report = validate(OnnxRuntimeRunner(tiny_trt_files["fp32"]), backend.load(engine.path), feeds,
                      atol=tolerance.atol, rtol=tolerance.rtol, error_stat=tolerance.error_stat)
    assert report.passed, report
    assert report.batches == len(feeds)
