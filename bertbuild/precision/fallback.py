"""Accuracy-driven mixed precision: hand the most sensitive INT8 nodes back to FP32, keep the fastest that passes.

Pure control logic; quantizing and judging are callables, so the loop is tested
with fakes and the flow plugs in real re-quantization and the tune-split signal
(train-half questions only, see `evaluation.tune_split`). The search is a prefix walk
down the sensitivity ranking (`step` more nodes per try, at most `max_nodes` in
total and `max_tries` tries). Every scheduled try is measured, accuracy and
latency, and the fastest passing one is kept: returning nodes to FP32 costs
speed, and a later try is not always slower, so stopping at the first pass could
keep a slower file. The tries that no other try beats on both agreement and
latency form the Pareto set the report shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from bertbuild.config.precision import FallbackConfig


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

    def pareto(self, accuracy: str, latency: str) -> list[FallbackStep]:
        """Tries no other try beats on both `accuracy` (higher is better) and `latency` (lower is better)."""
        def beaten(step: FallbackStep) -> bool:
            mine = (step.metrics[accuracy], step.metrics[latency])
            return any((o.metrics[accuracy], o.metrics[latency]) != mine and o.metrics[accuracy] >= mine[0]
                       and o.metrics[latency] <= mine[1] for o in self.steps)

        return sorted((s for s in self.steps if not beaten(s)), key=lambda s: s.metrics[latency])

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
                 passes: Callable[[dict], bool], ranking: Sequence[str], cfg: FallbackConfig,
                 latency: str = "p50_ms") -> FallbackReport:
    """Try every scheduled exclusion set; keep the fastest that passes, else the most accurate.

    `quantize(excluded)` writes an INT8 file with those nodes left in FP32 and
    returns its path; `evaluate(path)` returns metrics (with `latency`, lower is
    better); `passes` says whether those metrics clear the gate. With no
    passing try, the kept file is the one `passes`' metrics rank best by
    "score" when present, else the last (most nodes in FP32); `passed` stays False.
    """
    report = FallbackReport(ranking=list(ranking))
    for excluded in exclusion_schedule(ranking, cfg):
        path = quantize(excluded)
        metrics = evaluate(path)
        report.steps.append(FallbackStep(excluded=excluded, path=path, metrics=metrics, passed=bool(passes(metrics))))
    passing = [s for s in report.steps if s.passed]
    if passing:
        report.final_path, report.passed = min(passing, key=lambda s: s.metrics[latency]).path, True
    elif report.steps:
        report.final_path = max(report.steps, key=lambda s: s.metrics.get("score", len(s.excluded))).path
    return report
