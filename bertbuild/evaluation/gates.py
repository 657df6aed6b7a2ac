"""Accuracy and parity gates: nothing is published unless every gate passes.

Every gate in the project, whoever decides it (scoring, the INT8 tune split,
the timing, the regression check against the last release), is one record:
`GateResult`. The same record is returned by tasks, written to results.json,
recorded in the manifest and read back from a store (validated: a manifest
is untrusted). `enforce` raises `GateFailed` naming every failed gate and by
how much. A gate that is configured but has nothing to judge fails, naming
what is missing: a gate that quietly vanished would publish numbers nobody
checked. A gate that is deliberately not judged (the regression check on a
model's first release) says why in `skipped` and does not count.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Strict, StrictBool, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from bertbuild.errors import GateFailed, IntegrityError


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class GateResult:
    # Strict fields: a record read back from a store is untrusted, and "yes" is not a verdict.
    engine: StrictStr  # the engine judged, e.g. onnxruntime-int8 (`kinds.engine_name`)
    gate: StrictStr
    measured: Annotated[float, Strict()] | None  # None: nothing measured (a failure, unless `skipped` says why)
    threshold: Annotated[float, Strict()] | None
    passed: StrictBool
    kind: Literal["min", "max"]  # measured must be >= (min) or <= (max) the threshold
    skipped: StrictStr | None = None  # why this gate judged nothing on purpose; it then passes, not enforced
    detail: StrictStr = ""  # what was compared, e.g. "F1 81.20 vs 81.50 in <run>"

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.gate}"

    def describe(self) -> str:
        relation = ">=" if self.kind == "min" else "<="
        bound = "" if self.threshold is None else f" {relation} {self.threshold:.4g}"
        note = f" ({self.detail})" if self.detail else ""
        if self.skipped:
            return f"{self.engine}: {self.gate} skipped: {self.skipped}"
        if self.measured is None:
            return f"{self.engine}: {self.gate} was not measured (gate{bound}){note}"
        if self.passed:
            return f"{self.engine}: {self.gate} {self.measured:.4g}{bound}{note}"
        miss = "" if self.threshold is None else f" (by {abs(self.measured - self.threshold):.4g})"
        return f"{self.engine}: {self.gate} {self.measured:.4g} fails{bound}{miss}{note}"

    def to_json(self) -> dict:
        return _ADAPTER.dump_python(self, mode="json")

    @classmethod
    def from_json(cls, data: object) -> "GateResult":
        """A gate record read back from a file or a store (untrusted): the same fields and types, or IntegrityError."""
        if isinstance(data, GateResult):
            return data
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "record"
            raise IntegrityError(f"not a gate record: {where}: {problem['msg']}") from None


_ADAPTER = TypeAdapter(GateResult)


def skipped(engine: str, gate: str, threshold: float | None, kind: str, why: str) -> GateResult:
    """A gate that judges nothing on purpose (and says why): it passes and is not enforced."""
    return GateResult(engine, gate, None, threshold, True, kind, skipped=why)


def judge(engine: str, gate: str, measured: float | None, threshold: float, kind: str, detail: str = "") -> GateResult:
    """`measured` held to `threshold` (kind "min": at least, "max": at most); nothing measured fails."""
    if measured is None:
        return GateResult(engine, gate, None, float(threshold), False, kind, detail=detail)
    passed = measured >= threshold if kind == "min" else measured <= threshold
    return GateResult(engine, gate, float(measured), float(threshold), bool(passed), kind, detail=detail)


def _check(engine, gate, measured, threshold, kind) -> GateResult | None:
    """None when the gate is off (no threshold), else its result."""
    return None if threshold is None else judge(engine, gate, measured, threshold, kind)


def check_engine(row: dict, reference: dict, gates) -> list[GateResult]:
    """Gate one engine's results row against the FP32 reference row.

    `gates` has min_em, min_f1, max_em_drop, max_f1_drop, min_argmax_agreement,
    min_throughput and validation (whether Polygraphy's comparison must pass);
    None disables a gate.
    """
    engine = row["engine"]
    interval = getattr(gates, "drop_judged_on", "point") == "interval" and "delta" in row
    suffix = "_upper95" if interval else ""

    def drop(key: str) -> float:  # positive = worse than the reference
        if interval:  # the worst drop the 95 % interval allows
            return -row["delta"][key]["low"]
        return reference[key] - row[key]

    checks = [
        _check(engine, "exact_match", row["exact_match"], gates.min_em, "min"),
        _check(engine, "f1", row["f1"], gates.min_f1, "min"),
        _check(engine, "em_drop_vs_fp32" + suffix, drop("exact_match"), gates.max_em_drop, "max"),
        _check(engine, "f1_drop_vs_fp32" + suffix, drop("f1"), gates.max_f1_drop, "max"),
        _check(engine, "argmax_agreement", row.get("argmax_agreement"), gates.min_argmax_agreement, "min"),
        _check(engine, "throughput_seq_per_s", row.get("seq_per_s"), gates.min_throughput, "min"),
    ]
    if gates.require_validation:
        validated = row.get("validation_passed")
        checks.append(_check(engine, "polygraphy_parity", None if validated is None else float(validated), 1.0, "min"))
    return [c for c in checks if c is not None]


def failures(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


def enforce(results: list[GateResult], report: str | None = None) -> None:
    """Raise `GateFailed` naming every failed gate and by how much (`report`: the results file to show)."""
    failed = failures(results)
    if failed:
        raise GateFailed(f"{len(failed)} gate(s) failed: " + "; ".join(r.describe() for r in failed), report)


def check_parity(row: dict, max_abs_logit: float) -> GateResult:
    """The FP32 export must reproduce TensorFlow's logits (the export itself is under test)."""
    return judge(row["engine"], "max_abs_dlogit_vs_tensorflow", row["max_abs_dlogit"], max_abs_logit, "max")


def parity_limit(precision: str, max_abs_logit: float | None) -> float | None:
    """The logit-parity threshold an engine of `precision` is held to: the plain FP32 export only.

    That file is the export under test, so it must reproduce TensorFlow's logits;
    fusion, FP16 and INT8 change the arithmetic on purpose and are judged on
    their answers (EM/F1, argmax agreement, Polygraphy's tolerances) instead.
    """
    from bertbuild.kinds import Precision

    return max_abs_logit if precision == Precision.FP32 else None


def engine_gates(row: dict, reference: dict, gate, parity: float | None,
                 earlier: list[GateResult]) -> list[GateResult]:
    """Every gate of one scored, validated and timed engine.

    `gate` is its precision's GateConfig, `parity` its `parity_limit`, and
    `earlier` the gates decided before scoring (the INT8 tune gate): those of
    this engine are added.
    """
    checks = check_engine(row, reference, gate)
    if parity is not None:
        checks.append(check_parity(row, parity))
    return checks + [g for g in earlier if g.engine == row["engine"]]
