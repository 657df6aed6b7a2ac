"""Choosing answer spans from hand-made logits, across windows."""

from pathlib import Path

import numpy as np
import pytest

from bertbuild.data import UNCASED_VOCAB, bundled_file
from bertbuild.squad.data import Example, examples_from, load_dataset, select
from bertbuild.squad.features import build_features, make_tokenizer
from bertbuild.squad.metrics import score
from bertbuild.squad.postprocess import Span, best_spans, predictions_from_logits, top_indices

VOCAB = bundled_file(UNCASED_VOCAB)
# Question "who" + 16 context tokens per window; 40 tokens -> windows start 0,5,10,15,20,25.
SMALL = dict(max_seq_length=20, doc_stride=5, max_query_length=8)
HEAD = 3  # [CLS] who [SEP]
LOW = -5.0


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(VOCAB)


def numbers_example(qid="q0", n_tokens=40):
    """Context whose i-th token is the word str(i)."""
    return Example(qid, "t", "who", " ".join(str(i) for i in range(n_tokens)), (), ())


@pytest.fixture(scope="module")
def windows(tokenizer):
    example = numbers_example()
    return example, build_features([example], tokenizer, **SMALL)


def flat_logits(features):
    shape = (len(features), features.max_seq_length)
    return np.full(shape, LOW), np.full(shape, LOW)


def put(logits, window, token, value, window_start):
    """Set the logit of context token `token` as seen from window `window`."""
    logits[window, HEAD + token - window_start] = value


def answer(features, start_logits, end_logits, **options):
    spans = best_spans(features, start_logits, end_logits, **options)
    return spans.get(0)


def test_top_indices_break_ties_by_position():
    assert top_indices(np.array([1.0, 3.0, 3.0, 2.0]), 3).tolist() == [1, 2, 3]


def test_best_span_can_come_from_a_later_window(windows):
    example, features = windows
    start, end = flat_logits(features)
    put(start, 0, 2, 3.0, 0), put(end, 0, 3, 3.0, 0)  # "2 3": score 6 in window 0
    put(start, 3, 22, 4.0, 15), put(end, 3, 24, 4.0, 15)  # "22 23 24": score 8 in window 3
    span = answer(features, start, end)
    assert span == Span(text="22 23 24", score=8.0, char_start=example.context.index("22 23 24"),
                        char_end=example.context.index("22 23 24") + 8)
    assert example.context[span.char_start:span.char_end] == span.text


def test_start_must_have_max_context_in_its_window(windows):
    _, features = windows
    start, end = flat_logits(features)
    # Token 14 sits at the edge of window 0 (context 1) but has context 6 in window 1,
    # so window 0's high-scoring "14 15" is ignored in favour of window 1's own view of it.
    put(start, 0, 14, 9.0, 0), put(end, 0, 15, 9.0, 0)
    # Window 0's best valid pair is "0 .. 15" (-5 + 9 = 4); window 1 must beat it.
    put(start, 1, 14, 3.0, 5), put(end, 1, 15, 3.0, 5)
    span = answer(features, start, end)
    assert (span.text, span.score) == ("14 15", 6.0)


def test_spans_longer_than_max_answer_length_are_rejected(windows):
    _, features = windows
    start, end = flat_logits(features)
    put(start, 0, 2, 9.0, 0), put(end, 0, 8, 9.0, 0)  # 7 tokens: too long
    put(end, 0, 5, 1.0, 0)  # 4 tokens: allowed, score 10
    assert answer(features, start, end, max_answer_length=5).text == "2 3 4 5"
    assert answer(features, start, end, max_answer_length=7).text == "2 3 4 5 6 7 8"


def test_end_before_start_is_rejected(windows):
    _, features = windows
    start, end = flat_logits(features)
    put(start, 0, 6, 9.0, 0), put(end, 0, 3, 9.0, 0)
    put(end, 0, 7, 1.0, 0)
    # (6, 3) is invalid; (6, 7) scores 10, beating any start at -5 paired with end 3 (4).
    span = answer(features, start, end)
    assert (span.text, span.score) == ("6 7", 10.0)


