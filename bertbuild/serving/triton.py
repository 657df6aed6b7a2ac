"""A Triton model configuration (`config.pbtxt`) for one engine, read from its ONNX file: pure, no Triton needed.

A Triton model repository holds one folder per model: `config.pbtxt`, a
`ModelConfig` protobuf in text format, and a version folder `1/` holding the
model file. The inputs and outputs (names, data types, dims) are read from the
ONNX file itself, never assumed: an ONNX Runtime engine is an ONNX file, and a
TensorRT plan has the inputs and outputs of the ONNX file it was built from.

The text is written here from a small typed description rather than through
Triton's protobuf classes, so serving a bundle needs no tritonclient; the tests
parse every file with Triton's own schema (`tritonclient`'s `model_config_pb2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from onnx import TensorProto

from bertbuild.errors import UserInputError

# Triton's DataType for each ONNX element type an input or output may have.
DATA_TYPES = {
    TensorProto.BOOL: "TYPE_BOOL", TensorProto.UINT8: "TYPE_UINT8", TensorProto.UINT16: "TYPE_UINT16",
    TensorProto.UINT32: "TYPE_UINT32", TensorProto.UINT64: "TYPE_UINT64", TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT16: "TYPE_INT16", TensorProto.INT32: "TYPE_INT32", TensorProto.INT64: "TYPE_INT64",
    TensorProto.FLOAT16: "TYPE_FP16", TensorProto.FLOAT: "TYPE_FP32", TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.STRING: "TYPE_STRING", TensorProto.BFLOAT16: "TYPE_BF16",
}
DYNAMIC = -1  # Triton's wildcard dimension

# A request waits at most this long for others to batch with: small beside a BERT forward pass (milliseconds),
# so a lone request hardly waits, while concurrent ones merge into the preferred sizes.
MAX_QUEUE_DELAY_US = 100


@dataclass(frozen=True)
class Serving:
    """How Triton runs one backend's engine: its platform, its device, and ONNX Runtime accelerators."""

    platform: str
    kind: str  # KIND_CPU / KIND_GPU
    accelerators: tuple[str, ...] = ()  # ONNX Runtime GPU execution accelerators Triton enables
    per_profile: bool = False  # one instance group per TensorRT optimization profile


ONNX_PLATFORM, PLAN_PLATFORM = "onnxruntime_onnx", "tensorrt_plan"
SERVING = {
    "onnxruntime": Serving(ONNX_PLATFORM, "KIND_CPU"),
    "onnxruntime-cuda": Serving(ONNX_PLATFORM, "KIND_GPU"),
    # The engine is the ONNX file the TensorRT provider compiles: Triton's ONNX Runtime backend does the same.
    "onnxruntime-tensorrt": Serving(ONNX_PLATFORM, "KIND_GPU", accelerators=("tensorrt",)),
    "tensorrt": Serving(PLAN_PLATFORM, "KIND_GPU", per_profile=True),
}


@dataclass(frozen=True)
class Tensor:
    """One input or output: dims without the batch dimension when the model batches (`max_batch_size > 0`)."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    def fields(self) -> list[str]:
        return [f"name: {_quote(self.name)}", f"data_type: {self.data_type}", f"dims: {_list(self.dims)}"]


@dataclass(frozen=True)
class InstanceGroup:
    kind: str
    count: int = 1
    profiles: tuple[str, ...] = ()  # TensorRT optimization profiles, by index

    def fields(self) -> list[str]:
        profile = [f"profile: {_list(map(_quote, self.profiles))}"] if self.profiles else []
        return [f"kind: {self.kind}", f"count: {self.count}", *profile]


@dataclass(frozen=True)
class ModelConfig:
    """The fields of Triton's `ModelConfig` a bundle's engines need."""

    name: str
    platform: str
    max_batch_size: int  # 0: the model does not batch, dims are full shapes
    default_model_filename: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    instance_groups: tuple[InstanceGroup, ...]
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US
    accelerators: tuple[str, ...] = ()

    def to_pbtxt(self) -> str:
        lines = [f"name: {_quote(self.name)}", f"platform: {_quote(self.platform)}",
                 f"max_batch_size: {self.max_batch_size}",
                 f"default_model_filename: {_quote(self.default_model_filename)}"]
        repeated = (("input", self.inputs), ("output", self.outputs), ("instance_group", self.instance_groups))
        for field, items in repeated:
            lines += _block(field, [item.fields() for item in items])
        if self.max_batch_size > 0:
            sizes = self.preferred_batch_sizes
            preferred = [f"  preferred_batch_size: {_list(sizes)}"] if sizes else []
            lines += ["dynamic_batching {", *preferred,
                      f"  max_queue_delay_microseconds: {self.max_queue_delay_us}", "}"]
        if self.accelerators:
            names = ", ".join(f"{{ name: {_quote(name)} }}" for name in self.accelerators)
            lines += ["optimization {", "  execution_accelerators {",
                      f"    gpu_execution_accelerator: [ {names} ]", "  }", "}"]
        return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string: protobuf's own C escaping (ONNX tensor names may hold any character)."""
    from google.protobuf import text_encoding

    return f'"{text_encoding.CEscape(text, as_utf8=True)}"'


