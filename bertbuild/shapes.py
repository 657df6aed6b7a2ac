"""The (batch, seq) shapes a run feeds, and which optimization profiles cover them.

A leaf (no bertbuild import), because the config validates shapes before
anything is built, the readiness check and the TensorRT runner pick profiles,
and length-aware batching cuts windows to the same lengths. A profile is
anything with `min` and `max` (batch, seq) pairs: `config.ProfileConfig` or
`runner.Profile`.
"""

from __future__ import annotations

from typing import Sequence


def covers(profile, batch: int, seq: int) -> bool:
    return profile.min[0] <= batch <= profile.max[0] and profile.min[1] <= seq <= profile.max[1]


def fitting_profile(profiles: Sequence, batch: int, seq: int) -> int | None:
    """Index of the first profile covering (batch, seq), or None."""
    return next((i for i, p in enumerate(profiles) if covers(p, batch, seq)), None)


def describe(profiles: Sequence) -> str:
    return ", ".join(f"{tuple(p.min)}..{tuple(p.max)}" for p in profiles) or "none"


def uncovered(profiles: Sequence, batches: range, seq: int) -> int | None:
    """The first batch size in `batches` that no profile covers at `seq`, or None if all are covered."""
    return next((b for b in batches if fitting_profile(profiles, b, seq) is None), None)


# eval.length_bucket's default, measured (`bertbuild bench --lengths heldout --limit 400`, the embedded
# model's FP32 export, 400 held-out windows at 384, batch 8, ONNX Runtime CPU on a busy 2-core host, one run):
#   padded 2.90 windows/s; bucket 16: 6.47; 32: 7.01; 64: 6.25; 128: 4.47
#   (padding fed 58.2 %, 5.9 %, 10.1 %, 18.1 %, 29.6 %).
# Below 32 the padding saved no longer pays for the extra shapes; 32 gives 12 lengths up to 384.
DEFAULT_LENGTH_BUCKET = 32


def trimmed_length(longest: int, length_bucket: int, max_seq_length: int) -> int:
    """The smallest multiple of `length_bucket` holding `longest` positions, at most max_seq_length (0: max_seq_length)."""
    if length_bucket == 0:
        return max_seq_length
    buckets = max(1, -(-int(longest) // length_bucket))  # a window with no real token still gets one bucket
    return min(buckets * length_bucket, max_seq_length)


def bucket_lengths(length_bucket: int, max_seq_length: int) -> list[int]:
    """Every sequence length a pass can feed: bucket, 2*bucket, ... and max_seq_length (0: max_seq_length only)."""
    if length_bucket == 0:
        return [max_seq_length]
    return sorted({trimmed_length(n, length_bucket, max_seq_length)
                   for n in range(length_bucket, max_seq_length + length_bucket, length_bucket)})
