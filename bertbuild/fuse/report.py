"""What a fusion run did, and the count check that makes a partial fusion fail loudly.

A BERT encoder with N layers has exactly N self-attention blocks, N GELUs and
2N+1 LayerNorms (one after the embedding sum, two per layer after the
residual adds). A fused graph with other counts means the export changed
shape (a new tf2onnx rewrite, a different TF op choice), and an engine built
from it would silently fall back to unfused kernels: that is an error, not a
degraded mode.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from bertbuild import onnx_files
from bertbuild.errors import ValidationError


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@dataclass(frozen=True)
class FusionReport:
    """Counts per pass (fusions made) and per op type (in the final graph); JSON-able."""

    passes: dict[str, int]
    op_types: dict[str, int]
    opset: int
    nodes_before: int
    nodes_after: int
    attention_masks: int  # distinct mask tensors feeding Attention nodes; 1 = shared
    disabled: tuple[str, ...] = ()
    noops_removed: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: onnx.ModelProto, **fields) -> "FusionReport":
        nodes = model.graph.node
        masks = {n.input[3] for n in nodes if n.op_type == "Attention" and len(n.input) > 3 and n.input[3]}
        op_types = dict(sorted(Counter(n.op_type for n in nodes).items()))
        return cls(op_types=op_types, opset=default_opset(model), nodes_after=len(nodes), attention_masks=len(masks),
                   **fields)

    def count(self, op_type: str) -> int:
        return self.op_types.get(op_type, 0)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["disabled"] = list(self.disabled)
        data["seconds"] = round(self.seconds, 2)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def check_fusion_counts(report_or_model, num_layers: int) -> dict[str, int]:
    """Raise ValidationError unless the graph has N Attention, 2N+1 LayerNormalization, N Gelu.

    Accepts a FusionReport, an onnx.ModelProto or a path to an .onnx file.
    Also requires every Attention node to read the same (once-computed) mask.
    Returns the expected counts.
    """
    report = report_or_model
    if not isinstance(report, FusionReport):
        # The structure is all the counts need: an external file's weights are not read.
        model = report if isinstance(report, onnx.ModelProto) else onnx_files.load(Path(report),
                                                                                    load_external_data=False)
        report = FusionReport.from_model(model, passes={}, nodes_before=0)
    expected = {"Attention": num_layers, "LayerNormalization": 2 * num_layers + 1, "Gelu": num_layers}
    found = {op: report.count(op) for op in expected}
    if found != expected:
        want = ", ".join(f"{n} {op}" for op, n in expected.items())
        got = ", ".join(f"{n} {op}" for op, n in found.items())
        raise ValidationError(
            f"fused graph for {num_layers} layer(s): expected {want}; found {got} "
            f"(the export's shape changed, fusion is not optional)"
        )
    if num_layers and report.attention_masks != 1:
        raise ValidationError(
            f"fused graph: expected 1 attention mask shared by all {num_layers} layers, "
            f"found {report.attention_masks}"
        )
    return expected