def _list(values) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def _block(field: str, items: list[list[str]]) -> list[str]:
    """A repeated message field: `field [`, each item as `{ ... }` with its fields indented, comma-separated, `]`."""
    lines = [f"{field} ["]
    for i, fields in enumerate(items):
        lines += ["  {", *(f"    {f}" for f in fields), "  }," if i < len(items) - 1 else "  }"]
    return [*lines, "]"]


def _signature(onnx_path: Path) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    """(inputs, outputs) of the ONNX graph as (name, Triton data type, full shape with -1 where not fixed)."""
    from bertbuild import onnx_files

    graph = onnx_files.load(onnx_path, load_external_data=False).graph
    weights = {t.name for t in graph.initializer}  # older files list their weights among the inputs too

    def tensors(values) -> list[tuple[str, str, list[int]]]:
        found = []
        for value in values:
            tensor = value.type.tensor_type
            if not value.type.HasField("tensor_type") or tensor.elem_type not in DATA_TYPES:
                raise UserInputError(f"{onnx_path}: {value.name!r} is not a tensor of a type Triton serves")
            if not tensor.HasField("shape"):
                raise UserInputError(f"{onnx_path}: {value.name!r} has no shape recorded; Triton needs its rank")
            shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else DYNAMIC
                     for d in tensor.shape.dim]
            found.append((value.name, DATA_TYPES[tensor.elem_type], shape))
        return found

    return tensors([v for v in graph.input if v.name not in weights]), tensors(graph.output)


def _batch_limits(profiles: Sequence, batch: int, per_profile: bool) -> tuple[int, tuple[int, ...]]:
    """(max_batch_size, preferred batch sizes) from the optimization profiles and the benchmark batch.

    Without profiles (nothing bounds the batch), the benchmark batch. ONNX Runtime's
    dynamic axes serve any batch, so its limit is the largest one a profile allows.
    With one TensorRT instance per profile, Triton may hand any batch to any
    instance: the limit is the largest batch every profile allows.
    """
    if not profiles:
        return batch, (batch,)
    tops = [p.max[0] for p in profiles]
    limit = min(tops) if per_profile else max(tops)

    def allowed(size: int) -> bool:
        if per_profile:
            return all(p.min[0] <= size <= p.max[0] for p in profiles)
        return 1 <= size <= limit

    return limit, tuple(sorted(s for s in {*(p.opt[0] for p in profiles), batch} if allowed(s)))


def model_config(name: str, backend: str, engine_path: Path | str, profiles: Sequence, batch: int,
                 source_onnx: Path | str | None = None) -> ModelConfig:
    """The Triton configuration of one engine file.

    An ONNX Runtime engine is an ONNX file: its inputs and outputs are read from it.
    A TensorRT plan has those of `source_onnx`, the ONNX file it was built from.
    `profiles`: the (batch, seq) optimization profiles (anything with `min`, `opt`,
    `max`); `batch`: the benchmark batch. A model batches when every input and
    output has a free first dimension; Triton then owns that dimension and it is
    left out of the dims.
    """
    serving = SERVING.get(backend)
    if serving is None:
        raise UserInputError(f"no Triton platform for backend {backend!r} (known: {', '.join(SERVING)})")
    onnx_path = Path(engine_path) if serving.platform == ONNX_PLATFORM else source_onnx
    if onnx_path is None:
        raise UserInputError(f"{engine_path}: a {backend} engine's inputs and outputs are read from the ONNX file "
                             "it was built from; none was given")
    inputs, outputs = _signature(Path(onnx_path))
    batched = all(shape and shape[0] == DYNAMIC for _, _, shape in [*inputs, *outputs])
    max_batch, preferred = _batch_limits(profiles, batch, serving.per_profile) if batched else (0, ())
    if batched:
        flat = [n for n, _, shape in [*inputs, *outputs] if len(shape) == 1]
        if flat:  # Triton would need a `reshape` for these, which is not written here
            raise UserInputError(f"{onnx_path}: {flat[0]!r} has only the batch dimension; Triton needs dims")

    def described(tensors) -> tuple[Tensor, ...]:
        return tuple(Tensor(n, t, tuple(shape[1:] if batched else shape)) for n, t, shape in tensors)

    if serving.per_profile and profiles:
        groups = tuple(InstanceGroup(serving.kind, profiles=(str(i),)) for i in range(len(profiles)))
    else:
        groups = (InstanceGroup(serving.kind),)
    return ModelConfig(name=name, platform=serving.platform, max_batch_size=max_batch,
                       default_model_filename=Path(engine_path).name, inputs=described(inputs),
                       outputs=described(outputs), instance_groups=groups, preferred_batch_sizes=preferred,
                       accelerators=serving.accelerators)
