"""Reading and writing ONNX files whose weights are inline or in one external data file beside them.

protobuf cannot serialize a message of 2 GiB or more, so a model past that
keeps its weights in `<file name>.data` next to the .onnx file. The location
recorded in the .onnx is that bare name, so the two files move together. Every
step after the export reads and writes its files here:

- `save`, `load`, `companions` (the files one ONNX model is made of), `is_external`,
  `copy`, `files_digest`, and `external_like` (the rule for a step's output);
- `infer_shapes`, `inferred_skeleton` and `check`: shape inference and the checker at
  any size. They run on the model's *skeleton*: its structure, with each weight
  replaced by a reference to a data file that is never read. No weight is
  copied, whatever the size, and the model itself is never serialized whole;
- `export_graph`: onnx-graphsurgeon's export, which copies each weight by
  serializing it (impossible for one tensor past 2 GB), made to copy none;
- `session_source`: what to hand an ONNX Runtime session.

A file is untrusted input (it may come from a shared store): every external
data location it names must be a plain file name in the model's own folder,
and a data file may not be a symbolic link.

External data is read here, never by onnx's own reader (`load_external_data_for_model`,
`numpy_helper.to_array(..., base_dir)`, the checker given a path): that one
refuses a data file with more than one hard link, and a run directory
hard-links its files to the step cache, so the next run could not read the
cache's files. A downloaded bundle never holds links; the location rule
above is what keeps an untrusted file inside its folder.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper, helper

from bertbuild.errors import UserInputError
from bertbuild.hashing import sha256_file

# protobuf refuses a message of 2 GiB or more; the room left is for the graph itself (nodes, names).
LIMIT = 2**31 - 64 * 2**20
DATA_SUFFIX = ".data"
# Tensors at most this big stay in the .onnx file: they are shape constants that inference reads.
INLINE_BYTES = 1024
ALIGN = 4096  # data offsets on page boundaries, so ONNX Runtime can map the file instead of copying it
# From this size on, `check` checks a model in memory as its skeleton: the checker would otherwise get it
# serialized whole (two more copies of the weights). What that skips is only the check that each weight
# has exactly one value field, which every writer here guarantees.
SKELETON_CHECK_BYTES = 256 * 2**20
# Integer tensors may be shapes or indices that shape inference propagates: the skeleton keeps them.
_SHAPE_TYPES = {TensorProto.INT32, TensorProto.INT64, TensorProto.UINT64, TensorProto.UINT32}
_PLACEHOLDER = "weights.placeholder"  # where a skeleton's weights "are": a file that is never read
# ORT's session option for the folder that holds a model's external data when the model comes as bytes.
_ORT_DATA_FOLDER = "session.model_external_initializers_file_folder_path"


class NotOnnxError(UserInputError):
    """A file that does not parse as an ONNX model."""


class UnsafeLocation(UserInputError):
    """A tensor whose external data location is not a plain file name beside the model."""

    def __init__(self, path: Path, tensor: str, location: str):
        super().__init__(f"{path}: tensor {tensor!r} keeps its data at {location!r}, which is not a file name "
                         "beside the model; refusing to read it")
        self.tensor, self.location = tensor, location


def data_path(path: Path | str) -> Path:
    """Where `save` puts a model's external data: `<file name>.data` beside it."""
    path = Path(path)
    return path.with_name(path.name + DATA_SUFFIX)


# --------------------------------------------------------------------------- tensors and sizes


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


def _nbytes(tensor: TensorProto) -> int:
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
    return sum(_nbytes(tensor) for tensor in tensors(model))


def fits(model: onnx.ModelProto) -> bool:
    """Whether the model could be one protobuf message (its weights inline), with room for the graph."""
    return payload_bytes(model) < LIMIT


def _has_references(model: onnx.ModelProto) -> bool:
    return any(external_data_helper.uses_external_data(tensor) for tensor in tensors(model))


