"""onnx's C++ passes (shape inference, the checker, the version converter) and graphsurgeon's export at any size.

Each of them serializes the model it is given: impossible past protobuf's 2 GiB
limit, and below it two more copies of every weight. Here they run on the
model's *skeleton*: its structure, each weight replaced by a stub (name, type,
dims) whose data "is" in a file that is never read. No weight is copied and
the model itself is never serialized whole. `bertbuild.onnx_files.save` writes
external data from the same skeleton.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Iterator

import onnx
from onnx import TensorProto, external_data_helper, helper

# Tensors at most this big stay in the .onnx file: they are shape constants that inference reads.
INLINE_BYTES = 1024
ALIGN = 4096  # data offsets on page boundaries, so ONNX Runtime can map the file instead of copying it
# From this size on, `check_model` checks the skeleton: the checker would otherwise get the model
# serialized whole. That skips only the check that each weight has exactly one value field, which
# every writer here guarantees.
SKELETON_CHECK_BYTES = 256 * 2**20
# Integer tensors may be shapes or indices that shape inference propagates: the skeleton keeps them.
_SHAPE_TYPES = {TensorProto.INT32, TensorProto.INT64, TensorProto.UINT64, TensorProto.UINT32}
_PLACEHOLDER = "weights.placeholder"  # where a skeleton's weights "are": a file that is never read


def _node_tensors(nodes) -> Iterator[TensorProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in [*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []), *attr.sparse_tensors]:
                yield from (sparse.values, sparse.indices)
            for graph in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
                yield from _graph_tensors(graph)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    yield from _node_tensors(graph.node)


def tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor stored in the model: initializers, attribute tensors, nested graphs and functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def nbytes(tensor: TensorProto) -> int:
    """The tensor's payload size from its dims and type: reading `raw_data` would copy the bytes."""
    if tensor.data_type == TensorProto.STRING:
        return sum(len(s) for s in tensor.string_data)
    count = math.prod(tensor.dims)
    if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4, getattr(TensorProto, "FLOAT4E2M1", -1)):
        return (count + 1) // 2  # two per byte
    try:
        return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return count * 8


def payload_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every tensor's data, wherever it is stored (inline or external)."""
    return sum(nbytes(tensor) for tensor in tensors(model))


def has_references(model: onnx.ModelProto) -> bool:
    """Whether some tensor's data is still in a file (not loaded)."""
    return any(external_data_helper.uses_external_data(tensor) for tensor in tensors(model))


