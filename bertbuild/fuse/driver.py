"""The fusion pass registry and the driver that runs passes over a model.

A pass is a function `graph -> int` (the number of fusions it made) that
rewrites an onnx-graphsurgeon graph in place and leaves dead nodes for the
driver to remove. It registers itself with `@register_pass("name")`; the
order passes run in is the explicit `DEFAULT_ORDER`, never import order.

`run_passes` does, in order:
1. load (path or ModelProto, never mutated), convert the default-domain opset
   to 23 with onnx's version converter (the adapters, not a number edit), infer
   shapes with data propagation so passes can read ranks and head counts;
2. each enabled pass, then `cleanup().toposort()`;
3. Identity / no-op Slice removal, constant folding (`error_ok=False`: a fold
   that fails is a bug, not a warning), dead-node cleanup, toposort;
4. export, drop stale value_info, strict shape inference and
   `onnx.checker.check_model(full_check=True)`, and check that the named
   dynamic axes (`batch`, `seq`) of the inputs and outputs survived.

The version converter, shape inference and the checker run through
`bertbuild.onnx_skeleton`, on the model without its weights' bytes, so a model
past protobuf's 2 GB limit (external data) is fused like any other.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import onnx

from bertbuild import onnx_files, onnx_skeleton
from bertbuild.errors import UserInputError, ValidationError
from bertbuild.fuse.report import FusionReport, default_opset

log = logging.getLogger(__name__)

TARGET_OPSET = 23  # Attention is opset 23; Gelu 20; LayerNormalization 17.

# Explicit and ordered. LayerNorm and GELU first: they do not depend on each
# other or on attention, and attention's guards read shapes that they keep.
DEFAULT_ORDER: tuple[str, ...] = ("layernorm", "gelu", "attention")


@dataclass(frozen=True)
class FusionPass:
    name: str
    function: Callable
    summary: str


PASSES: dict[str, FusionPass] = {}


def register_pass(name: str):
    """Decorator: make `function(graph) -> int` available to `run_passes` as `name`."""

    def decorate(function):
        if name in PASSES and PASSES[name].function is not function:
            raise ValueError(f"fusion pass {name!r} registered twice")
        summary = (function.__doc__ or name).strip().splitlines()[0]
        PASSES[name] = FusionPass(name, function, summary)
        return function

    return decorate


def _load(model_or_path) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
        return model
    path = Path(model_or_path)
    if not path.is_file():
        raise UserInputError(f"ONNX model not found: {path}")
    return onnx_files.load(path)


def _io_dims(model: onnx.ModelProto) -> dict[str, list]:
    return {
        value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        for value in list(model.graph.input) + list(model.graph.output)
    }


def _import(model: onnx.ModelProto):
    """`model` (owned: it is rewritten) as the graph every pass sees."""
    import onnx_graphsurgeon as gs

    if default_opset(model) < TARGET_OPSET:
        from onnx import version_converter

        # The converter serializes its input: it gets the weightless skeleton, the weights are put back after.
        model = onnx_skeleton.reattach(version_converter.convert_version(onnx_skeleton.skeleton(model), TARGET_OPSET),
                                    model)
    del model.graph.value_info[:]
    return gs.import_onnx(onnx_skeleton.infer_shapes(model, data_prop=True))


def load_graph(model_or_path):
    """The graph every pass sees: opset 23, shapes inferred (data propagation on), as a gs.Graph."""
    return _import(_load(model_or_path))


def _finish(graph) -> onnx.ModelProto:
    graph.opset = TARGET_OPSET
    model = onnx_skeleton.export_graph(graph)
    del model.graph.value_info[:]  # stale after rewriting; re-inferred below
    model = onnx_skeleton.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    onnx_skeleton.check_model(model, full_check=True)
    return model


def run_passes(
    model_or_path, order: Iterable[str] = DEFAULT_ORDER, disabled: Iterable[str] = (),
) -> tuple[onnx.ModelProto, FusionReport]:
    """Fuse a model; returns the checked, opset-23 model and what was done."""
    from bertbuild.fuse.cleanup import remove_noops

    order, disabled = tuple(order), tuple(disabled)
    unknown = [name for name in order + disabled if name not in PASSES]
    if unknown:
        raise UserInputError(f"unknown fusion pass(es) {unknown}; known: {sorted(PASSES)}")
    begin = time.perf_counter()
    model = _load(model_or_path)
    dims_before = _io_dims(model)
    nodes_before = len(model.graph.node)
    graph = _import(model)  # `model` is ours (loaded or copied): no second copy of a 2 GB model
    del model
    counts: dict[str, int] = {}
    for name in order:
        if name in disabled:
            log.debug("fusion pass %s: disabled", name)
            continue
        counts[name] = int(PASSES[name].function(graph))
        log.debug("fusion pass %s: %d fusions", name, counts[name])
        graph.cleanup().toposort()
    removed = remove_noops(graph)
    graph.fold_constants(error_ok=False).cleanup().toposort()
    fused = _finish(graph)
    # graphsurgeon's graph is a web of cycles (tensors <-> nodes), freed only by the cycle collector:
    # collect now, or the model it was imported from (2 GB and more) stays in memory beside `fused`.
    del graph
    gc.collect()
    dims_after = _io_dims(fused)
    if dims_after != dims_before:
        raise ValidationError(f"fusion changed the model's input/output shapes: {dims_before} -> {dims_after}")
    report = FusionReport.from_model(
        fused, passes=counts, disabled=disabled, nodes_before=nodes_before, noops_removed=removed,
        seconds=time.perf_counter() - begin,
    )
    return fused, report