def test_single_token_answer(windows):
    _, features = windows
    start, end = flat_logits(features)
    put(start, 0, 4, 2.0, 0), put(end, 0, 4, 2.0, 0)
    assert answer(features, start, end).text == "4"


def test_question_cls_sep_and_padding_positions_are_rejected(tokenizer):
    example = numbers_example(n_tokens=5)
    features = build_features([example], tokenizer, **SMALL)  # one window, padded
    start, end = flat_logits(features)
    for position in (0, 1, 2, 8, 9, 15):  # [CLS], "who", [SEP], final [SEP], padding
        start[0, position] = end[0, position] = 9.0
    start[0, HEAD + 1] = end[0, HEAD + 2] = 0.0
    assert answer(features, start, end).text == "1 2"


def test_nothing_valid_gives_empty_prediction(windows):
    example, features = windows
    start, end = flat_logits(features)
    start[:, 1] = 9.0  # every window's top start is the question token
    assert best_spans(features, start, end, n_best=1) == {}
    assert predictions_from_logits([example], features, start, end, n_best=1) == {"q0": ""}


def test_predictions_are_keyed_by_question_id(tokenizer):
    examples = [numbers_example("first", 10), numbers_example("second", 30)]
    features = build_features(examples, tokenizer, **SMALL)
    assert features.example_index.tolist() == [0, 1, 1, 1, 1]
    start, end = flat_logits(features)
    start[0, HEAD + 7] = end[0, HEAD + 8] = 1.0  # "7 8" for the first question
    put(start, 2, 12, 1.0, 5), put(end, 2, 12, 1.0, 5)  # "12" for the second, in its window 1
    predictions = predictions_from_logits(examples, features, start, end)
    assert predictions == {"first": "7 8", "second": "12"}


def test_mismatched_inputs_are_rejected(windows, tokenizer):
    example, features = windows
    start, end = flat_logits(features)
    with pytest.raises(ValueError, match="shape"):
        best_spans(features, start[:, :5], end)
    with pytest.raises(ValueError, match="examples"):
        predictions_from_logits([example, example], features, start, end)


def test_unicode_span_text_is_the_original_substring(tokenizer):
    context = "Zürich\u00a0liegt nahe 北京 und café 🙂 été\u3000naïve."
    answers = ["Zürich\u00a0liegt", "北京 und café 🙂", "été\u3000naïve"]
    examples = [Example(f"u{i}", "t", "where", context, (text,), (context.index(text),))
                for i, text in enumerate(answers)]
    features = build_features(examples, tokenizer, with_labels=True)
    start, end = flat_logits(features)
    rows = np.arange(len(features))
    start[rows, features.start_positions] = 5.0
    end[rows, features.end_positions] = 5.0
    predictions = predictions_from_logits(examples, features, start, end)
    assert predictions == {example.qid: example.answers[0] for example in examples}


def test_oracle_logits_recover_dev_answers(tokenizer):
    # End to end on real paragraphs: logits peaked on the training labels must give
    # back the answers, except where an answer is only part of a word piece.
    examples = select(examples_from(load_dataset()), limit=500)
    features = build_features(examples, tokenizer, with_labels=True)
    start, end = flat_logits(features)
    rows = np.arange(len(features))
    start[rows, features.start_positions] = 5.0
    end[rows, features.end_positions] = 5.0
    predictions = predictions_from_logits(examples, features, start, end)
    for example in examples:
        # "8" inside "18": the whole token comes back, so the answer is always inside it.
        assert example.answers[0] in predictions[example.qid]
    result = score(examples, predictions)
    assert result["count"] == 500
    assert result["exact_match"] >= 97.5  # 11 of these 500 answers are parts of a token
