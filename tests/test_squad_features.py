"""Tokenizing examples into BERT windows: layout, sliding windows, labels, offsets."""

from pathlib import Path

import numpy as np
import pytest

from bertbuild.data import UNCASED_VOCAB, bundled_file
from bertbuild.errors import UserInputError
from bertbuild.squad.data import Example, examples_from, load_dataset, select
from bertbuild.squad.features import (
    answer_token_span,
    build_features,
    extend_over_trailing_marks,
    make_tokenizer,
    max_context_window,
    window_starts,
)

VOCAB = bundled_file(UNCASED_VOCAB)

# Small windows so a few dozen tokens span several of them: the question "who"
# is one token, so each window holds 20 - 1 - 3 = 16 context tokens.
SMALL = dict(max_seq_length=20, doc_stride=5, max_query_length=8)
HEAD = 3  # [CLS] who [SEP]: where the context starts in every small row

UNICODE_CONTEXT = (
    "Grüße aus Zürich — the ÉCOLE normale\u00a0supérieure met 北京大学 (Peking University)"
    " in\tÅngström's café 🙂 on 5\u20136 May,\u3000naïve\u2003résumé e\u0301te\u0301 終わり."
)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer(VOCAB)


def numbers_context(n_tokens):
    """A context whose i-th token is the word str(i) (0..199 are single BERT tokens)."""
    return " ".join(str(i) for i in range(n_tokens))


def make_example(context, question="who", answer=None, qid="q0"):
    """An example whose (optional) answer is the first occurrence of `answer` in context."""
    if answer is None:
        return Example(qid, "t", question, context, (), ())
    return Example(qid, "t", question, context, (answer,), (context.index(answer),))


def numbers_answer(first, last):
    """An example over 40 number-tokens whose answer is tokens first..last."""
    context = numbers_context(40)
    answer = " ".join(str(i) for i in range(first, last + 1))
    return make_example(context, answer=answer, qid=f"a{first}-{last}")


def write_vocab(path, tokens):
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def test_small_vocab_fixture_tokenizes_word_pieces(tmp_path):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = write_vocab(tmp_path / "vocab.txt", specials + ["the", "cat", "sat", "##s", ".", "The"])
    uncased = make_tokenizer(vocab).encode("The CATS sat.", add_special_tokens=False)
    assert uncased.tokens == ["the", "cat", "##s", "sat", "."]
    cased_tokenizer = make_tokenizer(vocab, lower_case=False)
    cased = cased_tokenizer.encode("The CATS sat.", add_special_tokens=False)
    assert cased.tokens == ["The", "[UNK]", "sat", "."]
    assert uncased.offsets[1:3] == [(4, 7), (7, 8)]


def test_cased_tokenizer_keeps_accents(tmp_path):
    vocab = write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "café", "cafe"])
    assert make_tokenizer(vocab, lower_case=False).encode("café").tokens == ["café"]
    assert make_tokenizer(vocab, lower_case=True).encode("Café").tokens == ["cafe"]


