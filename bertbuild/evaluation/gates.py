"""Accuracy and parity gates: nothing is published unless every gate passes.

Each check is a `GateResult` (name, measured, threshold, passed); `enforce`
raises `GateFailed` naming every failed gate and by how much. A gate that is
configured but has nothing to judge fails, naming what is missing: a gate
that quietly vanished would publish numbers nobody checked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bertbuild.errors import GateFailed


@dataclass(frozen=True)
class GateResult:
    engine: str
    gate: str
    measured: float | None  # None: the run measured nothing for this gate (it fails)
    threshold: float
    passed: bool
    kind: str  # "min" or "max"

    def describe(self) -> str:
        relation = ">=" if self.kind == "min" else "<="
        if self.measured is None:
            return f"{self.engine}: {self.gate} was not measured (gate {relation} {self.threshold:.4g})"
        if self.passed:
            return f"{self.engine}: {self.gate} {self.measured:.4g} {relation} {self.threshold:.4g}"
        miss = abs(self.measured - self.threshold)
        return (f"{self.engine}: {self.gate} {self.measured:.4g} fails {relation} {self.threshold:.4g} "
                f"(by {miss:.4g})")

    def to_json(self) -> dict:
        return asdict(self)


def _check(engine, gate, measured, threshold, kind) -> GateResult | None:
    """None when the gate is off; a failed result when it is on and nothing was measured."""
    if threshold is None:
        return None
    if measured is None:
        return GateResult(engine, gate, None, float(threshold), False, kind)
    passed = measured >= threshold if kind == "min" else measured <= threshold
    return GateResult(engine, gate, float(measured), float(threshold), bool(passed), kind)


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


def failures(results: list[GateResult | dict]) -> list[GateResult]:
    """The failed gates; results may also be given as `GateResult.to_json()` dicts (as tasks return them)."""
    gates = [r if isinstance(r, GateResult) else GateResult(**r) for r in results]
    return [r for r in gates if not r.passed]


def enforce(results: list[GateResult | dict], report: str | None = None) -> None:
    """Raise `GateFailed` naming every failed gate and by how much (`report`: the results file to show)."""
    failed = failures(results)
    if failed:
        raise GateFailed(f"{len(failed)} gate(s) failed: " + "; ".join(r.describe() for r in failed), report)


def without_throughput(gate):
    """The gate config less its throughput threshold: what scoring can judge before the engine is timed."""
    return gate.model_copy(update=dict(min_throughput=None))


def throughput_only(gate):
    """The gate config with only its throughput threshold: the rest were checked before timing."""
    return gate.model_copy(update=dict(min_em=None, min_f1=None, max_em_drop=None, max_f1_drop=None,
                                       min_argmax_agreement=None, require_validation=False))


def check_parity(row: dict, max_abs_logit: float) -> GateResult:
    """The FP32 export must reproduce TensorFlow's logits (the export itself is under test)."""
    return _check(row["engine"], "max_abs_dlogit_vs_tensorflow", row["max_abs_dlogit"], max_abs_logit, "max")


def finish_row(row: dict, reference: dict, gate, scored_gates: list[dict], parity: float | None,
               earlier: list[dict]) -> tuple[dict, list[dict]]:
    """A timed row's complete gate results, and the row marked PASS or FAIL.

    `scored_gates` came with the scoring, `earlier` are gates decided before it
    for this engine (the INT8 tune gate); the throughput gate needs the timing,
    and `parity` (the FP32 export only) holds the export to TensorFlow's logits.
    """
    checks = [*scored_gates, *(g.to_json() for g in check_engine(row, reference, throughput_only(gate)))]
    if parity is not None:
        checks.append(check_parity(row, parity).to_json())
    checks += [g for g in earlier if g["engine"] == row["engine"]]
    return {**row, "gates": "PASS" if all(g["passed"] for g in checks) else "FAIL"}, checks
