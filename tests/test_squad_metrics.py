"""SQuAD v1.1 exact match and F1, on hand-computed cases and the real dev set."""

import json

import pytest

from bertbuild.errors import UserInputError
from bertbuild.squad.data import Example, examples_from, load_dataset
from bertbuild.squad.metrics import (
    best_over_ground_truths,
    exact_match,
    f1,
    normalize_answer,
    read_predictions,
    score,
    write_predictions,
)


def example(qid, *answers):
    return Example(qid, "t", "q?", "context", tuple(answers), tuple(0 for _ in answers))


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The  Quick, brown fox!", "quick brown fox"),
        ("an apple a day", "apple day"),
        ("Theatre and Anarchy", "theatre and anarchy"),  # articles only as whole words
        ("the,", ""),  # punctuation goes first, then the bare article
        ("U.S.A.", "usa"),
        ("  tabs\tand\nnewlines  ", "tabs and newlines"),
        ("Zürich — 3–4", "zürich — 3–4"),  # only ASCII punctuation is removed
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_articles_and_punctuation():
    assert exact_match("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_f1_partial_overlap():
    # pred -> [quick, brown, fox], truth -> [brown, fox, jumps, over]; 2 shared tokens.
    # precision 2/3, recall 2/4; F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7.
    assert f1("the quick brown fox", "brown fox jumps over") == pytest.approx(4 / 7)


def test_f1_counts_repeated_tokens_as_a_bag():
    # cat: min(2, 1) = 1, dog: min(1, 2) = 1 -> 2 shared of 3 each: P = R = F1 = 2/3.
    assert f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    assert f1("Denver Broncos", "the Denver Broncos!") == 1.0


def test_empty_prediction_and_no_overlap_score_zero():
    assert f1("", "Denver Broncos") == 0.0
    assert exact_match("", "Denver Broncos") == 0.0
    assert f1("Carolina Panthers", "Denver Broncos") == 0.0
    # Both empty after normalization: an exact match, yet no shared token for F1.
    assert exact_match("the", "a") == 1.0
    assert f1("the", "a") == 0.0


def test_best_over_several_ground_truths():
    truths = ["Denver Broncos", "the Broncos", "Broncos of Denver"]
    assert best_over_ground_truths(exact_match, "Broncos", truths) == 1.0
    # Against "Broncos of Denver": 2 shared of 2 predicted / 3 truth -> F1 = 2*1*(2/3)/(5/3) = 0.8,
    # but "Denver Broncos" matches exactly: the best, 1.0, counts.
    assert best_over_ground_truths(f1, "Broncos Denver", truths) == 1.0
    assert best_over_ground_truths(f1, "Broncos Denver", truths[2:]) == pytest.approx(0.8)
    assert best_over_ground_truths(f1, "anything", []) == 0.0


def test_score_counts_missing_predictions_as_zero():
    examples = [example("a", "Paris"), example("b", "blue sky", "sky"), example("c", "42")]
    predictions = {"a": "paris.", "b": "the blue"}  # "c" missing
    # EM: 1 + 0 + 0 = 1 of 3. F1: 1 + F1("blue", "blue sky") = 2*1*0.5/1.5 = 2/3, + 0.
    result = score(examples, predictions)
    assert result["count"] == 3
    assert result["exact_match"] == pytest.approx(100 / 3)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_score_of_nothing_is_zero():
    assert score([], {}) == {"exact_match": 0.0, "f1": 0.0, "count": 0}


def test_predictions_file_round_trip(tmp_path):
    predictions = {"56be4db0acb8001400a502ec": "Denver Broncos", "q2": "Zürich 北京 🙂", "q3": ""}
    path = write_predictions(tmp_path / "out" / "predictions.json", predictions)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw == predictions and isinstance(raw, dict)  # the official flat {qid: text} object
    assert read_predictions(path) == predictions


@pytest.mark.parametrize("content", ['["not", "a", "dict"]', '{"q": 3}', "{broken"])
def test_read_predictions_rejects_other_formats(tmp_path, content):
    path = tmp_path / "predictions.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserInputError):
        read_predictions(path)


def test_perfect_predictions_on_the_bundled_dev_set_score_100():
    examples = examples_from(load_dataset())
    predictions = {example.qid: example.answers[0] for example in examples}
    assert score(examples, predictions) == {"exact_match": 100.0, "f1": 100.0, "count": 10_570}


def test_question_scores_are_what_score_averages():
    from bertbuild.squad.metrics import question_scores

    examples = [example("a", "Denver Broncos"), example("b", "brown fox jumps over"), example("c", "x")]
    predictions = {"a": "the Denver Broncos.", "b": "the quick brown fox"}  # "c" is missing
    per_question = question_scores(examples, predictions)
    assert per_question == {"a": (1.0, 1.0), "b": (0.0, pytest.approx(4 / 7)), "c": (0.0, 0.0)}
    totals = score(examples, predictions)
    assert totals["exact_match"] == pytest.approx(100 / 3)
    assert totals["f1"] == pytest.approx(100 * (1 + 4 / 7) / 3) and totals["count"] == 3
