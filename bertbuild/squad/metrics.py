"""SQuAD v1.1 scoring: exact match and token F1 after answer normalization.

Semantics follow the official v1.1 evaluation: both strings are lower-cased,
stripped of ASCII punctuation and of the articles a/an/the, and their
whitespace collapsed; each prediction is scored against every ground truth
and the best score counts.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from pathlib import Path
from typing import Callable, Mapping, Sequence

from bertbuild.errors import UserInputError
from bertbuild.squad.data import Example

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop articles, collapse whitespace.

    Punctuation goes before articles so "the," still loses its article.
    """
    lowered = text.lower()
    without_punctuation = "".join(char for char in lowered if char not in _PUNCTUATION)
    without_articles = _ARTICLES.sub(" ", without_punctuation)
    return " ".join(without_articles.split())


def exact_match(prediction: str, ground_truth: str) -> float:
    """1.0 when both normalize to the same string, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1(prediction: str, ground_truth: str) -> float:
    """Harmonic mean of token precision and recall, tokens counted as a bag."""
    predicted_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    overlap = sum((Counter(predicted_tokens) & Counter(truth_tokens)).values())
    if overlap == 0:
        # Also covers empty strings: no shared token means no credit.
        return 0.0
    precision = overlap / len(predicted_tokens)
    recall = overlap / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def best_over_ground_truths(
    metric: Callable[[str, str], float], prediction: str, ground_truths: Sequence[str]
) -> float:
    """The best `metric` of the prediction against any ground truth (0 if there are none)."""
    return max((metric(prediction, truth) for truth in ground_truths), default=0.0)


def question_scores(examples: Sequence[Example], predictions: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """qid -> (exact match, F1), each in [0, 1], for every example.

    A question missing from `predictions` scores (0, 0): it is still listed, so
    a partial predictions file cannot inflate an average over these scores.
    """
    scores = {}
    for example in examples:
        prediction = predictions.get(example.qid)
        if prediction is None:
            scores[example.qid] = (0.0, 0.0)
            continue
        scores[example.qid] = (best_over_ground_truths(exact_match, prediction, example.answers),
                               best_over_ground_truths(f1, prediction, example.answers))
    return scores


def score(examples: Sequence[Example], predictions: Mapping[str, str]) -> dict:
    """Exact match and F1 in percent over all examples: the mean of `question_scores`."""
    per_question = question_scores(examples, predictions)
    count = len(examples)

    def percent(column: int) -> float:
        return 100.0 * sum(pair[column] for pair in per_question.values()) / count if count else 0.0

    return {"exact_match": percent(0), "f1": percent(1), "count": count}


def write_predictions(path: str | Path, predictions: Mapping[str, str]) -> Path:
    """Write predictions in the official {question_id: answer_text} JSON format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(predictions), ensure_ascii=False, indent=1)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def read_predictions(path: str | Path) -> dict[str, str]:
    """Read a {question_id: answer_text} predictions file."""
    try:
        predictions = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"cannot read predictions file {path}: {error}") from None
    if not isinstance(predictions, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in predictions.items()
    ):
        raise UserInputError(f"{path} is not a {{question_id: answer_text}} JSON object")
    return predictions
