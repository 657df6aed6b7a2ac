"""Every graph the flow writes is right on trimmed batches: same logits at real tokens as padded to 384.

Trimming drops trailing padding, so what changes is the sequence length the
graph sees. Fusions that broadcast the mask ([B,1,S,S] Expand), the FP16 file's
casts and the ORT-only INT8 file's extra mask column all depend on it; each
is fed the same short windows at two bucket lengths and at max_seq_length.
The tiny random-weight model keeps this fast; tests/test_bucketed_answers.py
holds the embedded model's answers to the same.
"""

from __future__ import annotations

import numpy as np
import pytest

from bertbuild.squad.batching import plan_batches

SEQ = 256
BUCKETS = (128, 192)  # two trimmed lengths, both holding the short windows picked below
# |Δlogit| at real tokens between a trimmed and a padded feed: summation order only (FP32), FP16 rounding
# of a few sums, and for INT8 a rare activation landing one quantization step over (tiny model, |logit| ~ 1).
# (One thread gives exactly 0 on this host: the same kernels, the same sums.)
TOLERANCE = {"fp32": 1e-5, "fused": 1e-5, "fp16": 2e-2, "ort-int8": 2e-2}


@pytest.fixture(scope="module")
def tiny_graphs(tiny_trt_files, vocab_path, tmp_path_factory) -> dict:
    """The tiny model's fp32, fused and fp16 files and its ORT-only INT8 file."""
    from bertbuild.precision.calibration import calibrate
    from bertbuild.precision.calibration_set import calibration_set
    from bertbuild.config.precision import Int8Config
    from bertbuild.precision.ort_int8 import write_ort_int8

    cfg = Int8Config(samples=16, max_seq_length=128, batch_size=8).plain()
    calibration = calibrate(tiny_trt_files["fused"], calibration_set(cfg, vocab_path, lower_case=True), cfg)
    ort = tmp_path_factory.mktemp("tiny-ort-int8") / "model.int8-ort.onnx"
    write_ort_int8(tiny_trt_files["fused"], ort, calibration, cfg)
    return {"fp32": tiny_trt_files["fp32"], "fused": tiny_trt_files["fused"], "fp16": tiny_trt_files["fp16"],
            "ort-int8": ort}


@pytest.fixture(scope="module")
def short_windows(vocab_path):
    """Eight held-out windows at SEQ tokens that fit in the smallest bucket, and a batch of them."""
    from bertbuild.squad.sets import featurize, first_questions

    features = featurize(first_questions("bundled", "heldout", 60), vocab_path, True, max_seq_length=SEQ,
                         doc_stride=64, max_query_length=32).features
    extents = features.input_mask.sum(axis=1)
    rows = np.flatnonzero(extents <= BUCKETS[0])[:8]
    if rows.size < 8:  # too few that short: the shortest ones, and the buckets must hold them
        rows = np.argsort(extents, kind="stable")[:8]
    assert extents[rows].max() <= BUCKETS[0]
    return {name: getattr(features, name)[rows] for name in ("input_ids", "segment_ids", "input_mask")}


@pytest.mark.parametrize("precision", sorted(TOLERANCE))
def test_trimmed_batches_give_the_padded_logits(precision, tiny_graphs, short_windows):
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner

    real = short_windows["input_mask"].astype(bool)
    with OnnxRuntimeRunner(tiny_graphs[precision], providers=["CPUExecutionProvider"], threads=1) as runner:
        padded = runner.infer(short_windows)
        for length in BUCKETS:
            trimmed = runner.infer({name: np.ascontiguousarray(value[:, :length]) for name, value in
                                    short_windows.items()})
            for name in ("start_logits", "end_logits"):
                assert trimmed[name].shape == (8, length)
                diff = np.abs(trimmed[name] - padded[name][:, :length])[real[:, :length]]
                assert diff.max() <= TOLERANCE[precision], (precision, length, name, float(diff.max()))
        # The check has teeth: a graph attending to the padding (here: told every position is real) moves them.
        unmasked = runner.infer({**short_windows, "input_mask": np.ones_like(short_windows["input_mask"])})
        assert np.abs(unmasked["start_logits"] - padded["start_logits"])[real].max() > 10 * TOLERANCE[precision]


def test_a_scored_pass_restores_the_padded_logits(tiny_graphs, vocab_path):
    """run_logits at bucket 64 vs bucket 0 over real windows: same logits at real tokens, PAD_LOGIT elsewhere."""
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.evaluation.score import run_logits
    from bertbuild.squad.batching import PAD_LOGIT
    from bertbuild.squad.sets import featurize, first_questions

    features = featurize(first_questions("bundled", "heldout", 12), vocab_path, True, max_seq_length=SEQ,
                         doc_stride=64, max_query_length=32).features
    plan = plan_batches(features.input_mask, 4, 64)
    assert len({b.length for b in plan.batches}) >= 2, "the pass should feed several lengths"
    runner = OnnxRuntimeRunner(tiny_graphs["fused"], providers=["CPUExecutionProvider"], threads=1)
    start0, end0, _ = run_logits(runner, features, 4, length_bucket=0)
    start, end, _ = run_logits(runner, features, 4, length_bucket=64)
    real = features.input_mask.astype(bool)
    assert (start[~real] == PAD_LOGIT).all() and (start0[~real] == PAD_LOGIT).all()
    assert np.abs(start - start0)[real].max() <= 1e-5 and np.abs(end - end0)[real].max() <= 1e-5