# --------------------------------------------------------------------------- the skeleton


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

    Field by field, never `ListFields`: that would hand back the weight's
    bytes, a copy of the whole payload.
    """
    stub = TensorProto(name=weight.name, data_type=weight.data_type, dims=weight.dims)
    if weight.HasField("doc_string"):
        stub.doc_string = weight.doc_string
    if weight.HasField("segment"):
        stub.segment.CopyFrom(weight.segment)
    if hasattr(weight, "metadata_props"):
        stub.metadata_props.extend(weight.metadata_props)
    _point(stub, _PLACEHOLDER, 0, length)
    return stub


def _point(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _skeleton(model: onnx.ModelProto, keep_shapes: bool
              ) -> tuple[onnx.ModelProto, list[tuple[TensorProto, TensorProto, int]]]:
    """The model with its graph's weights left out; and (weight, its stub, planned offset) for each.

    Built field by field, because copying the model and then clearing the
    weights would first copy every weight (and protobuf keeps the memory of a
    cleared field until the message is freed). Each stub keeps the weight's
    name, type and dims and points at `_PLACEHOLDER`; callers re-point it.
    Only the main graph's initializers are left out: that is where exporters
    and graphsurgeon put weights. `keep_shapes` keeps integer tensors inline.
    """
    out = onnx.ModelProto()
    _copy_fields(model, out, skip=("graph",))
    moved, offset = [], 0
    if model.HasField("graph"):
        _copy_fields(model.graph, out.graph, skip=("initializer",))
        for tensor in model.graph.initializer:
            stub = out.graph.initializer.add()
            size = _nbytes(tensor)
            weight = (tensor.HasField("raw_data") and size > INLINE_BYTES
                      and not (keep_shapes and tensor.data_type in _SHAPE_TYPES))
            if not weight:
                stub.CopyFrom(tensor)
                continue
            stub.CopyFrom(_stub(tensor, size))
            offset = _aligned(offset)
            _point(stub, _PLACEHOLDER, offset, size)
            moved.append((tensor, stub, offset))
            offset += size
    return out, moved


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its weights' bytes (integer tensors kept): for a C++ pass such as the
    version converter, which must serialize its input; `reattach` then gives the result its weights."""
    return _skeleton(model, keep_shapes=True)[0]


