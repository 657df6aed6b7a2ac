"""The tune split: how INT8 choices are judged without reading a held-out question.

Every INT8 decision (does plain INT8 need the fallback, which fallback try to
keep) is made on a fixed, seeded sample of TRAIN-half questions that
calibration did not use. The signal is answer agreement with the FP32 model:
the share of tune questions whose predicted answer text is exactly the FP32
one. Unlike F1 on a few hundred questions, whose noise (SD 25 F1 points per
question) hides a one-point drop, agreement measures the quantization alone:
FP32 and INT8 see the same windows, so only the engine can make them differ.
Mean and max |Δlogit| over the tune windows are reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertbuild.squad.sets import SquadSet, featurize, load_split, sample


@dataclass(frozen=True)
class TuneSignal:
    """How far a candidate file's answers and logits are from FP32 on the tune windows."""

    answer_agreement: float
    mean_abs_dlogit: float
    max_abs_dlogit: float
    questions: int
    windows: int

    def to_json(self) -> dict:
        return asdict(self)


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


def _answers(tune: SquadSet, start: np.ndarray, end: np.ndarray) -> dict[str, str]:
    from bertbuild.squad.postprocess import predictions_from_logits

    return predictions_from_logits(tune.examples, tune.features, start, end)


def compare(tune: SquadSet, reference: tuple[np.ndarray, np.ndarray],
            candidate: tuple[np.ndarray, np.ndarray]) -> TuneSignal:
    """Agreement of `candidate`'s (start, end) logits with `reference`'s on the same tune windows."""
    ref_answers, cand_answers = _answers(tune, *reference), _answers(tune, *candidate)
    agree = sum(ref_answers[qid] == cand_answers.get(qid) for qid in ref_answers)
    diff = np.concatenate([np.abs(reference[0] - candidate[0]).ravel(), np.abs(reference[1] - candidate[1]).ravel()])
    return TuneSignal(answer_agreement=agree / max(len(ref_answers), 1), mean_abs_dlogit=float(diff.mean()),
                      max_abs_dlogit=float(diff.max()), questions=len(ref_answers), windows=len(tune))