def test_make_tokenizer_rejects_missing_or_incomplete_vocab(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        make_tokenizer(tmp_path / "absent.txt")
    with pytest.raises(UserInputError, match=r"\[CLS\]"):
        make_tokenizer(write_vocab(tmp_path / "vocab.txt", ["[PAD]", "[UNK]", "[SEP]", "the"]))


def test_row_layout(tokenizer):
    example = make_example("Paris is the capital.", question="Where is it?")
    features = build_features([example], tokenizer, max_seq_length=16, max_query_length=4)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    question = tokenizer.encode("Where is it?", add_special_tokens=False).ids  # 4 tokens
    context = tokenizer.encode("Paris is the capital.", add_special_tokens=False).ids  # 5 tokens
    expected_ids = [cls, *question, sep, *context, sep] + [0] * 4
    assert features.input_ids.tolist() == [expected_ids]
    assert features.segment_ids.tolist() == [[0] * 6 + [1] * 6 + [0] * 4]
    assert features.input_mask.tolist() == [[1] * 12 + [0] * 4]
    for name in ("input_ids", "segment_ids", "input_mask"):
        assert getattr(features, name).dtype == np.int32
    offsets = features.token_offsets[0]
    assert offsets[:6] == [None] * 6 and offsets[11:] == [None] * 5
    words = [example.context[a:b] for a, b in offsets[6:11]]
    assert words == ["Paris", "is", "the", "capital", "."]
    assert features.token_is_max_context[0] == [False] * 6 + [True] * 5 + [False] * 5
    assert features.example_index.tolist() == [0] and features.start_positions is None


def test_query_is_truncated_to_max_query_length(tokenizer):
    question = numbers_context(100)
    features = build_features([make_example("a short context", question=question)], tokenizer,
                              max_seq_length=32, max_query_length=10)
    ids = features.input_ids[0].tolist()
    assert ids[1:11] == tokenizer.encode(numbers_context(10), add_special_tokens=False).ids
    assert ids[11] == tokenizer.token_to_id("[SEP]")
    assert features.segment_ids[0].tolist()[:13] == [0] * 12 + [1]


@pytest.mark.parametrize(
    "n_tokens, window, stride, expected",
    [
        (40, 16, 5, [0, 5, 10, 15, 20, 25]),  # 25 + 16 >= 40: the last window reaches the end
        (16, 16, 5, [0]),
        (17, 16, 5, [0, 5]),
        (0, 16, 5, [0]),
        (40, 16, 50, [0, 16, 32]),  # a stride longer than a window would skip tokens: capped
    ],
)
def test_window_starts(n_tokens, window, stride, expected):
    assert window_starts(n_tokens, window, stride) == expected


def test_max_context_window_prefers_centre_then_longer_then_earlier():
    # Windows [0,4) and [2,6) over 6 tokens; token 2: context 1 vs 0; token 3: 0 vs 1.
    assert max_context_window([0, 2], [4, 4], 6).tolist() == [0, 0, 0, 1, 1, 1]
    # Token 2 has context 1 in both [0,4) and [1,5): equal length, the earlier wins.
    assert max_context_window([0, 1], [4, 4], 5).tolist() == [0, 0, 0, 1, 1]
    # Equal context (0 at the edge), longer window wins.
    assert max_context_window([0, 2], [3, 1], 3).tolist() == [0, 0, 0]


def test_long_context_spans_several_windows(tokenizer):
    example = make_example(numbers_context(40))
    features = build_features([example], tokenizer, **SMALL)
    assert len(features) == 6
    assert features.window_start.tolist() == [0, 5, 10, 15, 20, 25]
    assert features.example_index.tolist() == [0] * 6
    seen_by_token = {i: 0 for i in range(40)}
    max_windows_by_token = {i: [] for i in range(40)}
    for window, start in enumerate(features.window_start):
        offsets = features.token_offsets[window]
        for position, offset in enumerate(offsets):
            if offset is None:
                continue
            token = int(example.context[offset[0]:offset[1]])
            assert token == start + position - HEAD  # the window is the right slice
            seen_by_token[token] += 1
            if features.token_is_max_context[window][position]:
                max_windows_by_token[token].append(window)
    assert all(count >= 1 for count in seen_by_token.values())
    assert all(len(windows) == 1 for windows in max_windows_by_token.values())
    # Token 20 sits in windows 1..4 with context 0, 5, 5, 0: tie -> earlier (2).
    assert max_windows_by_token[20] == [2]
    assert max_windows_by_token[0] == [0] and max_windows_by_token[39] == [5]
    assert features.input_mask[5].sum() == HEAD + 15 + 1  # last window holds tokens 25..39


def test_answer_ending_on_last_token_of_a_window(tokenizer):
    # Tokens 13..15: window 0 holds 0..15, so the answer ends on its last context token.
    features = build_features([numbers_answer(13, 15)], tokenizer, with_labels=True, **SMALL)
    starts, ends = features.start_positions.tolist(), features.end_positions.tolist()
    assert (starts[0], ends[0]) == (HEAD + 13, HEAD + 15)
    assert (starts[1], ends[1]) == (HEAD + 8, HEAD + 10)
    assert (starts[2], ends[2]) == (HEAD + 3, HEAD + 5)
    assert starts[3:] == [0, 0, 0] and ends[3:] == [0, 0, 0]
    assert features.start_positions.dtype == np.int32


def test_answer_straddling_windows_is_labelled_cls_where_cut(tokenizer):
    # Tokens 14..17 cross the end of window 0 (0..15) and the start of window 3 (15..30).
    features = build_features([numbers_answer(14, 17)], tokenizer, with_labels=True, **SMALL)
    labels = list(zip(features.start_positions.tolist(), features.end_positions.tolist()))
    assert labels == [(0, 0), (HEAD + 9, HEAD + 12), (HEAD + 4, HEAD + 7), (0, 0), (0, 0), (0, 0)]


def test_unanswerable_or_unlocatable_answers_are_labelled_cls(tokenizer):
    no_answer = make_example("some text here")
    beyond = Example("q1", "t", "who", "some text", ("ghost",), (50,))
    features = build_features([no_answer, beyond], tokenizer, with_labels=True)
    assert features.start_positions.tolist() == [0, 0]
    assert features.end_positions.tolist() == [0, 0]


@pytest.mark.parametrize(
    "answer",
    ["Grüße aus Zürich", "ÉCOLE normale\u00a0supérieure", "北京大学", "京大", "Ångström's café 🙂",
     "5\u20136 May", "naïve\u2003résumé", "e\u0301te\u0301", "終わり."],
)
def test_unicode_answers_map_back_to_the_original_text(tokenizer, answer):
    example = make_example(UNICODE_CONTEXT, answer=answer)
    features = build_features([example], tokenizer, with_labels=True)
    start, end = int(features.start_positions[0]), int(features.end_positions[0])
    assert start > 0
    offsets = features.token_offsets[0]
    assert UNICODE_CONTEXT[offsets[start][0]:offsets[end][1]] == answer


def test_unicode_offsets_are_ordered_trimmed_substrings(tokenizer):
    features = build_features([make_example(UNICODE_CONTEXT)], tokenizer)
    spans = [offset for offset in features.token_offsets[0] if offset is not None]
    assert UNICODE_CONTEXT[spans[0][0]:spans[0][1]] == "Gr"
    for (start, end), (next_start, _) in zip(spans, spans[1:]):
        piece = UNICODE_CONTEXT[start:end]
        assert 0 <= start < end <= next_start and piece == piece.strip()
    assert "🙂" in [UNICODE_CONTEXT[a:b] for a, b in spans]  # [UNK], yet still located


def test_stripped_trailing_accent_stays_in_the_span():
    # "cafe\u0301": the normalizer drops the final combining accent; the span keeps it.
    assert extend_over_trailing_marks("cafe\u0301 bar", [(0, 4), (6, 9)]) == [(0, 5), (6, 9)]
    assert extend_over_trailing_marks("e\u0301", [(0, 1)]) == [(0, 2)]
    assert extend_over_trailing_marks("ab", [(0, 1), (1, 2)]) == [(0, 1), (1, 2)]


def test_answer_token_span_uses_overlap():
    offsets = [(0, 3), (4, 8), (8, 10), (11, 14)]
    assert answer_token_span(offsets, 4, 10) == (1, 2)
    assert answer_token_span(offsets, 5, 9) == (1, 2)  # partial tokens count
    assert answer_token_span(offsets, 3, 4) is None  # only whitespace


def test_batches_cover_all_rows(tokenizer):
    examples = [make_example(numbers_context(40), qid=f"q{i}") for i in range(3)]
    features = build_features(examples, tokenizer, **SMALL)
    batches = list(features.batches(4))
    assert [len(batch["input_ids"]) for batch in batches] == [4, 4, 4, 4, 2]
    assert set(batches[0]) == {"input_ids", "segment_ids", "input_mask"}
    assert all(array.dtype == np.int32 for batch in batches for array in batch.values())
    assert np.array_equal(np.concatenate([b["input_ids"] for b in batches]), features.input_ids)
    with pytest.raises(ValueError):
        next(features.batches(0))


def test_impossible_lengths_are_rejected(tokenizer):
    # Settings a user picks: one-line user errors (exit 2 at the CLI), not tracebacks.
    with pytest.raises(UserInputError, match="no room.*use a max_seq_length above 11"):
        build_features([make_example("x")], tokenizer, max_seq_length=10, max_query_length=8)
    with pytest.raises(UserInputError, match="doc_stride must be >= 1"):
        build_features([make_example("x")], tokenizer, doc_stride=0)


def test_no_examples_gives_empty_features(tokenizer):
    features = build_features([], tokenizer, max_seq_length=8, max_query_length=2, with_labels=True)
    assert len(features) == 0 and features.input_ids.shape == (0, 8)


def test_dev_answers_are_labelled_in_some_window(tokenizer):
    examples = select(examples_from(load_dataset()), limit=300)
    features = build_features(examples, tokenizer, with_labels=True)
    labelled = set()
    for row in np.flatnonzero(features.start_positions):
        start, end = features.start_positions[row], features.end_positions[row]
        offsets = features.token_offsets[row]
        example = examples[features.example_index[row]]
        text = example.context[offsets[start][0]:offsets[end][1]]
        assert example.answers[0] in text  # tokens may extend past a sub-word answer
        labelled.add(int(features.example_index[row]))
    assert labelled == set(range(300))
