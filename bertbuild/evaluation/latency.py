"""Latency of any Runner on real SQuAD windows: percentiles, throughput, ratios.

Pure measurement, shared by `bertbuild bench` and the engine builds. Every
timed call is one `runner.infer(feed)`: it includes the runner's host-side
work (the int32 feed conversion, the copies into and out of the runtime), as
an application would see it. The feed is the first `batch` held-out SQuAD
windows, tokenized to `seq` (so padded to `seq` like a real request): real
masks, real padding, never random ids. `measure_pass` instead times a whole
pass over held-out windows batched as the scorer batches them (sorted by
length, each batch trimmed: `bertbuild.squad.batching`), in windows/s and
real tokens/s. `Timed` rows carry which backend ran a file and what it
computed in, for `bertbuild bench`'s comparisons across runtimes (its tables:
`bertbuild.reporting.latency_tables`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertbuild.runner import Runner
from bertbuild.model.signature import INPUT_NAMES
from bertbuild.squad.features import Features

MIN_ITERATIONS = 3  # when timing by `min_seconds`, never report fewer samples than this


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of one runner on one feed (milliseconds)."""

    name: str
    batch: int
    seq: int
    iterations: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @property
    def sequences_per_s(self) -> float:
        return self.batch * 1000.0 / self.mean_ms if self.mean_ms > 0 else math.inf

    def to_dict(self) -> dict:
        data = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        data["sequences_per_s"] = round(self.sequences_per_s, 2)
        return data


def feed_from(features: Features, batch: int) -> dict[str, np.ndarray]:
    """The first `batch` windows as an int32 feed (windows repeat when there are fewer)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rows = np.resize(np.arange(len(features)), batch)
    return {name: np.ascontiguousarray(getattr(features, name)[rows], dtype=np.int32) for name in INPUT_NAMES}


def heldout_windows(seq: int, vocab_path: Path | str | None = None, lower_case: bool = True,
                    dataset: str = "bundled", limit: int | None = None) -> Features:
    """Windows of the first `limit` held-out SQuAD questions (None: all) tokenized at `seq` tokens.

    At 384 the query length and stride are the scorer's defaults (64, 128), so
    these are the windows a run scores.
    """
    from bertbuild.data import UNCASED_VOCAB, bundled_file
    from bertbuild.squad.sets import featurize, first_questions

    examples = first_questions(dataset, "heldout", limit=limit)
    return featurize(examples, vocab_path or bundled_file(UNCASED_VOCAB), lower_case, max_seq_length=seq,
                     max_query_length=min(64, seq // 2), doc_stride=max(8, min(128, seq // 3))).features


def squad_feed(batch: int, seq: int, vocab_path: Path | str | None = None, lower_case: bool = True,
               dataset: str = "bundled") -> dict[str, np.ndarray]:
    """The first `batch` held-out SQuAD windows tokenized at `seq` tokens, as an int32 feed."""
    return feed_from(heldout_windows(seq, vocab_path, lower_case, dataset, limit=max(batch, 1)), batch)


def measure(runner: Runner, feed: dict[str, np.ndarray], warmup: int = 5, iterations: int | None = None,
            min_seconds: float = 2.0, name: str | None = None) -> LatencyStats:
    """Time `runner.infer(feed)`.

    After `warmup` untimed calls: exactly `iterations` timed calls when given,
    else calls until `min_seconds` have passed (at least MIN_ITERATIONS).
    An inactive runner is activated for the measurement and deactivated after.
    """
    if iterations is not None and iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    batch, seq = np.shape(feed[INPUT_NAMES[0]])
    was_active = runner.is_active
    runner.activate()
    try:
        for _ in range(max(0, warmup)):
            runner.infer(feed)
        samples: list[float] = []
        begin = time.perf_counter()
        while True:
            start = time.perf_counter()
            runner.infer(feed)
            samples.append(time.perf_counter() - start)
            if iterations is not None:
                if len(samples) >= iterations:
                    break
            elif len(samples) >= MIN_ITERATIONS and time.perf_counter() - begin >= min_seconds:
                break
    finally:
        if not was_active:
            runner.deactivate()
    ms = np.asarray(samples) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return LatencyStats(name or runner.name, int(batch), int(seq), len(samples), float(p50), float(p95),
                        float(p99), float(ms.mean()), float(ms.min()), float(ms.max()))


@dataclass(frozen=True)
class PassStats:
    """One timed pass over a set of windows, batched as the scorer batches them."""

    name: str
    length_bucket: int  # 0: every window padded to max_seq_length
    batch: int
    windows: int
    real_tokens: int  # input_mask ones: the work no batching can skip
    fed_positions: int  # sequence positions fed, padding inside batches included
    seconds: float  # inside infer(), summed over the pass

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.seconds if self.seconds > 0 else math.inf

    @property
    def real_tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds if self.seconds > 0 else math.inf

    @property
    def padding_fed(self) -> float:
        """The share of fed positions that are padding."""
        return 1.0 - self.real_tokens / self.fed_positions if self.fed_positions else 0.0

    def to_dict(self) -> dict:
        data = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}
        data.update(windows_per_s=round(self.windows_per_s, 2), real_tokens_per_s=round(self.real_tokens_per_s, 1),
                    padding_fed=round(self.padding_fed, 4))
        return data


def measure_pass(runner: Runner, windows, batch: int, length_bucket: int, warmup: bool = True) -> PassStats:
    """Time one pass over `windows` (Features or alike) cut by `bertbuild.squad.batching`, as scoring runs it.

    With `warmup`, one untimed call per distinct batch shape first: ONNX Runtime
    plans memory per shape, and a scoring pass pays that once, not per batch.
    """
    from bertbuild.squad.batching import plan_batches

    plan = plan_batches(windows.input_mask, batch, length_bucket)
    was_active = runner.is_active
    runner.activate()
    try:
        if warmup:
            seen = set()
            for feed in plan.feeds(windows):
                shape = feed[INPUT_NAMES[0]].shape
                if shape not in seen:
                    seen.add(shape)
                    runner.infer(feed)
        spent = 0.0
        for feed in plan.feeds(windows):
            start = time.perf_counter()
            runner.infer(feed)
            spent += time.perf_counter() - start
    finally:
        if not was_active:
            runner.deactivate()
    return PassStats(runner.name, length_bucket, batch, plan.windows,
                     int(np.count_nonzero(windows.input_mask)), plan.fed_positions, spent)


@dataclass(frozen=True)
class Timed:
    """One row of a comparison across backends: who ran the file, what it computed in, and the figures.

    `stats.name` is the file; `compute` what the runtime computed in ("int8+bf16",
    "fp32", ...), so the same file may give two rows on one backend.
    """

    backend: str
    compute: str
    stats: LatencyStats | PassStats

    @property
    def key(self) -> tuple[str, str, str]:
        return self.backend, self.stats.name, self.compute

    def to_dict(self) -> dict:
        return {"backend": self.backend, "compute_precision": self.compute, **self.stats.to_dict()}