def reattach(converted: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """Fill the weights a skeleton left out (in `converted`, made from it) from `source`, by name."""
    weights = {tensor.name: tensor for tensor in source.graph.initializer}
    for stub in converted.graph.initializer:
        if _is_stub(stub):
            if stub.name not in weights:
                raise ValueError(f"weight {stub.name!r} of the skeleton is not in the source model")
            _fill(stub, weights[stub.name])
    return converted


def _is_stub(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL and any(
        e.key == "location" and e.value == _PLACEHOLDER for e in tensor.external_data)


def _fill(stub: TensorProto, weight: TensorProto) -> None:
    """The stub becomes `weight` under the stub's name. CopyFrom copies message to message: assigning
    `raw_data` would go through a Python bytes copy, one more transient copy of the weight."""
    name = stub.name
    stub.CopyFrom(weight)
    stub.name = name


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
        if not isinstance(weight, TensorProto) or not weight.HasField("raw_data") or _nbytes(weight) <= INLINE_BYTES:
            continue
        values.tensor = _stub(weight, _nbytes(weight))
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
    skeleton, _ = _skeleton(model, keep_shapes=True)
    return onnx.shape_inference.infer_shapes(skeleton, **options)


def infer_shapes(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """`onnx.shape_inference.infer_shapes` at any size: `model`, given the inferred value_info, is returned.

    Inference runs on the skeleton (so a model past 2 GB works, and no weight
    is copied); the types it finds are then put into `model` itself.
    """
    _transplant(inferred_skeleton(model, **options).graph, model.graph)
    return model


def check(model_or_path, full_check: bool = False) -> None:
    """`onnx.checker.check_model` at any size.

    A path is checked where it lies, with its data files. A small model in
    memory is checked as it is; a big one (`SKELETON_CHECK_BYTES`, past 2 GB
    above all) as its skeleton, written to a temporary folder beside a sparse
    data file of the right size (the checker looks at where the data is, never
    at its bytes).
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        _check_file(Path(model_or_path), full_check)
        return
    model = model_or_path
    if _has_references(model):
        raise ValueError("the model's external data is not loaded: check its file by path instead")
    if payload_bytes(model) < SKELETON_CHECK_BYTES:
        onnx.checker.check_model(model, full_check=full_check)
        return
    skeleton, moved = _skeleton(model, keep_shapes=True)  # full_check's inference reads shape constants
    with tempfile.TemporaryDirectory(prefix="bertbuild-check-") as scratch:
        data = Path(scratch) / "model.onnx.data"
        for _, stub, offset in moved:
            _point(stub, data.name, offset, _nbytes(stub))
        with open(data, "wb") as handle:
            handle.truncate(max((offset + _nbytes(stub) for _, stub, offset in moved), default=0))
        (Path(scratch) / "model.onnx").write_bytes(skeleton.SerializeToString())
        onnx.checker.check_model(str(Path(scratch) / "model.onnx"), full_check=full_check)


def _check_file(path: Path, full_check: bool) -> None:
    """The checker on a file: an external one is checked as a copy of its .onnx beside sparse stand-ins
    of its data files (onnx's checker refuses a hard-linked data file; it reads only where data is)."""
    pair = companions(path)
    if len(pair) == 1:
        onnx.checker.check_model(str(path), full_check=full_check)
        return
    with tempfile.TemporaryDirectory(prefix="bertbuild-check-") as scratch:
        shutil.copyfile(path, Path(scratch) / path.name)
        for data in pair[1:]:
            with open(Path(scratch) / data.name, "wb") as handle:
                handle.truncate(data.stat().st_size)
        onnx.checker.check_model(str(Path(scratch) / path.name), full_check=full_check)


# --------------------------------------------------------------------------- writing


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def save(model: onnx.ModelProto, path: Path | str, external_data: bool | None = None) -> list[Path]:
    """Write `model` to `path`; returns every file written, the .onnx first.

    `external_data`: True keeps the weights (tensors over 1 KiB) in
    `<file name>.data` beside `path`; False keeps them inline (an error past
    2 GB); None decides by size. A stale data file of that name is removed when
    writing inline. `model` is left as it was, its weights still in memory.
    Files appear complete or not at all (written under temporary names, then renamed).

    A model whose weights already are references (an exporter that streamed
    them to their data file) is written as it is: each file it references
    must be beside `path` already, and `external_data` must not be False.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data_path(path)
    if _has_references(model):
        if external_data is False:
            raise ValueError(f"{path}: the model's weights are external references; load them to write it inline")
        present = _present(path, _locations(model, path))
        temporary = _temporary(path)
        try:
            temporary.write_bytes(model.SerializeToString())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return [path, *present]
    size = payload_bytes(model)
    external = size >= LIMIT if external_data is None else bool(external_data)
    if not external and size >= LIMIT:
        raise UserInputError(f"{path}: the model's weights ({size / 2**30:.2f} GiB) pass protobuf's 2 GB limit; "
                             "it can only be written with external data (export.external_data: true or null)")
    skeleton, moved = _skeleton(model, keep_shapes=False) if external else (model, [])
    temporary = {path: _temporary(path), data: _temporary(data)}
    try:
        if moved:
            with open(temporary[data], "wb") as handle:
                for tensor, stub, _ in moved:
                    handle.write(b"\0" * (_aligned(handle.tell()) - handle.tell()))
                    payload = tensor.raw_data  # one tensor's bytes at a time
                    _point(stub, data.name, handle.tell(), len(payload))
                    handle.write(payload)
                    del payload
        try:
            serialized = skeleton.SerializeToString()
        except ValueError as exc:  # what is left inline (attribute tensors, nested graphs) is still too big
            raise UserInputError(f"{path}: cannot be written even with external data ({exc})") from None
        temporary[path].write_bytes(serialized)
        del serialized
        if moved:
            os.replace(temporary[data], data)
        else:
            data.unlink(missing_ok=True)  # never leave a stale companion beside a file that does not use it
        os.replace(temporary[path], path)
    finally:
        for leftover in temporary.values():
            leftover.unlink(missing_ok=True)
    return [path, data] if moved else [path]


def copy(source: Path | str, target: Path | str) -> list[Path]:
    """Copy an ONNX file and its data to `target` (data as `<target name>.data`); returns the files written.

    Only the locations in the small .onnx file are rewritten: the weights are
    copied as bytes, never loaded.
    """
    source, target = Path(source), Path(target)
    pair = companions(source)
    if source.resolve() == target.resolve():
        return pair
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(pair) == 1:
        shutil.copyfile(source, target)
        data_path(target).unlink(missing_ok=True)
        return [target]
    model = load(source, load_external_data=False)
    names = {p.name: (data_path(target).name if len(pair) == 2 else f"{target.name}.{i}{DATA_SUFFIX}")
             for i, p in enumerate(pair[1:])}
    for tensor in tensors(model):
        if external_data_helper.uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = names[entry.value]
    for old, new in names.items():
        shutil.copyfile(source.parent / old, target.parent / new)
    target.write_bytes(model.SerializeToString())
    return [target, *(target.parent / new for new in names.values())]


def unlinked(path: Path | str, folder: Path | str) -> Path:
    """`path`, or a copy of it in `folder` when one of its data files has other hard links.

    For tools that read the data with onnx's own reader (ONNX Runtime's
    quantizer), which refuses a hard-linked data file; the step cache's files
    are hard-linked into run directories.
    """
    pair = companions(path)
    if all(data.stat().st_nlink == 1 for data in pair[1:]):
        return Path(path)
    return copy(path, Path(folder) / Path(path).name)[0]


def external_like(source: Path | str, external_data: bool | None = None) -> bool | None:
    """How a step writes the file it makes from `source`: the `external_data` to hand `save`.

    A setting given (True / False) wins. Otherwise an input that is external
    although it would fit inline was written so on purpose (the config's
    `export.external_data: true`), and the output follows it; any other input
    leaves the choice to `save`'s size rule (FP16 of a 3 GB model fits inline).
    """
    if external_data is not None:
        return external_data
    pair = companions(source)
    if len(pair) > 1 and sum(p.stat().st_size for p in pair) < LIMIT:
        return True
    return None


# --------------------------------------------------------------------------- reading


def _external(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _location(tensor: TensorProto, path: Path) -> str:
    """The tensor's data file name, checked to be a plain name in the model's folder."""
    location = _external(tensor).get("location", "")
    # No folder part at all: not `../x`, `/etc/x`, `C:x`, `sub/x` (a data file is the model's sibling).
    plain = (location not in ("", ".", "..") and not any(c in location for c in "/\\:\0")
             and not os.path.isabs(location))
    if not plain:
        raise UnsafeLocation(path, tensor.name, location)
    return location


def _locations(model: onnx.ModelProto, path: Path) -> list[str]:
    """The external data files the model reads, each checked to be a plain name in its folder."""
    found = []
    for tensor in tensors(model):
        if external_data_helper.uses_external_data(tensor):
            location = _location(tensor, path)
            if location not in found:
                found.append(location)
    return found


def _data_bytes(tensor: TensorProto, path: Path) -> bytes:
    """The bytes of one external tensor of the model at `path`."""
    info = _external(tensor)
    file = _present(path, [_location(tensor, path)])[0]
    try:
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise UserInputError(f"{path}: tensor {tensor.name!r} has a malformed external data offset or length") from None
    size = file.stat().st_size
    if offset < 0 or (length is not None and length < 0) or offset + (length or 0) > size:
        raise UserInputError(f"{path}: tensor {tensor.name!r} reads past the end of {file.name} ({size} bytes)")
    with open(file, "rb") as handle:
        handle.seek(offset)
        data = handle.read(-1 if length is None else length)
    return data


def _fill_from_file(tensor: TensorProto, path: Path) -> None:
    tensor.raw_data = _data_bytes(tensor, path)
    del tensor.external_data[:]
    tensor.ClearField("data_location")  # as it was before it was saved: the model loads back byte for byte


def array(tensor: TensorProto, model_path: Path | str | None = None):
    """The tensor's values as numpy, its external data read from beside `model_path` if it has any."""
    from onnx import numpy_helper

    if not external_data_helper.uses_external_data(tensor):
        return numpy_helper.to_array(tensor)
    if model_path is None:
        raise ValueError(f"tensor {tensor.name!r} keeps its data in a file: give the model's path")
    loaded = _stub(tensor, 0)
    del loaded.external_data[:]
    loaded.ClearField("data_location")
    loaded.raw_data = _data_bytes(tensor, Path(model_path))
    return numpy_helper.to_array(loaded)


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except OSError as exc:
        raise UserInputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (DecodeError, ValueError, RuntimeError) as exc:  # not protobuf, or a truncated file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotOnnxError(f"{path}: not an ONNX model ({first})") from None


def _present(path: Path, locations: list[str]) -> list[Path]:
    files = [path.parent / name for name in locations]
    for file in files:
        if file.is_symlink():  # the name is in the folder, but a link's data may be anywhere
            raise UserInputError(f"{path}: its external data file {file.name} is a symbolic link; refusing it")
        if not file.is_file():
            raise UserInputError(f"{path}: its external data file {file.name} is missing "
                                 "(an ONNX file and its data file must stay in one folder)")
    return files


def load(path: Path | str, load_external_data: bool = True) -> onnx.ModelProto:
    """The model at `path`, with its external data read (or, with False, left as references).

    One-line UserInputError for a missing file, one that is not ONNX, a
    missing data file, or a data location outside the model's folder (the
    data files are checked to be there either way).
    """
    path = Path(path)
    model = _read(path)
    locations = _locations(model, path)
    _present(path, locations)
    if load_external_data and locations:
        for tensor in tensors(model):
            if external_data_helper.uses_external_data(tensor):
                _fill_from_file(tensor, path)
    return model


def external_locations(path: Path | str) -> list[str]:
    """The file names of the external data the model at `path` reads (checked safe, not checked present)."""
    path = Path(path)
    return _locations(_read(path), path)


def companions(path: Path | str) -> list[Path]:
    """The files the model at `path` is made of: `path`, then every external data file it reads.

    Read without loading any data. Raises the one-line errors of `load`.
    """
    path = Path(path)
    return [path, *_present(path, _locations(_read(path), path))]


def is_external(path: Path | str) -> bool:
    """Whether the ONNX file at `path` keeps (some of) its data in other files."""
    return len(companions(path)) > 1


def files_digest(path: Path | str, file_digest: Callable[[Path], str] | None = None) -> str:
    """sha256 identifying an ONNX file's content: its own sha256, or, with external data, one over every file.

    A file that is not ONNX is hashed as bytes. `file_digest` hashes one file
    (a memoizing one may be given); sha256 of the bytes by default.
    """
    file_digest = file_digest or sha256_file
    path = Path(path)
    try:
        pair = companions(path)
    except NotOnnxError:
        pair = [path]
    if len(pair) == 1:
        return file_digest(path)
    # The .onnx records only where each weight is: the data files' bytes are part of the content.
    lines = "\n".join(f"{file.name}:{file_digest(file)}" for file in pair)
    return hashlib.sha256(lines.encode()).hexdigest()


def session_source(model_or_path, options=None, base_dir: Path | str | None = None) -> str | bytes:
    """What to hand `onnxruntime.InferenceSession`.

    A path is passed as a path: ORT then finds the data files beside it. A
    model whose data is still external (loaded with `load_external_data=False`)
    is passed as bytes, `options` telling ORT the folder of its data
    (`base_dir`): the weights are never read into Python. A model in memory
    must fit in one protobuf message; save a bigger one and pass its path.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        return str(model_or_path)
    model = model_or_path
    if _has_references(model):
        if base_dir is None or options is None:
            raise ValueError("a model with external data needs the folder of its data files and session options")
        options.add_session_config_entry(_ORT_DATA_FOLDER, str(Path(base_dir).resolve()))
        return model.SerializeToString()
    if not fits(model):
        raise ValueError("the model is too big for one protobuf message: save it and pass its path")
    return model.SerializeToString()


def onnx_companions(files: dict[str, str], owners: dict[str, str] | None = None) -> dict[str, str]:
    """Bundle name -> file of every external data file the bundle's ONNX files read.

    The one place a bundle's ONNX file is expanded into the files it is made
    of. Each data file goes beside its ONNX file's bundle name, under the
    file name the .onnx records (`<bundle name>.data` for a file written by
    `save` under its bundle name), so a download leaves a pair that
    loads. A file named .onnx that is not ONNX has none; an ONNX file whose data
    is missing or points outside its folder is an error (one line). `owners`, when
    given, is filled with data file name -> the bundle name of the ONNX file reading it.
    """
    added: dict[str, str] = {}
    for name, source in sorted(files.items()):
        if not name.endswith(".onnx"):
            continue
        try:
            pair = companions(source)
        except NotOnnxError:
            continue
        folder = name.rpartition("/")[0]
        for data in pair[1:]:
            data_name = f"{folder}/{data.name}" if folder else data.name
            listed = files.get(data_name, added.get(data_name))
            if listed is not None and Path(listed).resolve() != data.resolve():
                raise UserInputError(f"bundle: {data_name} is both {listed} and the external data of {name}")
            added[data_name] = str(data)
            if owners is not None:
                owners[data_name] = name
    return added
