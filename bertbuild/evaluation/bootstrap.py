"""Paired bootstrap intervals for the EM and F1 difference between two engines.

Both engines answer the same questions, so the comparison is paired: for every
question we take candidate minus reference (EM and F1 each), resample the
questions with replacement `resamples` times from a fixed seed, and report
the 2.5th and 97.5th percentiles of the resampled mean difference as the 95 %
interval. Pairing is what makes this useful: per-question F1 varies by about
25 points, but two engines that mostly give the same answer differ on few
questions, and the interval reflects only those.

A gate can then judge the point estimate or one bound of the interval; see
`DeltaInterval.value`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Mapping

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
DEFAULT_CONFIDENCE = 0.95
METRICS = ("exact_match", "f1")
CHUNK = 250  # resamples drawn at a time: bounds memory to CHUNK x questions counts

Judged = Literal["point", "lower", "upper"]


@dataclass(frozen=True)
class DeltaInterval:
    """candidate - reference for one metric, in percentage points, with its bootstrap interval."""

    metric: str
    delta: float
    low: float
    high: float
    standard_error: float
    questions: int
    resamples: int
    seed: int
    confidence: float

    def value(self, judged: Judged) -> float:
        """The number a gate holds to its threshold: the point estimate or one interval bound."""
        return {"point": self.delta, "lower": self.low, "upper": self.high}[judged]

    def to_json(self) -> dict:
        record = asdict(self)
        for key in ("delta", "low", "high", "standard_error"):
            record[key] = round(record[key], 4)
        return record

    def __str__(self) -> str:
        return f"{self.delta:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def _paired_differences(reference: Mapping[str, tuple[float, float]],
                        candidate: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """[questions, 2] array of candidate - reference (EM, F1) in percentage points."""
    if set(reference) != set(candidate):
        only_ref, only_cand = len(set(reference) - set(candidate)), len(set(candidate) - set(reference))
        raise ValueError(f"a paired comparison needs the same questions: {only_ref} only in the reference, "
                         f"{only_cand} only in the candidate")
    if not reference:
        raise ValueError("a paired comparison needs at least one question")
    qids = sorted(reference)  # a fixed order, so the same seed gives the same resamples
    ref = np.asarray([reference[q] for q in qids], dtype=np.float64)
    cand = np.asarray([candidate[q] for q in qids], dtype=np.float64)
    return 100.0 * (cand - ref)


def bootstrap_means(differences: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[resamples, columns] means of `differences` ([questions, columns]) over resampled questions."""
    n = differences.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, differences.shape[1]), dtype=np.float64)
    for start in range(0, resamples, CHUNK):
        stop = min(start + CHUNK, resamples)
        # How often each question is drawn in each resample: the same as drawing n indices.
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=stop - start)
        means[start:stop] = counts @ differences / n
    return means


def paired_bootstrap(reference: Mapping[str, tuple[float, float]], candidate: Mapping[str, tuple[float, float]],
                     resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                     confidence: float = DEFAULT_CONFIDENCE) -> dict[str, DeltaInterval]:
    """ΔEM and ΔF1 (candidate - reference) with percentile bootstrap intervals.

    `reference` and `candidate` map question id -> (em, f1) in [0, 1], as
    `bertbuild.squad.metrics.question_scores` returns them, for the same questions.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    differences = _paired_differences(reference, candidate)
    means = bootstrap_means(differences, resamples, seed)
    tail = 100.0 * (1.0 - confidence) / 2.0
    lows, highs = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return {
        metric: DeltaInterval(metric=metric, delta=float(differences[:, column].mean()), low=float(lows[column]),
                              high=float(highs[column]), standard_error=float(means[:, column].std(ddof=1))
                              if resamples > 1 else 0.0,
                              questions=int(differences.shape[0]), resamples=resamples, seed=seed,
                              confidence=confidence)
        for column, metric in enumerate(METRICS)
    }
