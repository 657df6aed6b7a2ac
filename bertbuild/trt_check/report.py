"""Readiness findings and the report that carries them."""

from __future__ import annotations

from dataclasses import dataclass, field

from bertbuild.errors import NotTensorRTReady


@dataclass(frozen=True)
class Finding:
    """One broken rule at one place: a node (`where` is its name) or a graph input or the model."""

    where: str
    op: str  # op type, or "input" / "output" / "model"
    rule: str
    message: str


@dataclass
class ReadinessReport:
    path: str
    tensorrt: str
    source: str  # the matrix citation
    nodes_checked: int
    issues: list[Finding] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.issues

    @property
    def findings(self) -> list[str]:
        """One line per offending node (or input), its broken rules joined, in graph order."""
        grouped: dict[str, list[Finding]] = {}
        for issue in self.issues:
            grouped.setdefault(issue.where, []).append(issue)
        lines = []
        for where, issues in grouped.items():
            op = issues[0].op
            place = f"{op} '{where}'" if op in ("input", "output", "model") else f"node '{where}' ({op})"
            rules = "+".join(dict.fromkeys(i.rule for i in issues))
            lines.append(f"{place}: {rules}: " + "; ".join(i.message for i in issues))
        return lines

    def summary(self) -> str:
        if self.ready:
            return f"{self.path}: ready for TensorRT {self.tensorrt} ({self.nodes_checked} nodes; {self.source})"
        return (f"{self.path}: NOT ready for TensorRT {self.tensorrt}: {len(self.findings)} offending "
                f"node(s)/input(s) ({self.source})")

    def to_json(self) -> dict:
        return {"ready": self.ready, "tensorrt": self.tensorrt, "source": self.source,
                "nodes_checked": self.nodes_checked, "findings": self.findings}

    def require_ready(self) -> "ReadinessReport":
        """Raise NotTensorRTReady (one line: the first finding and the count) unless ready."""
        if not self.ready:
            lines = self.findings
            more = f" (and {len(lines) - 1} more; run `bertbuild trt-check {self.path}`)" if len(lines) > 1 else ""
            raise NotTensorRTReady(f"{self.path} is not ready for TensorRT {self.tensorrt}: {lines[0]}{more}")
        return self

