"""How much memory a build will need, estimated from `bert_config.json` before any work starts.

The figures are measured, not guessed: `benchmarks/scale.py` runs whole builds
of BERT-base and BERT-large shapes and prints each step's peak RSS. With the
TensorFlow reference running beside the flow, the whole run peaked at 4.56 GiB
(base, 0.41 GiB of weights) and 11.88 GiB (large, 1.24 GiB); the flow process
alone at 2.95 and 7.45 GiB. `PEAK_PER_WEIGHT_BYTE` x weights + `BASE_BYTES`
lies between the two (9.6 GB for large), and the flow now waits for the
reference on big models, so its own peak is what counts. The check refuses
only when the host clearly cannot fit the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from bertbuild.errors import NotEnoughMemory
from bertbuild.model.checkpoint import BertConfig, weight_bytes

PEAK_PER_WEIGHT_BYTE = 6.0
BASE_BYTES = int(1.5 * 2**30)
GiB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    weight_bytes: int  # FP32
    peak_bytes: int

    def describe(self) -> str:
        return (f"{self.peak_bytes / GiB:.1f} GiB ({self.parameters / 1e6:.0f}M parameters, "
                f"{self.weight_bytes / GiB:.2f} GiB of FP32 weights)")


def estimate(config: BertConfig) -> MemoryEstimate:
    weights = weight_bytes(config)
    return MemoryEstimate(weights // 4, weights, int(PEAK_PER_WEIGHT_BYTE * weights + BASE_BYTES))


def available_bytes() -> int:
    """Memory the host can give a new process now (MemAvailable, which counts reclaimable cache)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(config: BertConfig, source: str, available: int | None = None) -> MemoryEstimate:
    """Raise `NotEnoughMemory` (one line, exit 2) when the estimate exceeds what the host has available."""
    needed = estimate(config)
    available = available_bytes() if available is None else available
    if needed.peak_bytes > available:
        raise NotEnoughMemory(
            f"{source}: this build needs about {needed.describe()}, but this host has "
            f"{available / GiB:.1f} GiB available; use a host with more memory, or run anyway "
            "with --set resources.check_memory=false")
    return needed


# Up to this much FP32 weight, every engine is built and scored at once (the embedded MiniLM: 87 MiB).
# Past it, one at a time: each ONNX Runtime session holds its weights and their pre-packed GEMM copies,
# so four BERT-large sessions at once would need about 10 GB on their own.
CONCURRENT_ENGINES_UP_TO = 256 * 2**20


def side_by_side(weights: int) -> bool:
    """Whether heavy steps may run at once for a model with this many FP32 weight bytes.

    The TensorFlow reference runs in its own process beside the flow's fusion
    and INT8 steps; for BERT-large the two together peaked at 11.9 GiB
    (`benchmarks/scale.py --size large`), so past this size the flow waits for it.
    """
    return weights <= CONCURRENT_ENGINES_UP_TO


def engine_groups(precisions, concurrent: int | None, weights: int) -> list[tuple]:
    """`precisions` cut into the groups built and scored together (`engines.concurrent`; None: by model size)."""
    at_once = concurrent or (len(precisions) if side_by_side(weights) else 1)
    items = tuple(precisions)
    return [items[i:i + at_once] for i in range(0, len(items), at_once)]
