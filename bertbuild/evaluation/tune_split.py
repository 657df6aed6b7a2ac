"""The tune split: how INT8 choices are judged without reading a held-out question.

Every INT8 decision (does plain INT8 need the fallback, which fallback try to
keep, which technique and smoothing strength, see benchmarks/int8_techniques.py)
is made on a fixed, seeded sample of TRAIN-half questions that calibration did
not use. FP32 and INT8 see the same windows, so only the engine can make them
differ, and every window says how far apart they are:

- `answer_agreement`: the share of tune questions whose predicted answer text
  is exactly the FP32 one (what any F1 change is made of). Unlike F1 on a few
  hundred questions, whose noise (SD 25 F1 points per question) hides a
  one-point drop, it measures the quantization alone;
- `kl`: KL(FP32 || candidate) of the start and of the end distributions
  (softmax over each window's real tokens), averaged over windows: the
  smoothest, lowest-variance signal, used to rank close candidates;
- `start_agreement` / `end_agreement`: each window's argmax is FP32's;
- `mean_abs_dlogit` / `max_abs_dlogit`: |Δlogit| over real (unpadded) tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from bertbuild.squad.sets import SquadSet, featurize, load_split, sample

Logits = tuple[np.ndarray, np.ndarray]  # (start, end), [windows, sequence]


@dataclass(frozen=True)
class TuneSignal:
    """How far a candidate file's answers and logits are from FP32 on the tune windows."""

    answer_agreement: float
    mean_abs_dlogit: float
    max_abs_dlogit: float
    questions: int
    windows: int
    kl: float = 0.0
    start_agreement: float = 1.0
    end_agreement: float = 1.0
    # Per-window KL (start and end averaged): what `closest_to_fp32` compares candidates with, pairwise.
    window_kl: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "window_kl"}


def tune_set(dataset: str, vocab_path: Path | str, lower_case: bool, questions: int, seed: int,
             exclude: set[str] = frozenset(), *, max_seq_length: int = 384, doc_stride: int = 128,
             max_query_length: int = 64) -> SquadSet:
    """`questions` train-half questions drawn with `seed`, skipping `exclude` (the calibration questions)."""
    pool = [e for e in load_split(dataset, "train") if e.qid not in exclude]
    chosen = sample(pool, questions, seed)
    return featurize(chosen, vocab_path, lower_case, max_seq_length=max_seq_length, doc_stride=doc_stride,
                     max_query_length=max_query_length,
                     origin={"split": "train", "questions": len(chosen), "seed": seed,
                             "excluded_calibration_questions": len(exclude)})


def onnx_logits(onnx_path: Path | str, tune: SquadSet, batch_size: int = 8, threads: int | None = None) -> Logits:
    """(start, end) logits of an ONNX file over the tune windows, with ONNX Runtime on CPU."""
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.evaluation.score import run_logits

    start, end, _ = run_logits(OnnxRuntimeRunner(onnx_path, providers=["CPUExecutionProvider"], threads=threads),
                               tune.features, batch_size)
    return start, end


def _answers(tune: SquadSet, start: np.ndarray, end: np.ndarray) -> dict[str, str]:
    from bertbuild.squad.postprocess import predictions_from_logits

    return predictions_from_logits(tune.examples, tune.features, start, end)


def _log_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax over the masked positions; 0 at the others (they carry no probability)."""
    masked = np.where(mask, logits.astype(np.float64), -np.inf)
    shifted = masked - masked.max(axis=1, keepdims=True)
    return np.where(mask, shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True)), 0.0)


def window_kl(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-window KL(softmax(reference) || softmax(candidate)) over the masked positions."""
    log_p, log_q = _log_softmax(reference, mask), _log_softmax(candidate, mask)
    return (np.where(mask, np.exp(log_p), 0.0) * (log_p - log_q)).sum(axis=1)


def _argmax_agreement(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> float:
    def argmax(logits):
        return np.where(mask, logits, -np.inf).argmax(axis=1)

    return float((argmax(reference) == argmax(candidate)).mean())


def compare(tune: SquadSet, reference: Logits, candidate: Logits) -> TuneSignal:
    """Agreement of `candidate`'s (start, end) logits with `reference`'s on the same tune windows."""
    ref_answers, cand_answers = _answers(tune, *reference), _answers(tune, *candidate)
    agree = sum(ref_answers[qid] == cand_answers.get(qid) for qid in ref_answers)
    mask = tune.features.input_mask.astype(bool)
    diff = np.concatenate([np.abs(ref - cand)[mask] for ref, cand in zip(reference, candidate)])
    per_window = np.mean([window_kl(ref, cand, mask) for ref, cand in zip(reference, candidate)], axis=0)
    return TuneSignal(answer_agreement=agree / max(len(ref_answers), 1), mean_abs_dlogit=float(diff.mean()),
                      max_abs_dlogit=float(diff.max()), questions=len(ref_answers), windows=len(tune),
                      kl=float(per_window.mean()), start_agreement=_argmax_agreement(reference[0], candidate[0], mask),
                      end_agreement=_argmax_agreement(reference[1], candidate[1], mask), window_kl=per_window)


def closest_to_fp32(signals: dict[str, TuneSignal], z: float = 2.0) -> str:
    """The first candidate (in the caller's order: simplest first) not measurably farther from FP32 than the best.

    The best is the lowest mean KL. A candidate listed before it wins when its
    per-window KL is not larger than the best's by more than `z` standard
    errors of the paired difference (same windows, so the comparison is
    paired): differences inside the noise do not buy extra machinery.
    Without per-window values (signals read back from JSON) it is the lowest KL.
    """
    if not signals:
        raise ValueError("no candidates to choose from")
    best = min(signals, key=lambda label: (signals[label].kl, -signals[label].answer_agreement))
    reference = signals[best].window_kl
    for label, signal in signals.items():
        if label == best:
            return best
        if reference is None or signal.window_kl is None or len(reference) < 2:
            continue
        difference = signal.window_kl - reference
        if difference.mean() <= z * difference.std(ddof=1) / np.sqrt(difference.size):
            return label
    return best
