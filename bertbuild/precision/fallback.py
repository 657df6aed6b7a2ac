"""Accuracy-driven mixed precision: hand the most sensitive INT8 nodes back to FP32 until the gate passes.

Pure control logic; quantizing and scoring are callables, so the loop is tested
with fakes and the flow plugs in real re-quantization and SQuAD scoring. The
search is a plain prefix walk down the sensitivity ranking (`step` more nodes
per round, at most `max_nodes` in total and `max_tries` rounds): each round
costs a full engine build and evaluation, so a bisection over subsets would
not pay for itself with so few rounds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from bertbuild.precision.config import FallbackConfig


@dataclass
class FallbackStep:
    excluded: list[str]
    path: str
    metrics: dict
    passed: bool


@dataclass
class FallbackReport:
    ranking: list[str]
    steps: list[FallbackStep] = field(default_factory=list)
    final_path: str | None = None
    passed: bool = False

    @property
    def final_excluded(self) -> list[str]:
        return next((s.excluded for s in self.steps if s.path == self.final_path), [])

    def to_json(self) -> dict:
        return {"ranking": self.ranking, "steps": [asdict(s) for s in self.steps],
                "final_path": self.final_path, "final_excluded": self.final_excluded, "passed": self.passed}


def exclusion_schedule(ranking: Sequence[str], cfg: FallbackConfig) -> list[list[str]]:
    """The node sets tried, in order: the top `step`, top 2*`step`, ... of the ranking.

    At least one node always stays INT8: a file with none left is FP32, not INT8.
    """
    limit = min(cfg.max_nodes, len(ranking) - 1)
    schedule = []
    size = cfg.step
    while len(schedule) < cfg.max_tries and limit > 0:
        schedule.append(list(ranking[:min(size, limit)]))
        if size >= limit:
            break
        size += cfg.step
    return schedule


def run_fallback(quantize: Callable[[list[str]], str], evaluate: Callable[[str], dict],
                 passes: Callable[[dict], bool], ranking: Sequence[str], cfg: FallbackConfig) -> FallbackReport:
    """Try each exclusion set; stop at the first that passes, else keep the best F1 seen.

    `quantize(excluded)` writes an INT8 file with those nodes left in FP32 and
    returns its path; `evaluate(path)` returns metrics (with "f1"); `passes`
    says whether those metrics clear the gate.
    """
    report = FallbackReport(ranking=list(ranking))
    for excluded in exclusion_schedule(ranking, cfg):
        path = quantize(excluded)
        metrics = evaluate(path)
        step = FallbackStep(excluded=excluded, path=path, metrics=metrics, passed=bool(passes(metrics)))
        report.steps.append(step)
        if step.passed:
            report.final_path, report.passed = path, True
            return report
    if report.steps:
        report.final_path = max(report.steps, key=lambda s: s.metrics.get("f1", float("-inf"))).path
    return report
