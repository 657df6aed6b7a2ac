"""Length-aware batching: a pass's windows sorted by real length, each batch cut to what it holds.

Every SQuAD window is `[CLS] question [SEP] context [SEP]` and then padding up
to max_seq_length; on the held-out half at 384 tokens half of all positions are
padding. ONNX Runtime's CPU provider computes every position it is fed, so the
only way not to pay for padding is not to feed it:

    plan = plan_batches(features.input_mask, batch_size=8, length_bucket=32)
    outputs = [runner.infer(feed)["start_logits"] for feed in plan.feeds(features)]
    start = plan.restore(outputs)      # [windows, max_seq_length], the original order

`plan_batches` sorts the windows by real length (longest first, ties in their
original order), cuts them into batches of `batch_size` and trims each batch
to the smallest multiple of `length_bucket` that holds its longest window
(capped at max_seq_length). Few distinct lengths means few distinct shapes:
what keeps a TensorRT profile set and ONNX Runtime's per-shape memory plans
small. `length_bucket` 0 is the old way: file order, every batch padded to
max_seq_length.

`restore` puts per-batch outputs back in the original order at full length
and writes PAD_LOGIT at every position past a window's real tokens, so
post-processing and EM/F1 see what they always saw, and the saved logits of
two engines differ only where the engines do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from bertbuild.model.signature import INPUT_NAMES
from bertbuild.shapes import trimmed_length

# What every position past a window's real tokens holds in restored outputs: the export's own
# additive attention mask value, far below any real logit, and the same for every engine.
PAD_LOGIT = -10000.0


def real_extents(input_mask: np.ndarray) -> np.ndarray:
    """Per window, one past its last real position.

    For BERT's layout (real tokens first, padding after) this is
    `input_mask.sum(1)`; taking the last real position instead keeps a trim
    from ever cutting a real token off a mask with holes.
    """
    mask = np.asarray(input_mask) != 0
    if mask.ndim != 2:
        raise ValueError(f"input_mask must be [windows, seq], got shape {mask.shape}")
    if mask.shape[1] == 0:
        return np.zeros(mask.shape[0], dtype=np.int64)
    last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, 0).astype(np.int64)


@dataclass(frozen=True)
class Batch:
    """One call's windows (indices into the pass, in feed order) and the positions fed of each."""

    rows: np.ndarray
    length: int


@dataclass(frozen=True)
class BatchPlan:
    """How one pass over a set of windows is fed, and how its outputs go back."""

    batches: tuple[Batch, ...]
    extents: np.ndarray  # per window (original order): one past its last real position
    max_seq_length: int
    length_bucket: int

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def windows(self) -> int:
        return int(self.extents.size)

    @property
    def fed_positions(self) -> int:
        """Sequence positions the pass feeds, padding inside batches included."""
        return sum(batch.rows.size * batch.length for batch in self.batches)

    def feeds(self, windows) -> Iterator[dict[str, np.ndarray]]:
        """The int32 model inputs of each batch; `windows` has input_ids, segment_ids and input_mask arrays."""
        arrays = {name: getattr(windows, name) for name in INPUT_NAMES}
        for batch in self.batches:
            yield {name: np.ascontiguousarray(array[batch.rows, :batch.length], dtype=np.int32)
                   for name, array in arrays.items()}

    def sample(self, count: int | None) -> "BatchPlan":
        """`count` batches, one from the middle of each of `count` equal stretches of the plan (None: all).

        With sorted batches a prefix would be the longest windows only; a spread
        sees long and short windows and several fed lengths, and skips the
        partial last batch unless every batch is asked for.
        """
        if count is None or count >= len(self.batches):
            return self
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        picked = ((np.arange(count) + 0.5) * len(self.batches) / count).astype(np.int64)
        return BatchPlan(tuple(self.batches[i] for i in picked), self.extents, self.max_seq_length,
                         self.length_bucket)

    def restore(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """Per-batch outputs ([rows, length, ...], in feed order) as one [windows, max_seq_length, ...] array.

        Windows are back in their original order; every position at or past a
        window's extent holds PAD_LOGIT. Windows no batch fed (a sampled plan) are PAD_LOGIT throughout.
        """
        if len(outputs) != len(self.batches):
            raise ValueError(f"{len(outputs)} outputs for {len(self.batches)} batches")
        if not outputs:
            return np.full((self.windows, self.max_seq_length), PAD_LOGIT, dtype=np.float32)
        first = np.asarray(outputs[0])
        restored = np.full((self.windows, self.max_seq_length, *first.shape[2:]), PAD_LOGIT, dtype=first.dtype)
        for batch, value in zip(self.batches, outputs):
            value = np.asarray(value)
            if value.shape[:2] != (batch.rows.size, batch.length):
                raise ValueError(f"output of shape {value.shape} for a batch of {batch.rows.size} x {batch.length}")
            restored[batch.rows, :batch.length] = value
        past = np.arange(self.max_seq_length)[None, :] >= self.extents[:, None]
        restored[past] = PAD_LOGIT
        return restored


def plan_batches(input_mask: np.ndarray, batch_size: int, length_bucket: int) -> BatchPlan:
    """Batches of `batch_size` windows: longest first and trimmed to multiples of `length_bucket` (0: as stored)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if length_bucket < 0:
        raise ValueError(f"length_bucket must be >= 0, got {length_bucket}")
    extents = real_extents(input_mask)
    max_seq_length = int(np.shape(input_mask)[1])
    if length_bucket == 0:
        order = np.arange(extents.size)
    else:
        order = np.argsort(-extents, kind="stable")  # longest first: a pass's peak memory shows in its first call
    batches = []
    for begin in range(0, order.size, batch_size):
        rows = order[begin:begin + batch_size]
        batches.append(Batch(rows, trimmed_length(int(extents[rows].max()), length_bucket, max_seq_length)))
    return BatchPlan(tuple(batches), extents, max_seq_length, length_bucket)


def real_positions(value: np.ndarray, input_mask: np.ndarray) -> np.ndarray:
    """A token-aligned activation ([batch, seq, ...] over the feed's positions) at its real tokens only.

    Gives [real tokens, ...]; any other tensor comes back unchanged. Trimmed
    batches still pad their shorter windows, and statistics over activations
    (calibration ranges) must not count what the model computes there.
    """
    mask = np.asarray(input_mask) != 0
    if value.ndim >= 2 and value.shape[:2] == mask.shape:
        return value[mask]
    return value
