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


class _Record(_Result):
    """A result made from a step's stored record by picking its fields (the record may hold more)."""

    @classmethod
    def from_step(cls, result: dict):
        return cls(**{name: result[name] for name in cls.model_fields if name in result})


class SquadFile(_Record):
    """A featurized SQuAD subset (`squad.sets.SquadSet` saved as .npz): the questions an engine is scored on."""

    path: str
    questions: int
    windows: int
    cached: bool | None = None


class TuneSplit(SquadFile):
    """The INT8 tune split: seeded train-half questions that calibration did not read."""

    question_ids: list[str]
    seed: int


class Int8Source(_Record):
    """The FP32 file INT8 is written from, and the rewrites applied to it (empty: the fused file itself)."""

    path: str
    techniques: dict = {}
    cached: bool | None = None


class RangesFile(_Result):
    """A calibration: its activation-ranges file, and its summary, which results.json keeps."""

    path: str
    report: dict

    @classmethod
    def from_step(cls, result: dict) -> "RangesFile":
        return cls(path=result["cache_path"], report=result)


class Int8Variants(_Result):
    """The INT8 files written from one exclusion list (variant -> file), and the writer's record for results.json."""

    paths: dict[str, str]
    report: dict

    @classmethod
    def from_step(cls, result: dict) -> "Int8Variants":
        return cls(paths=result["paths"], report=result)


class Scores(_Record):
    """One pass over the run's questions: EM/F1, its rates and the files of its logits and predictions."""

    engine: str
    exact_match: float
    f1: float
    questions: int
    seconds: float
    windows_per_s: float | None = None
    real_tokens_per_s: float | None = None
    logits: str
    predictions: str
    cached: bool | None = None


class Reference(Scores):
    """The TensorFlow FP32 pass every engine is compared with, and Polygraphy's RunResults of it."""

    run_results: str


class Validation(_Record):
    """Polygraphy's comparison of an engine with the reference; `report`: its JSON file (text and log beside it)."""

    passed: bool
    argmax_agreement: float
    text: str
    report: str
    cached: bool | None = None


class Comparison(_Result):
    """Against TensorFlow by question and by logit: ΔEM/ΔF1 with 95 % intervals, the largest |Δlogit|."""

    delta: dict[str, dict]
    max_abs_dlogit: float


class Timing(_Record):
    """The engine timed alone at the benchmark shape; `path`: the full record."""

    sequences_per_s: float
    p50_ms: float
    p99_ms: float
    path: str
    cached: bool | None = None


class EngineResult(_Result):
    """All the run measured of one engine: what its row, its gates and its bundle files are made of."""

    engine: EngineRef
    scores: Scores
    validation: Validation
    comparison: Comparison
    timing: Timing
