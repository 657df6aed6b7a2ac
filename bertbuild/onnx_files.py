"""ONNX files whose weights are inline or in external data files beside them: reading, writing, the files of a pair.

protobuf cannot serialize a message of 2 GiB or more, so a model past that keeps its weights in `<file name>.data`
beside the .onnx file, which records that bare name: the two files move together.

External data is read by onnx's own reader, which refuses a data file that is a symbolic link, lies outside
the model's folder or has more than one hard link (`resolve_external_data_location` in onnx's checker.cc).
Run directories therefore hold copies of ONNX pairs, not hard links (`bertbuild.runs.materialize`); a pair
hard-linked by hand is read through a private copy (`unlinked`). A file is untrusted input (it may come from a
shared store): before onnx reads anything, every location must be a plain file name in the model's folder
(onnx accepts `sub/x`) and no data file a symbolic link, each refused in one line. `save` is not
`onnx.save_model`, which empties the caller's model, appends to a stale data file, writes in place and does
not align offsets; it writes from the model's skeleton (`bertbuild.onnx_skeleton`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, external_data_helper, numpy_helper

from bertbuild.errors import UserInputError
from bertbuild.hashing import sha256_file
from bertbuild.onnx_skeleton import aligned, has_references, payload_bytes, point, split, tensors

# protobuf refuses a message of 2 GiB or more; the room left is for the graph itself (nodes, names).
LIMIT = 2**31 - 64 * 2**20
DATA_SUFFIX = ".data"


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
    return Path(path).with_name(Path(path).name + DATA_SUFFIX)


def fits(model: onnx.ModelProto) -> bool:
    """Whether the model could be one protobuf message (its weights inline), with room for the graph."""
    return payload_bytes(model) < LIMIT


def _location(tensor: TensorProto, path: Path) -> str:
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    # No folder part at all: not `../x`, `/etc/x`, `C:x`, `sub/x` (a data file is the model's sibling).
    if location in ("", ".", "..") or any(c in location for c in "/\\:\0") or os.path.isabs(location):
        raise UnsafeLocation(path, tensor.name, location)
    return location


def _locations(model: onnx.ModelProto, path: Path) -> list[str]:
    return list(dict.fromkeys(_location(t, path) for t in tensors(model) if external_data_helper.uses_external_data(t)))


def _present(path: Path, locations: list[str]) -> list[Path]:
    files = [path.parent / name for name in locations]
    for file in files:
        if file.is_symlink():  # the name is in the folder, but a link's data may be anywhere
            raise UserInputError(f"{path}: its external data file {file.name} is a symbolic link; refusing it")
        if not file.is_file():
            raise UserInputError(f"{path}: its external data file {file.name} is missing "
                                 "(an ONNX file and its data file must stay in one folder)")
    return files


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


@lru_cache(maxsize=256)
def _stored_locations(path: str, size: int, mtime_ns: int) -> tuple[str, ...]:
    return tuple(_locations(_read(Path(path)), Path(path)))


def external_locations(path: Path | str) -> list[str]:
    """The file names of the external data the model at `path` reads (checked safe, not checked present).
    The .onnx is parsed once per size and mtime: the step cache's keys, the bundle's companions and the run
    directory's layout all ask about the same files, and an inline BERT-large file is 1.3 GB of protobuf."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    info = path.stat()
    return list(_stored_locations(str(path.resolve()), info.st_size, info.st_mtime_ns))


def companions(path: Path | str) -> list[Path]:
    """`path`, then every external data file it reads, checked present on every call (the errors of `load`)."""
    return [Path(path), *_present(Path(path), external_locations(path))]


def is_external(path: Path | str) -> bool:
    """Whether the ONNX file at `path` keeps (some of) its data in other files."""
    return len(companions(path)) > 1


@contextmanager
def unlinked(pair: list[Path]) -> Iterator[Path]:
    """The .onnx of `pair` (`companions`) where onnx's reader accepts it: in place, or, when a data file has
    other hard links (onnx refuses those), in a private copy."""
    if all(data.stat().st_nlink == 1 for data in pair[1:]):
        yield pair[0]
        return
    with tempfile.TemporaryDirectory(prefix="bertbuild-unlinked-") as scratch:
        for file in pair:
            shutil.copyfile(file, Path(scratch) / file.name)
        yield Path(scratch) / pair[0].name


