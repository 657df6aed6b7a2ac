"""Length-bucketed scoring gives the padded answers, for every precision of the embedded model.

Trimming a batch to its longest window changes only how much padding the
engine computes; the mask keeps padding out of every real token. So on
held-out questions each precision (the export, the fused graph, the FP16 file
and the ORT-only INT8 file the flow scores) must give the same answer padded
and bucketed on >= 99.9 % of them (with fewer than 1,000 questions: all), and
F1 must move by no more than 0.05; and a batch of short windows fed at two
trimmed lengths must give the padded logits at its real tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL = PROJECT_ROOT / "models" / "minilm-l6-squad"
QUESTIONS = 250  # held-out, from the first: ~260 windows at 384
BUCKET = 32  # eval.length_bucket's default
TWO_LENGTHS = (128, 256)  # a batch of short windows fed at two trimmed lengths, against 384
# Largest |Δlogit| at real tokens, bucketed vs padded: the same kernels on other shapes sum in another
# order (FP32 ~1e-5 here); FP16 rounds those sums; INT8 re-rounds an activation that lands on a step.
MAX_ABS_DLOGIT = {"fp32": 1e-3, "fused-fp32": 1e-3, "fp16": 0.1, "int8-ort": 1.0}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> dict[str, Path]:
    """The embedded checkpoint exported, fused, in FP16 and as the ORT-only INT8 file (the flow's recipe)."""
    from bertbuild.fuse import fuse_onnx
    from bertbuild.model.checkpoint import load_checkpoint
    from bertbuild.model.export import export_onnx
    from bertbuild.precision.calibration_set import calibration_set
    from bertbuild.config.precision import Fp16Config, Int8Config
    from bertbuild.precision.fp16 import convert_to_fp16
    from bertbuild.precision.recipe import ORT_VARIANT, build_int8

    out = tmp_path_factory.mktemp("bucketed-embedded")
    checkpoint = load_checkpoint(MODEL)
    fp32 = Path(export_onnx(checkpoint, out / "model-fp32.onnx").path)
    del checkpoint
    fused = out / "model-fused.onnx"
    fuse_onnx(fp32, fused, num_layers=6)
    fp16 = out / "model-fp16.onnx"
    convert_to_fp16(fused, fp16, Fp16Config())
    cfg = Int8Config(samples=64)  # the default recipe (smoothing, outlier split) on fewer windows: minutes less
    samples = calibration_set(cfg, MODEL / "vocab.txt", lower_case=True)
    int8 = build_int8(fused, out / "int8", samples, cfg, variants=(ORT_VARIANT,)).paths[ORT_VARIANT]
    return {"fp32": fp32, "fused-fp32": fused, "fp16": fp16, "int8-ort": Path(int8)}


@pytest.fixture(scope="module")
def heldout():
    from bertbuild.config import EvalConfig
    from bertbuild.evaluation.score import scoring_set

    return scoring_set(EvalConfig(limit=QUESTIONS), MODEL / "vocab.txt", lower_case=True)


@pytest.mark.parametrize("precision", sorted(MAX_ABS_DLOGIT))
def test_bucketed_scoring_gives_the_padded_answers(precision, embedded, heldout):
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.config import EvalConfig
    from bertbuild.evaluation.score import evaluate
    from bertbuild.squad.batching import PAD_LOGIT, plan_batches

    runner = OnnxRuntimeRunner(embedded[precision], providers=["CPUExecutionProvider"])
    padded = evaluate(runner, heldout, EvalConfig(limit=QUESTIONS, length_bucket=0))
    bucketed = evaluate(runner, heldout, EvalConfig(limit=QUESTIONS, length_bucket=BUCKET))
    assert bucketed.questions == padded.questions == QUESTIONS
    same = np.mean([padded.predictions[qid] == bucketed.predictions[qid] for qid in padded.predictions])
    assert same >= 0.999, (precision, same)
    assert abs(bucketed.f1 - padded.f1) <= 0.05, (precision, bucketed.f1, padded.f1)
    real = heldout.features.input_mask.astype(bool)
    for ours, theirs in ((bucketed.start_logits, padded.start_logits), (bucketed.end_logits, padded.end_logits)):
        assert (ours[~real] == PAD_LOGIT).all() and (theirs[~real] == PAD_LOGIT).all()
        assert np.abs(ours - theirs)[real].max() <= MAX_ABS_DLOGIT[precision]
    assert bucketed.windows == len(heldout) and bucketed.real_tokens == int(real.sum())
    # the pass really was trimmed: several fed lengths, far fewer positions than padded
    plan = plan_batches(heldout.features.input_mask, 8, BUCKET)
    assert len({b.length for b in plan.batches}) > 1 and plan.fed_positions < 0.8 * real.size


@pytest.mark.parametrize("precision", sorted(MAX_ABS_DLOGIT))
def test_each_graph_is_right_at_two_trimmed_lengths(precision, embedded, heldout):
    """The fused attention's mask broadcast and the ORT INT8 file's mask column, on real weights."""
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner

    features = heldout.features
    rows = np.flatnonzero(features.input_mask.sum(axis=1) <= TWO_LENGTHS[0])[:8]
    assert rows.size == 8
    feed = {name: getattr(features, name)[rows] for name in ("input_ids", "segment_ids", "input_mask")}
    real = feed["input_mask"].astype(bool)
    with OnnxRuntimeRunner(embedded[precision], providers=["CPUExecutionProvider"]) as runner:
        padded = runner.infer(feed)
        for length in TWO_LENGTHS:
            trimmed = runner.infer({name: np.ascontiguousarray(value[:, :length]) for name, value in feed.items()})
            for name in ("start_logits", "end_logits"):
                diff = np.abs(trimmed[name] - padded[name][:, :length])[real[:, :length]]
                assert diff.max() <= MAX_ABS_DLOGIT[precision], (precision, length, name, float(diff.max()))
