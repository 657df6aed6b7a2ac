"""Which (batch, seq) shapes a list of optimization profiles covers.

Shared by config validation (every shape a run feeds must be covered before
anything is built), the readiness check, and the TensorRT runner (which
switches to the profile that fits each feed). A profile is anything with
`min` and `max` (batch, seq) pairs: `config.ProfileConfig` or `backends.base.Profile`.
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
