"""Start/end logits -> answer spans cut from the original context.

For each example, every window proposes its top `n_best` start and end
positions; a pair is kept when both tokens are context tokens, start <= end,
the span is at most `max_answer_length` tokens, and the start token has its
maximum context in that window (so the same span is not judged twice, from a
window where it sits at the edge). The highest start_logit + end_logit wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertbuild.squad.data import Example
from bertbuild.squad.features import Features


@dataclass(frozen=True)
class Span:
    """An answer: its text, its score, and its [char_start, char_end) in the context."""

    text: str
    score: float
    char_start: int
    char_end: int


def top_indices(logits: np.ndarray, n: int) -> np.ndarray:
    """Indices of the `n` largest logits, largest first; ties go to the lower index."""
    return np.argsort(-logits, kind="stable")[:n]


def _check_logits(features: Features, start_logits: np.ndarray, end_logits: np.ndarray) -> None:
    expected = (len(features), features.max_seq_length)
    for name, logits in (("start_logits", start_logits), ("end_logits", end_logits)):
        if logits.shape != expected:
            raise ValueError(
                f"{name} has shape {logits.shape}, expected {expected} (features x sequence)"
            )


def _window_candidate(
    offsets: list, is_max_context: list, start_logits: np.ndarray, end_logits: np.ndarray,
    n_best: int, max_answer_length: int,
) -> tuple[float, int, int] | None:
    """Best valid (score, start, end) token pair within one window, or None."""
    starts = top_indices(start_logits, n_best)
    ends = top_indices(end_logits, n_best)
    start_ok = np.array([offsets[i] is not None and is_max_context[i] for i in starts], dtype=bool)
    end_ok = np.array([offsets[i] is not None for i in ends], dtype=bool)
    length = ends[None, :] - starts[:, None] + 1
    valid = start_ok[:, None] & end_ok[None, :] & (length >= 1) & (length <= max_answer_length)
    if not valid.any():
        return None
    scores = start_logits[starts][:, None] + end_logits[ends][None, :]
    scores = np.where(valid, scores, -np.inf)
    row, column = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return float(scores[row, column]), int(starts[row]), int(ends[column])


def best_spans(
    features: Features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[int, Span]:
    """The best span of each example, keyed by example index, over all its windows.

    Examples without any valid span are absent from the result.
    """
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    _check_logits(features, start_logits, end_logits)
    spans: dict[int, Span] = {}
    for feature in range(len(features)):
        offsets = features.token_offsets[feature]
        candidate = _window_candidate(
            offsets, features.token_is_max_context[feature],
            start_logits[feature], end_logits[feature], n_best, max_answer_length,
        )
        if candidate is None:
            continue
        score, start, end = candidate
        example = int(features.example_index[feature])
        # Strictly greater: on a tie the earlier window keeps the answer, deterministically.
        if example not in spans or score > spans[example].score:
            char_start, char_end = offsets[start][0], offsets[end][1]
            text = features.contexts[example][char_start:char_end]
            spans[example] = Span(text=text, score=score, char_start=char_start, char_end=char_end)
    return spans


def predictions_from_logits(
    examples: Sequence[Example],
    features: Features,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """{question id: answer text} for every example; "" where no span is valid."""
    if len(examples) != len(features.contexts):
        raise ValueError(
            f"{len(examples)} examples but the features were built from {len(features.contexts)}"
        )
    spans = best_spans(features, start_logits, end_logits, n_best, max_answer_length)
    return {
        example.qid: spans[index].text if index in spans else ""
        for index, example in enumerate(examples)
    }
