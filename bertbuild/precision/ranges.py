"""The calibration record: activation ranges of one model on one sample set with one method.

`calibrate` (calibration.py) writes it as JSON; the flow passes that file
between its tasks (quantization, sensitivity ranking, the tune split), which
read it back with `load_calibration`.

One calibration serves both INT8 variants: symmetric S8 activations use
[-amax, amax]; U8 activations use [max(min, -amax), min(max, amax)], which keeps
the asymmetric reach of e.g. GELU outputs (>= -0.17) for the unsigned type.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class TensorRange:
    min: float
    max: float
    amax: float  # the symmetric clipping threshold the method chose

    def bounds(self, variant: str) -> tuple[float, float]:
        """s8s8: [-amax, amax]; u8s8: [max(min, -amax), min(max, amax)], widened to include 0 (zero must be exact)."""
        if variant == "s8s8":
            return -self.amax, self.amax
        return min(0.0, max(self.min, -self.amax)), max(0.0, min(self.max, self.amax))


@dataclass
class Calibration:
    """Activation ranges of one model on one sample set with one method."""

    method: str
    model_sha256: str
    samples_fingerprint: str
    max_seq_length: int
    rows: int
    question_ids: list[str]
    targets: list[dict]  # [{"node", "op_type", "activation"}]
    ranges: dict[str, TensorRange]
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    # Where the record was written (the flow's step cache entry holds it); not part of the record.
    cache_path: str | None = None

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("cache_path")
        return record

    def summary(self) -> dict:
        """Small, JSON-able: what a report needs (no per-tensor data, no question list)."""
        return {"method": self.method, "params": self.params, "rows": self.rows,
                "questions": len(self.question_ids), "tensors": len(self.ranges),
                "seconds": round(self.seconds, 2), "cache_path": self.cache_path}


def load_calibration(path: Path | str) -> Calibration:
    """A calibration written by `calibrate` (the flow passes its file between tasks)."""
    record = json.loads(Path(path).read_text())
    ranges = {name: TensorRange(**value) for name, value in record.pop("ranges").items()}
    return Calibration(**record, ranges=ranges, cache_path=str(path))