def point(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    """Make `tensor` say its data is at `location`, `offset`, `length`."""
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _copy_fields(source, target, skip: tuple[str, ...] = ()) -> None:
    """Copy every set field of one protobuf message into another, but those named in `skip`."""
    for field, value in source.ListFields():
        if field.name in skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _stub(weight: TensorProto, length: int) -> TensorProto:
    """A tensor like `weight` (name, type, dims) whose data "is" at `_PLACEHOLDER`.

    Field by field, never `ListFields`: that would hand back the weight's bytes.
    """
    stub = TensorProto(name=weight.name, data_type=weight.data_type, dims=weight.dims)
    if weight.HasField("doc_string"):
        stub.doc_string = weight.doc_string
    if weight.HasField("segment"):
        stub.segment.CopyFrom(weight.segment)
    if hasattr(weight, "metadata_props"):
        stub.metadata_props.extend(weight.metadata_props)
    point(stub, _PLACEHOLDER, 0, length)
    return stub


def split(model: onnx.ModelProto, keep_shapes: bool
          ) -> tuple[onnx.ModelProto, list[tuple[TensorProto, TensorProto, int]]]:
    """The model with its graph's weights left out; and (weight, its stub, planned offset) for each.

    Built field by field: copying the model and then clearing the weights
    would first copy every weight (and protobuf keeps a cleared field's memory
    until the message is freed). Only the main graph's initializers over
    `INLINE_BYTES` are left out: that is where exporters and graphsurgeon put
    weights. `keep_shapes` keeps integer tensors inline. Callers re-point the stubs.
    """
    out = onnx.ModelProto()
    _copy_fields(model, out, skip=("graph",))
    moved, offset = [], 0
    if model.HasField("graph"):
        _copy_fields(model.graph, out.graph, skip=("initializer",))
        for tensor in model.graph.initializer:
            stub = out.graph.initializer.add()
            size = nbytes(tensor)
            if not (tensor.HasField("raw_data") and size > INLINE_BYTES
                    and not (keep_shapes and tensor.data_type in _SHAPE_TYPES)):
                stub.CopyFrom(tensor)
                continue
            stub.CopyFrom(_stub(tensor, size))
            offset = aligned(offset)
            point(stub, _PLACEHOLDER, offset, size)
            moved.append((tensor, stub, offset))
            offset += size
    return out, moved


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its weights' bytes (integer tensors kept): for a C++ pass such as the
    version converter, which must serialize its input; `reattach` then gives the result its weights."""
    return split(model, keep_shapes=True)[0]


def _is_stub(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == _PLACEHOLDER for e in tensor.external_data)


def _fill(stub: TensorProto, weight: TensorProto) -> None:
    """The stub becomes `weight` under the stub's name. CopyFrom copies message to message: assigning
    `raw_data` would go through a Python bytes copy, one more transient copy of the weight."""
    name = stub.name
    stub.CopyFrom(weight)
    stub.name = name


def reattach(converted: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """Fill the weights a skeleton left out (in `converted`, made from it) from `source`, by name."""
    weights = {tensor.name: tensor for tensor in source.graph.initializer}
    for stub in converted.graph.initializer:
        if _is_stub(stub):
            if stub.name not in weights:
                raise ValueError(f"weight {stub.name!r} of the skeleton is not in the source model")
            _fill(stub, weights[stub.name])
    return converted


def export_graph(graph, **options) -> onnx.ModelProto:
    """`onnx_graphsurgeon.export_onnx(graph, **options)`, without copying the weights through protobuf.

    graphsurgeon hands each initializer to `GraphProto.initializer.extend`,
    which copies it by serializing it: one tensor past 2 GB cannot be, and
    below that it is a transient third copy. The big weights it would export
    as they were imported are swapped for stubs while it runs, and copied
    into the exported model afterwards, message to message.
    """
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.ir.tensor import LazyValues

    swapped: list[tuple[LazyValues, TensorProto]] = []
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)
        if not isinstance(tensor, gs.Constant) or not isinstance(values, LazyValues):
            continue
        weight = values.tensor
        if not isinstance(weight, TensorProto) or not weight.HasField("raw_data") or nbytes(weight) <= INLINE_BYTES:
            continue
        values.tensor = _stub(weight, nbytes(weight))
        swapped.append((values, weight))
    try:
        model = gs.export_onnx(graph, **options)
    finally:
        weights = {}
        for values, weight in swapped:
            weights[values.tensor.name] = weight  # the name the export gave it
            values.tensor = weight
    for stub in model.graph.initializer:
        if _is_stub(stub):
            _fill(stub, weights[stub.name])
    return model


def _transplant(inferred: onnx.GraphProto, graph: onnx.GraphProto) -> None:
    """Give `graph` the types and shapes inference found for its skeleton (same nodes, same order)."""
    del graph.value_info[:]
    graph.value_info.extend(inferred.value_info)
    for mine, theirs in [*zip(graph.input, inferred.input), *zip(graph.output, inferred.output)]:
        mine.CopyFrom(theirs)
    for node, twin in zip(graph.node, inferred.node):
        for attr, twin_attr in zip(node.attribute, twin.attribute):
            if attr.HasField("g"):
                _transplant(twin_attr.g, attr.g)
            for sub, twin_sub in zip(attr.graphs, twin_attr.graphs):
                _transplant(twin_sub, sub)


def inferred_skeleton(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """A shape-inferred copy of the model without its weights' bytes: read its types and shapes, not its data.

    `options` are those of `onnx.shape_inference.infer_shapes`. `model` is not changed.
    """
    return onnx.shape_inference.infer_shapes(skeleton(model), **options)


def infer_shapes(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """`onnx.shape_inference.infer_shapes` at any size: `model`, given the inferred value_info, is returned."""
    _transplant(inferred_skeleton(model, **options).graph, model.graph)
    return model


def check_model(model: onnx.ModelProto, full_check: bool = False) -> None:
    """`onnx.checker.check_model` on a model in memory, at any size.

    A small model is checked as it is; a big one (`SKELETON_CHECK_BYTES`, past
    2 GB above all) as its skeleton, written to a temporary folder beside a
    sparse data file of the right size (the checker looks at where the data
    is, never at its bytes).
    """
    if has_references(model):
        raise ValueError("the model's external data is not loaded: check its file by path instead")
    if payload_bytes(model) < SKELETON_CHECK_BYTES:
        onnx.checker.check_model(model, full_check=full_check)
        return
    bare, moved = split(model, keep_shapes=True)  # full_check's inference reads shape constants
    with tempfile.TemporaryDirectory(prefix="bertbuild-check-") as scratch:
        data = Path(scratch) / "model.onnx.data"
        for _, stub, offset in moved:
            point(stub, data.name, offset, nbytes(stub))
        with open(data, "wb") as handle:
            handle.truncate(max((offset + nbytes(stub) for _, stub, offset in moved), default=0))
        (Path(scratch) / "model.onnx").write_bytes(bare.SerializeToString())
        onnx.checker.check_model(str(Path(scratch) / "model.onnx"), full_check=full_check)
