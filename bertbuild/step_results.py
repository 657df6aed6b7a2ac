"""What the build's tasks hand each other: small frozen models, read by field, never by string key.

A leaf (pydantic only), so the flow, the bundle layout and the Triton
repository can all read them. Each is made from a cached step's stored result
(`from_step`), so an entry written before a field existed still reads; the
step's full record stays in `report` for results.json.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OnnxFile(_Result):
    """An ONNX file a step wrote (its external data file, if any, lies beside it) and the step's report."""

    path: str
    precision: str
    report: dict = {}  # what the step says of it: the export's node count, the fusion or FP16 report ...
    cached: bool | None = None

    @classmethod
    def from_step(cls, precision: str, result: dict, report: str | None = None) -> "OnnxFile":
        """`result`: a step's stored result with "path"; `report`: the key holding its report (else the rest)."""
        rest = {k: v for k, v in result.items() if k not in ("path", "cached")}
        return cls(path=result["path"], precision=str(precision), report=rest[report] if report else rest,
                   cached=result.get("cached"))

    def as_report(self) -> dict:
        """The record results.json keeps of it: the report with its path and whether it came from the cache."""
        return {"path": self.path, **self.report, "cached": self.cached}


class EngineRef(_Result):
    """A built engine: its file (and OpenVINO's weights beside it), what it was built from, what it computes in."""

    path: str
    backend: str
    precision: str
    onnx: str
    metadata: str
    compute_precision: str
    weights: str | None = None
    cached: bool | None = None

    @property
    def files(self) -> list[str]:
        """Every file the engine is made of, for step keys and the bundle."""
        return [self.path, *([self.weights] if self.weights else [])]

    def as_mapping(self) -> dict:
        """The engine as the Triton repository and results.json read it (`serving.repository`)."""
        return self.model_dump(exclude_none=True)
