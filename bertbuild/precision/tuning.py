"""The tune split, and how far a candidate INT8 file strays from FP32 on it.

Every INT8 decision (which technique, which smoothing strength, which nodes
the fallback returns to FP32) is made here, on TRAIN-half questions, so the
held-out questions are scored once, on the file finally chosen.

Why not F1 on the tune questions: F1 differences between two close engines
come from the few questions whose answer changes, so they are noisy on a few
hundred questions (and the model was fine-tuned on the train half). The
signals below compare each window's logits with the FP32 file's instead, which
every window contributes to:

- `kl`: KL(FP32 || candidate) of the start and of the end distributions
  (softmax over the window's real tokens), averaged over windows: the main,
  lowest-variance signal;
- `mean_abs_logit_error` / `max_abs_logit_error` over real tokens;
- `start_agreement` / `end_agreement`: the window's argmax is FP32's;
- `answer_agreement`: the question's final answer text is FP32's (what any
  F1 change is made of).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from bertbuild.precision.config import TuneConfig


@dataclass
class TuneSet:
    """Tokenized TRAIN-half questions (all windows of each), drawn with a fixed seed."""

    examples: list
    features: object  # bertbuild.squad.features.Features
    seed: int

    @property
    def question_ids(self) -> list[str]:
        return [example.qid for example in self.examples]

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256("\n".join(self.question_ids).encode())
        digest.update(np.ascontiguousarray(self.features.input_ids, dtype=np.int32).tobytes())
        return digest.hexdigest()

    def to_json(self) -> dict:
        """What results.json records: enough to rebuild exactly this set."""
        return {"split": "train", "seed": self.seed, "questions": len(self.examples),
                "windows": len(self.features), "fingerprint": self.fingerprint, "question_ids": self.question_ids}


def tune_set(cfg: TuneConfig, vocab_path: Path | str, lower_case: bool, dataset: str = "bundled",
             exclude: Iterable[str] = (), max_seq_length: int = 384, doc_stride: int = 128,
             max_query_length: int = 64) -> TuneSet:
    """The first `cfg.questions` train-half questions in `cfg.seed`'s order, minus `exclude` (calibration's)."""
    from bertbuild.precision.calibration import train_questions
    from bertbuild.squad.features import build_features, make_tokenizer

    excluded = set(exclude)
    chosen = [example for example in train_questions(dataset, cfg.seed) if example.qid not in excluded]
    chosen = chosen[: cfg.questions]
    features = build_features(chosen, make_tokenizer(vocab_path, lower_case=lower_case),
                              max_seq_length=max_seq_length, doc_stride=doc_stride,
                              max_query_length=max_query_length)
    return TuneSet(chosen, features, cfg.seed)


@dataclass
class TuneOutputs:
    """One file's logits and answers on a tune set."""

    start_logits: np.ndarray = field(repr=False)
    end_logits: np.ndarray = field(repr=False)
    predictions: dict[str, str] = field(repr=False)


def tune_outputs(onnx_path: Path | str, tune: TuneSet, batch_size: int = 8, threads: int | None = None) -> TuneOutputs:
    """Run `onnx_path` with ONNX Runtime over the tune windows and post-process the answers."""
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.config import EvalConfig
    from bertbuild.evaluation.score import run_logits
    from bertbuild.squad.postprocess import predictions_from_logits

    runner = OnnxRuntimeRunner(onnx_path, providers=["CPUExecutionProvider"], threads=threads)
    start, end, _ = run_logits(runner, tune.features, batch_size)
    answers = EvalConfig()
    predictions = predictions_from_logits(tune.examples, tune.features, start, end, n_best=answers.n_best,
                                          max_answer_length=answers.max_answer_length)
    return TuneOutputs(start, end, predictions)


@dataclass(frozen=True)
class TuneSignal:
    """How far a candidate is from the FP32 reference on the tune set (see the module doc)."""

    kl: float
    mean_abs_logit_error: float
    max_abs_logit_error: float
    start_agreement: float
    end_agreement: float
    answer_agreement: float
    changed_answers: int

    def to_json(self) -> dict:
        return {key: (float(f"{value:.6g}") if isinstance(value, float) else value)
                for key, value in asdict(self).items()}


def _log_softmax(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    masked = np.where(mask, logits.astype(np.float64), -np.inf)
    shifted = masked - masked.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _kl(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-window KL(softmax(reference) || softmax(candidate)) over the masked positions."""
    # Padding positions have log-probability -inf in both: zero them before subtracting.
    log_p = np.where(mask, _log_softmax(reference, mask), 0.0)
    log_q = np.where(mask, _log_softmax(candidate, mask), 0.0)
    return (np.where(mask, np.exp(log_p), 0.0) * (log_p - log_q)).sum(axis=1)


def _argmax_agreement(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> float:
    def argmax(logits):
        return np.where(mask, logits, -np.inf).argmax(axis=1)

    return float((argmax(reference) == argmax(candidate)).mean())


def tune_signal(reference: TuneOutputs, candidate: TuneOutputs, tune: TuneSet) -> TuneSignal:
    """Compare a candidate's outputs with the FP32 reference's on the same tune set."""
    mask = tune.features.input_mask.astype(bool)
    pairs = ((reference.start_logits, candidate.start_logits), (reference.end_logits, candidate.end_logits))
    kl = np.mean([_kl(ref, cand, mask).mean() for ref, cand in pairs])
    errors = np.concatenate([np.abs(ref - cand)[mask] for ref, cand in pairs])
    changed = sum(reference.predictions.get(q) != candidate.predictions.get(q) for q in tune.question_ids)
    return TuneSignal(
        kl=float(kl), mean_abs_logit_error=float(errors.mean()), max_abs_logit_error=float(errors.max()),
        start_agreement=_argmax_agreement(*pairs[0], mask), end_agreement=_argmax_agreement(*pairs[1], mask),
        answer_agreement=1.0 - changed / max(len(tune.examples), 1), changed_answers=int(changed),
    )


def best_candidate(signals: dict[str, TuneSignal]) -> str:
    """The candidate closest to FP32 on the tune set: lowest KL, then most answers kept."""
    if not signals:
        raise ValueError("no candidates to choose from")
    return min(signals, key=lambda label: (signals[label].kl, -signals[label].answer_agreement, label))