def _with_onnx(pair: list[Path], read: Callable[[Path], object]):
    """`read(the .onnx)` of `unlinked(pair)`; what onnx's reader raises on truncated data, a bad offset or length
    is made a one-line UserInputError."""
    try:
        with unlinked(pair) as onnx_file:
            return read(onnx_file)
    except (ValueError, OSError, onnx.checker.ValidationError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{pair[0]}: its external data cannot be read ({first})") from None


def load(path: Path | str, load_external_data: bool = True) -> onnx.ModelProto:
    """The model at `path`, with its external data read (or, with False, left as references). One-line
    UserInputError for a missing file, one not ONNX, a data file missing, linked or outside the folder."""
    path = Path(path)
    model = _read(path)
    pair = [path, *_present(path, _locations(model, path))]
    if load_external_data and len(pair) > 1:
        external = [t for t in tensors(model) if external_data_helper.uses_external_data(t)]
        _with_onnx(pair, lambda file: external_data_helper.load_external_data_for_model(model, str(file.parent)))
        for tensor in external:
            tensor.ClearField("data_location")  # as before it was saved: the model loads back byte for byte
    return model


def array(tensor: TensorProto, model_path: Path | str):
    """The tensor's values as numpy, its external data read from beside `model_path` if it has any."""
    if not external_data_helper.uses_external_data(tensor):
        return numpy_helper.to_array(tensor)
    path = Path(model_path)
    pair = [path, *_present(path, [_location(tensor, path)])]
    return _with_onnx(pair, lambda onnx_file: numpy_helper.to_array(tensor, str(onnx_file.parent)))


def check(path: Path | str, full_check: bool = False) -> None:
    """`onnx.checker.check_model` on the file at `path` where it lies, with its data files (the checker only looks
    at where the data is); a model in memory: `onnx_skeleton.check_model`."""
    with unlinked(companions(path)) as onnx_file:
        onnx.checker.check_model(str(onnx_file), full_check)


def _write(path: Path, data: bytes) -> None:
    """Write `path` complete or not at all: under a temporary name, then renamed."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save(model: onnx.ModelProto, path: Path | str, external_data: bool | None = None) -> list[Path]:
    """Write `model` to `path`, complete or not at all; returns every file written, the .onnx first.

    `external_data`: True keeps the weights (tensors over 1 KiB) in `<file name>.data` beside `path`, at
    page-aligned offsets; False keeps them inline (an error past 2 GB), removing a stale data file of that name;
    None decides by size (`fits`). `model` is left as it was. A model whose weights already are references (an
    exporter streamed them to their data file, which must be beside `path`) is written as it is, never inline.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = data_path(path)
    if has_references(model):
        if external_data is False:
            raise ValueError(f"{path}: the model's weights are external references; load them to write it inline")
        written = [path, *_present(path, _locations(model, path))]
        _write(path, model.SerializeToString())
        return written
    external = not fits(model) if external_data is None else bool(external_data)
    if not external and not fits(model):
        raise UserInputError(f"{path}: the model's weights ({payload_bytes(model) / 2**30:.2f} GiB) pass "
                             "protobuf's 2 GB limit; it can only be written with external data "
                             "(export.external_data: true or null)")
    bare, moved = split(model, keep_shapes=False) if external else (model, [])
    temporary = data.with_name(f".{data.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if moved:
            with open(temporary, "wb") as handle:
                for tensor, stub, _ in moved:
                    handle.write(b"\0" * (aligned(handle.tell()) - handle.tell()))
                    payload = tensor.raw_data  # one tensor's bytes at a time
                    point(stub, data.name, handle.tell(), len(payload))
                    handle.write(payload)
                    del payload
        try:
            serialized = bare.SerializeToString()
        except ValueError as exc:  # what is left inline (attribute tensors, nested graphs) is still too big
            raise UserInputError(f"{path}: cannot be written even with external data ({exc})") from None
        if moved:
            os.replace(temporary, data)
        else:
            data.unlink(missing_ok=True)  # never leave a stale companion beside a file that does not use it
        _write(path, serialized)
    finally:
        temporary.unlink(missing_ok=True)
    return [path, data] if moved else [path]


def copy(source: Path | str, target: Path | str) -> list[Path]:
    """Copy an ONNX file and its data to `target` (data as `<target name>.data`); returns the files written.
    Only the locations in the .onnx are rewritten: the weights are copied as bytes, never loaded."""
    source, target = Path(source), Path(target)
    pair = companions(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(pair) == 1:
        shutil.copyfile(source, target)
        data_path(target).unlink(missing_ok=True)
        return [target]
    model = _read(source)
    names = {p.name: (data_path(target).name if len(pair) == 2 else f"{target.name}.{i}{DATA_SUFFIX}")
             for i, p in enumerate(pair[1:])}
    for tensor in tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location" and external_data_helper.uses_external_data(tensor):
                entry.value = names[entry.value]
    for old, new in names.items():
        shutil.copyfile(source.parent / old, target.parent / new)
    return save(model, target)  # its weights are references to the copies: written as it is


def external_like(source: Path | str, external_data: bool | None = None) -> bool | None:
    """The `external_data` to hand `save` for a file made from `source`: a setting given wins. An input external
    although it would fit inline was so by choice (`export.external_data: true`) and the output follows it; any
    other leaves the choice to `save`'s size rule (FP16 of a 3 GB model fits inline)."""
    if external_data is not None:
        return external_data
    pair = companions(source)
    return True if len(pair) > 1 and sum(p.stat().st_size for p in pair) < LIMIT else None


def files_digest(path: Path | str, file_digest: Callable[[Path], str] = sha256_file) -> str:
    """sha256 identifying an ONNX file's content: its own sha256, or, with external data, one over every file
    (a file that is not ONNX: its bytes). `file_digest` hashes one file."""
    try:
        pair = companions(path)
    except NotOnnxError:
        pair = [Path(path)]
    if len(pair) == 1:
        return file_digest(pair[0])
    # The .onnx records only where each weight is: the data files' bytes are part of the content.
    lines = "\n".join(f"{file.name}:{file_digest(file)}" for file in pair)
    return hashlib.sha256(lines.encode()).hexdigest()


def onnx_companions(files: dict[str, str], owners: dict[str, str] | None = None) -> dict[str, str]:
    """Bundle name -> file of every external data file the bundle's ONNX files read: beside its ONNX file's
    bundle name, under the file name the .onnx records, so a download leaves a pair that loads. A file named
    .onnx that is not ONNX has none. `owners`, if given, gets data file name -> its ONNX file's bundle name."""
    added: dict[str, str] = {}
    for name, source in sorted((name, source) for name, source in files.items() if name.endswith(".onnx")):
        try:
            pair = companions(source)
        except NotOnnxError:
            continue
        for data in pair[1:]:
            data_name = str(PurePosixPath(name).with_name(data.name))
            listed = files.get(data_name, added.get(data_name))
            if listed is not None and Path(listed).resolve() != data.resolve():
                raise UserInputError(f"bundle: {data_name} is both {listed} and the external data of {name}")
            added[data_name] = str(data)
            if owners is not None:
                owners[data_name] = name
    return added
