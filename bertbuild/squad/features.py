"""SQuAD examples -> fixed-length BERT input windows (and training labels).

Layout of every row: `[CLS] question [SEP] context-window [SEP]` then zero
padding. Long contexts are covered by overlapping windows; each context token
keeps the character span it came from in the ORIGINAL context, so answers are
cut straight out of the source text and never detokenized.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

from bertbuild.errors import UserInputError
from bertbuild.squad.data import Example

REQUIRED_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD_ID = 0  # BERT pads with id 0 whatever the vocab; masks make the value irrelevant.

Offset = tuple[int, int]
Encoded = tuple[list[int], list[Offset]]  # token ids and their original character spans


def make_tokenizer(vocab_path: str | Path, lower_case: bool = True) -> Tokenizer:
    """A BERT WordPiece tokenizer over a checkpoint's vocab.txt.

    Accents are stripped exactly when the text is lower-cased, as the uncased
    BERT checkpoints were trained; cased checkpoints keep both.
    """
    path = Path(vocab_path)
    if not path.is_file():
        raise UserInputError(f"vocab file not found: {path}")
    vocab = WordPiece.read_file(str(path))
    missing = [token for token in REQUIRED_SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise UserInputError(f"vocab file {path} lacks special tokens: {', '.join(missing)}")
    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lower_case, lowercase=lower_case
    )
    tokenizer.pre_tokenizer = BertPreTokenizer()
    return tokenizer


@dataclass
class Features:
    """Model inputs for a list of examples, one row per context window.

    `token_offsets[f][i]` is the (start, end) character span in the original
    context of sequence position i of feature f, or None for [CLS], question,
    [SEP] and padding positions. `token_is_max_context[f][i]` is True when
    feature f is the one window where that context token has the most
    surrounding context. `contexts[e]` is the context of example e, so spans can
    be cut out of it without the examples at hand.
    """

    input_ids: np.ndarray
    segment_ids: np.ndarray
    input_mask: np.ndarray
    example_index: np.ndarray
    window_start: np.ndarray
    token_offsets: list[list[Offset | None]]
    token_is_max_context: list[list[bool]]
    contexts: list[str]
    start_positions: np.ndarray | None = None
    end_positions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def max_seq_length(self) -> int:
        return int(self.input_ids.shape[1])

    def batches(self, batch_size: int, length_bucket: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """Yield {input_ids, segment_ids, input_mask} int32 batches (`bertbuild.squad.batching`).

        `length_bucket` 0: consecutive windows padded to max_seq_length; else
        longest first, each batch trimmed to a multiple of `length_bucket`.
        """
        from bertbuild.squad.batching import plan_batches

        return plan_batches(self.input_mask, batch_size, length_bucket).feeds(self)


def window_starts(n_tokens: int, window_length: int, stride: int) -> list[int]:
    """Start indices of windows over `n_tokens` context tokens.

    Consecutive windows start `stride` apart (never more than a window length,
    so no token is skipped) and the last one reaches the end of the context.
    An empty context still gets one (empty) window so every example has a row.
    """
    step = min(stride, window_length)
    starts = [0]
    while starts[-1] + window_length < n_tokens:
        starts.append(starts[-1] + step)
    return starts


def max_context_window(
    starts: Sequence[int], lengths: Sequence[int], n_tokens: int
) -> np.ndarray:
    """For each context token, the index of the window where it has the most context.

    A token's context in a window is min(tokens to its left, tokens to its
    right) inside that window; ties go to the longer window, then the earlier.
    """
    best_window = np.zeros(n_tokens, dtype=np.int64)
    best_context = np.full(n_tokens, -1, dtype=np.int64)
    best_length = np.zeros(n_tokens, dtype=np.int64)
    for window, (start, length) in enumerate(zip(starts, lengths)):
        positions = np.arange(start, start + length)
        context = np.minimum(positions - start, start + length - 1 - positions)
        better = (context > best_context[positions]) | (
            (context == best_context[positions]) & (length > best_length[positions])
        )
        chosen = positions[better]
        best_window[chosen] = window
        best_context[chosen] = context[better]
        best_length[chosen] = length
    return best_window


def answer_token_span(
    offsets: Sequence[Offset], char_start: int, char_end: int
) -> tuple[int, int] | None:
    """First and last context tokens overlapping the characters [char_start, char_end)."""
    overlapping = [
        i for i, (start, end) in enumerate(offsets) if start < char_end and end > char_start
    ]
    if not overlapping:
        return None
    return overlapping[0], overlapping[-1]


def _example_answer_span(example: Example, offsets: Sequence[Offset]) -> tuple[int, int] | None:
    """Token span of the first ground-truth answer, the one training targets."""
    if not example.answers:
        return None
    char_start = example.answer_starts[0]
    return answer_token_span(offsets, char_start, char_start + len(example.answers[0]))


def _window_label(
    answer: tuple[int, int] | None, start: int, length: int, context_offset: int
) -> tuple[int, int]:
    """Sequence positions of the answer in a window, or (0, 0) ([CLS]) if the window cuts it."""
    if answer is None or answer[0] < start or answer[1] >= start + length:
        return 0, 0
    return context_offset + answer[0] - start, context_offset + answer[1] - start


def extend_over_trailing_marks(text: str, offsets: Sequence[Offset]) -> list[Offset]:
    """Let each token's span also cover the uncovered combining marks right after it.

    Accent stripping deletes combining marks, and a deleted mark at the end of
    a word belongs to no token, so a decomposed "e\u0301" would be cut in half
    when a span is sliced out of the original text.
    """
    extended = []
    for index, (start, end) in enumerate(offsets):
        limit = offsets[index + 1][0] if index + 1 < len(offsets) else len(text)
        while end < limit and unicodedata.category(text[end]) == "Mn":
            end += 1
        extended.append((start, end))
    return extended


def _encode_all(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, Encoded]:
    """Token ids and original-text character offsets for each distinct text."""
    unique = list(dict.fromkeys(texts))
    encodings = tokenizer.encode_batch(unique, add_special_tokens=False)
    return {
        text: (encoding.ids, extend_over_trailing_marks(text, encoding.offsets))
        for text, encoding in zip(unique, encodings)
    }


def _padded_row(special: tuple[int, int], query_ids: list[int], context_ids: list[int],
                max_seq_length: int) -> tuple[list[int], list[int], list[int]]:
    """(input ids, segment ids, input mask) of `[CLS] q [SEP] window [SEP]` plus padding."""
    cls_id, sep_id = special
    head = len(query_ids) + 2
    n_real = head + len(context_ids) + 1
    n_pad = max_seq_length - n_real
    return (
        [cls_id, *query_ids, sep_id, *context_ids, sep_id] + [PAD_ID] * n_pad,
        [0] * head + [1] * (n_real - head) + [0] * n_pad,
        [1] * n_real + [0] * n_pad,
    )


def _example_rows(index: int, example: Example, query_ids: list[int], context: Encoded,
                  special: tuple[int, int], max_seq_length: int, doc_stride: int,
                  with_labels: bool) -> list[tuple]:
    """One row per window of one example: the padded inputs plus per-token bookkeeping."""
    context_ids, context_offsets = context
    head = len(query_ids) + 2  # [CLS] question [SEP]
    window_length = max_seq_length - head - 1  # room left before the final [SEP]
    starts = window_starts(len(context_ids), window_length, doc_stride)
    lengths = [min(window_length, len(context_ids) - start) for start in starts]
    best_window = max_context_window(starts, lengths, len(context_ids))
    answer = _example_answer_span(example, context_offsets) if with_labels else None
    rows = []
    for window, (start, length) in enumerate(zip(starts, lengths)):
        stop = start + length
        tail = max_seq_length - head - length  # final [SEP] and padding
        ids, segments, mask = _padded_row(special, query_ids, context_ids[start:stop],
                                          max_seq_length)
        offsets = [None] * head + context_offsets[start:stop] + [None] * tail
        flags = (best_window[start:stop] == window).tolist()
        is_max_context = [False] * head + flags + [False] * tail
        label = _window_label(answer, start, length, head)
        rows.append((ids, segments, mask, index, start, offsets, is_max_context, label))
    return rows


def _stack(rows: list[tuple], contexts: list[str], max_seq_length: int,
           with_labels: bool) -> Features:
    """Stack per-window rows into the arrays and lists of Features."""
    columns = list(zip(*rows)) if rows else [()] * 8
    ids, segments, mask, example_index, window_start, offsets, is_max_context, labels = columns

    def int32_matrix(values):
        return np.asarray(values, dtype=np.int32).reshape(len(rows), max_seq_length)

    def label_column(side):
        if not with_labels:
            return None
        return np.asarray([label[side] for label in labels], dtype=np.int32)

    return Features(
        input_ids=int32_matrix(ids),
        segment_ids=int32_matrix(segments),
        input_mask=int32_matrix(mask),
        example_index=np.asarray(example_index, dtype=np.int64),
        window_start=np.asarray(window_start, dtype=np.int64),
        token_offsets=list(offsets),
        token_is_max_context=list(is_max_context),
        contexts=contexts,
        start_positions=label_column(0), end_positions=label_column(1),
    )


def _check_lengths(max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    """Window settings a user picks (ask, eval, finetune, configs): a bad set is one line, not a traceback."""
    from bertbuild.errors import UserInputError

    if max_query_length < 1 or doc_stride < 1:
        raise UserInputError(f"max_query_length and doc_stride must be >= 1, got {max_query_length}, {doc_stride}")
    if max_seq_length - max_query_length - 3 < 1:
        raise UserInputError(
            f"max_seq_length {max_seq_length} leaves no room for context after a "
            f"{max_query_length}-token question, [CLS] and two [SEP]: use a max_seq_length above "
            f"{max_query_length + 3}"
        )


def build_features(
    examples: Sequence[Example],
    tokenizer: Tokenizer,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    with_labels: bool = False,
) -> Features:
    """Tokenize examples into sliding windows of `max_seq_length` tokens.

    With `with_labels`, also give each window the sequence positions of the
    first answer's first and last token, or 0 ([CLS]) when the window does not
    hold the whole answer.
    """
    _check_lengths(max_seq_length, doc_stride, max_query_length)
    # Paragraphs are shared by several questions: encode each distinct text once.
    contexts = [example.context for example in examples]
    context_encodings = _encode_all(tokenizer, contexts)
    question_encodings = _encode_all(tokenizer, [example.question for example in examples])
    special = (tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"))
    rows = []
    for index, example in enumerate(examples):
        query_ids = question_encodings[example.question][0][:max_query_length]
        rows += _example_rows(index, example, query_ids, context_encodings[example.context],
                              special, max_seq_length, doc_stride, with_labels)
    return _stack(rows, contexts, max_seq_length, with_labels)
