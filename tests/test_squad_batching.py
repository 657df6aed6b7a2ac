"""Length-aware batching: sorted, trimmed batches whose outputs go back exactly where padded ones would."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bertbuild.squad.batching import PAD_LOGIT, plan_batches, real_extents, real_positions
from bertbuild.shapes import bucket_lengths, trimmed_length

SEQ = 16


def _windows(lengths: list[int], seq: int = SEQ) -> SimpleNamespace:
    """Windows laid out as BERT's: `length` real tokens (ids 1..length) then zero padding."""
    mask = np.zeros((len(lengths), seq), dtype=np.int32)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids = mask * (np.arange(seq, dtype=np.int32) + 1) + 1000 * np.arange(len(lengths), dtype=np.int32)[:, None] * mask
    return SimpleNamespace(input_ids=ids, segment_ids=mask.copy(), input_mask=mask)


def _fake_logits(feed: dict) -> np.ndarray:
    """A model whose logit at a real position is that token's id, and garbage at padding."""
    return np.where(feed["input_mask"] > 0, feed["input_ids"], 777).astype(np.float32)


def test_restore_puts_every_window_back_in_its_original_order():
    windows = _windows([3, 16, 7, 1, 9, 16, 2])
    plan = plan_batches(windows.input_mask, batch_size=3, length_bucket=4)
    restored = plan.restore([_fake_logits(feed) for feed in plan.feeds(windows)])
    expected = np.where(windows.input_mask > 0, windows.input_ids, PAD_LOGIT).astype(np.float32)
    assert restored.shape == (7, SEQ) and restored.dtype == np.float32
    assert np.array_equal(restored, expected)
    # every window fed exactly once
    assert sorted(np.concatenate([b.rows for b in plan.batches]).tolist()) == list(range(7))


def test_batches_are_longest_first_stable_and_trimmed_to_bucket_multiples():
    windows = _windows([3, 16, 7, 1, 9, 16, 2, 7])
    plan = plan_batches(windows.input_mask, batch_size=3, length_bucket=4)
    assert [b.rows.tolist() for b in plan.batches] == [[1, 5, 4], [2, 7, 0], [6, 3]]  # ties keep file order
    assert [b.length for b in plan.batches] == [16, 8, 4]
    feeds = list(plan.feeds(windows))
    assert [f["input_ids"].shape for f in feeds] == [(3, 16), (3, 8), (2, 4)]
    assert all(f[name].dtype == np.int32 for f in feeds for name in f)
    # nothing real is ever cut off
    assert sum(int(f["input_mask"].sum()) for f in feeds) == int(windows.input_mask.sum())


def test_the_cap_is_max_seq_length_even_when_it_is_no_multiple():
    assert trimmed_length(15, 4, 14) == 14 and trimmed_length(13, 4, 14) == 14 and trimmed_length(12, 4, 14) == 12
    assert bucket_lengths(64, 384) == [64, 128, 192, 256, 320, 384]
    assert bucket_lengths(64, 100) == [64, 100]
    assert bucket_lengths(512, 384) == [384]
    assert bucket_lengths(0, 384) == [384]


def test_bucket_zero_is_the_old_padded_file_order_batches():
    windows = _windows([3, 16, 7, 1, 9])
    plan = plan_batches(windows.input_mask, batch_size=2, length_bucket=0)
    feeds = list(plan.feeds(windows))
    assert [b.rows.tolist() for b in plan.batches] == [[0, 1], [2, 3], [4]]
    for number, feed in enumerate(feeds):
        rows = slice(2 * number, 2 * number + 2)
        for name in ("input_ids", "segment_ids", "input_mask"):
            assert np.array_equal(feed[name], getattr(windows, name)[rows])


def test_features_batches_are_the_plan(vocab_path):
    from bertbuild.squad.data import Example
    from bertbuild.squad.features import build_features, make_tokenizer

    examples = [Example("a", "t", "who?", "Ada wrote. " * n, ("Ada",), (0,)) for n in (1, 30, 4)]
    features = build_features(examples, make_tokenizer(vocab_path), max_seq_length=64, doc_stride=32,
                              max_query_length=8)
    padded = list(features.batches(2))
    assert all(f["input_ids"].shape[1] == 64 for f in padded)
    assert np.array_equal(np.concatenate([f["input_ids"] for f in padded]), features.input_ids)
    trimmed = list(features.batches(2, length_bucket=16))
    assert all(f["input_ids"].shape[1] % 16 == 0 for f in trimmed)
    assert sum(f["input_ids"].size for f in trimmed) < features.input_ids.size


def test_a_batch_of_one_and_an_empty_pass():
    one = _windows([5])
    plan = plan_batches(one.input_mask, batch_size=8, length_bucket=4)
    assert [(b.rows.tolist(), b.length) for b in plan.batches] == [([0], 8)]
    restored = plan.restore([_fake_logits(f) for f in plan.feeds(one)])
    assert restored[0, :5].tolist() == [1, 2, 3, 4, 5] and (restored[0, 5:] == PAD_LOGIT).all()

    empty = _windows([])
    plan = plan_batches(empty.input_mask, batch_size=8, length_bucket=4)
    assert len(plan) == 0 and list(plan.feeds(empty)) == []
    assert plan.restore([]).shape == (0, SEQ)


def test_a_window_without_real_tokens_still_gets_one_bucket():
    windows = _windows([0, 0])
    plan = plan_batches(windows.input_mask, batch_size=2, length_bucket=4)
    assert [b.length for b in plan.batches] == [4]
    assert (plan.restore([_fake_logits(f) for f in plan.feeds(windows)]) == PAD_LOGIT).all()


def test_extents_never_cut_a_real_token_off_a_mask_with_holes():
    mask = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    assert real_extents(mask).tolist() == [4, 0, 6]


def test_sample_spreads_over_the_plan_and_skips_the_partial_last_batch():
    windows = _windows([16 - i % 16 for i in range(41)])  # 6 batches of 8, the last of 1
    plan = plan_batches(windows.input_mask, batch_size=8, length_bucket=4)
    picked = plan.sample(2)
    assert [b.rows.size for b in picked.batches] == [8, 8]
    assert [b.length for b in picked.batches] == [plan.batches[1].length, plan.batches[4].length]
    assert plan.sample(None) is plan and plan.sample(99) is plan
    with pytest.raises(ValueError):
        plan.sample(0)


def test_restore_rejects_outputs_that_do_not_match_the_batches():
    windows = _windows([3, 9])
    plan = plan_batches(windows.input_mask, batch_size=1, length_bucket=4)
    with pytest.raises(ValueError, match="2 batches"):
        plan.restore([np.zeros((1, 12))])
    with pytest.raises(ValueError, match="batch of 1 x 12"):
        plan.restore([np.zeros((1, 16)), np.zeros((1, 4))])


@pytest.mark.parametrize("batch_size, bucket", [(0, 4), (2, -1)])
def test_bad_arguments(batch_size, bucket):
    with pytest.raises(ValueError):
        plan_batches(np.ones((2, 4)), batch_size, bucket)


def test_real_positions_keeps_only_real_tokens_of_token_aligned_tensors():
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    assert real_positions(hidden, mask).tolist() == [[0, 1], [2, 3], [6, 7]]
    flat = np.ones((6, 2), dtype=np.float32)  # not [batch, seq, ...]: left alone
    assert real_positions(flat, mask) is flat
