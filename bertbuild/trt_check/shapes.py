"""Dynamic-axes rule: every dynamic input axis is named, and the profiles can give it shapes.

TensorRT builds one shape range per profile from `engines.profiles`, each a
(batch, seq) range for every model input (`model.signature.INPUT_NAMES`). So
the model must have exactly those dynamic inputs, rank 2, batch first; a fixed
axis must be pinned to one value by every profile; and a dynamic axis without a
name cannot be told apart from another when shapes are bound.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from bertbuild.shapes import describe
from bertbuild.model.signature import INPUT_NAMES
from bertbuild.trt_check.graph import GraphView
from bertbuild.trt_check.report import Finding

AXES = ("batch", "seq")


def _axis_problems(dims, profiles: Sequence) -> list[str]:
    if dims is None or len(dims) != len(AXES):
        return [f"rank {len(dims) if dims is not None else 'unknown'}, but profiles give (batch, seq) shapes"]
    problems = []
    for axis, (label, dim) in enumerate(zip(AXES, dims)):
        if dim is None:
            problems.append(f"{label} axis is dynamic but unnamed")
        elif isinstance(dim, int):
            spans = [p for p in profiles if not p.min[axis] == p.max[axis] == dim]
            if spans:
                problems.append(f"{label} axis is fixed at {dim} but profile(s) {describe(spans)} vary it")
    return problems


def check_dynamic_axes(view: GraphView, profiles: Sequence) -> Iterator[Finding]:
    inputs = {value.name: view.info(value.name).dims for value in view.graph_inputs}
    missing = [name for name in INPUT_NAMES if name not in inputs]
    if missing:
        yield Finding("inputs", "model", "profiles",
                      f"the profiles bind {', '.join(missing)}, which the model does not have")
    axis_names: dict[str, set[str]] = {}
    for name, dims in inputs.items():
        if name not in INPUT_NAMES:
            if dims is None or any(not isinstance(d, int) for d in dims):
                yield Finding(name, "input", "profiles", "dynamic, but no profile gives it shapes")
            continue
        problems = _axis_problems(dims, profiles)
        if problems:
            yield Finding(name, "input", "profiles", "; ".join(problems))
        elif dims is not None:
            for label, dim in zip(AXES, dims):
                if isinstance(dim, str):
                    axis_names.setdefault(dim, set()).add(label)
    for dim, labels in axis_names.items():
        if len(labels) > 1:
            yield Finding(dim, "model", "profiles",
                          f"dynamic axis '{dim}' is both the batch and the seq axis; profiles give them different sizes")
