"""A Triton model configuration (`config.pbtxt`) for one engine, read from its ONNX file: pure, no Triton needed.

A Triton model repository holds one folder per model: `config.pbtxt`, a
`ModelConfig` protobuf in text format, and a version folder `1/` holding the
model file. The inputs and outputs (names, data types, dims) are read from the
ONNX file itself, never assumed: an ONNX Runtime engine is an ONNX file, and a
TensorRT plan and an OpenVINO IR have the inputs and outputs of the ONNX file
they were built from.

OpenVINO engines are served by Triton's OpenVINO backend (`backend:
"openvino"`, not a `platform`), as read in its source
(triton-inference-server/openvino_backend, src/openvino.cc, main of 2026-08):

* it reads `1/model.xml` by default (`default_model_filename` names another
  file) with `ov::Core::read_model`, which takes the weights from the `.bin` of
  the same stem beside it: the IR pair goes into `1/` as `model.xml` + `model.bin`;
* it serves on the CPU only (KIND_CPU) and reads exactly five `parameters`:
  INFERENCE_NUM_THREADS, COMPILATION_NUM_THREADS, NUM_STREAMS, PERFORMANCE_HINT
  and HINT_BF16 (only "YES": inference precision bf16). Any other key is
  ignored, `INFERENCE_PRECISION_HINT` included. The config carries that key
  anyway (what the engine was validated at, for readers and for a backend that
  reads it) and HINT_BF16 for a bf16 engine, the one precision Triton can be
  told. An f32 (or f16) engine cannot be pinned: on a CPU with BF16 (AVX512_BF16,
  AMX), OpenVINO's CPU plugin then computes in BF16 by default, which is not what
  was validated; the config says so in a comment;
* with `max_batch_size > 0` it fixes the model's batch at max_batch_size
  (`ov::set_batch`) and refuses any execution whose batch is not exactly that
  (ENABLE_BATCH_PADDING pads instead, through a request tensor whose dynamic
  sequence dimension it cannot size). So an OpenVINO model does not batch in
  Triton: `max_batch_size: 0`, full dims with -1 for batch and sequence, no
  dynamic batcher; any batch and length a client sends is served as it is.

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
from bertbuild.runner import read_metadata

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
    """How Triton runs one backend's engine: its platform (or backend), its device, and ONNX Runtime accelerators."""

    platform: str  # "" when the model names a Triton `backend` instead
    kind: str  # KIND_CPU / KIND_GPU
    accelerators: tuple[str, ...] = ()  # ONNX Runtime GPU execution accelerators Triton enables
    per_profile: bool = False  # one instance group per TensorRT optimization profile
    backend: str = ""  # Triton's `backend` field, for backends served without a platform name
    model_file: str = ""  # the file name in `1/` (default: the engine's own name)
    batches: bool = True  # whether Triton may batch requests for it (a free first dimension permitting)


ONNX_PLATFORM, PLAN_PLATFORM = "onnxruntime_onnx", "tensorrt_plan"
OPENVINO_BACKEND = "openvino"
OPENVINO_MODEL, OPENVINO_WEIGHTS = "model.xml", "model.bin"  # the names Triton's OpenVINO backend reads by default
# OpenVINO's hint (as the engine metadata records it) -> the HINT_BF16 value Triton's OpenVINO backend honours.
_TRITON_HINTS = {"bf16": "YES"}
SERVING = {
    "onnxruntime": Serving(ONNX_PLATFORM, "KIND_CPU"),
    "onnxruntime-cuda": Serving(ONNX_PLATFORM, "KIND_GPU"),
    # The engine is the ONNX file the TensorRT provider compiles: Triton's ONNX Runtime backend does the same.
    "onnxruntime-tensorrt": Serving(ONNX_PLATFORM, "KIND_GPU", accelerators=("tensorrt",)),
    "tensorrt": Serving(PLAN_PLATFORM, "KIND_GPU", per_profile=True),
    "openvino": Serving("", "KIND_CPU", backend=OPENVINO_BACKEND, model_file=OPENVINO_MODEL, batches=False),
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
    platform: str  # "" when `backend` names the Triton backend instead
    max_batch_size: int  # 0: the model does not batch, dims are full shapes
    default_model_filename: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    instance_groups: tuple[InstanceGroup, ...]
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = MAX_QUEUE_DELAY_US
    accelerators: tuple[str, ...] = ()
    backend: str = ""  # Triton's `backend` (e.g. "openvino"); written only when set
    parameters: tuple[tuple[str, str], ...] = ()  # (key, string_value) pairs, in order
    notes: tuple[str, ...] = ()  # `#` comment lines at the top, for a human reader

    def to_pbtxt(self) -> str:
        if bool(self.platform) == bool(self.backend):
            raise ValueError(f"{self.name}: a model config names a platform or a backend, exactly one")
        lines = [f"# {line}" for note in self.notes for line in note.splitlines()]
        lines += [f"name: {_quote(self.name)}",
                  f"platform: {_quote(self.platform)}" if self.platform else f"backend: {_quote(self.backend)}",
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
        if self.parameters:
            lines += _block("parameters", [[f"key: {_quote(key)}", f"value: {{ string_value: {_quote(value)} }}"]
                                           for key, value in self.parameters])
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


def openvino_parameters(metadata: dict) -> tuple[tuple[str, str], ...]:
    """The `parameters` of an OpenVINO engine's config, from its build record (`read_metadata`).

    What it was validated with: one stream tuned for latency (as `OpenVinoRunner`
    compiles it) and its inference precision hint; HINT_BF16 where the hint is
    bf16, the only precision Triton's OpenVINO backend sets (see the module doc).
    """
    hint = str(metadata.get("inference_precision_hint") or "f32")
    parameters = [("INFERENCE_PRECISION_HINT", hint)]
    if hint in _TRITON_HINTS:
        parameters.append(("HINT_BF16", _TRITON_HINTS[hint]))
    return (*parameters, ("PERFORMANCE_HINT", "LATENCY"), ("NUM_STREAMS", "1"))


def _openvino_notes(metadata: dict) -> tuple[str, ...]:
    hint = str(metadata.get("inference_precision_hint") or "f32")
    computed = metadata.get("compute_precision")
    validated = f"validated computing {computed} (hint {hint})" if computed else f"validated at hint {hint}"
    if hint in _TRITON_HINTS:
        return (f"OpenVINO IR {validated}; HINT_BF16 makes Triton's OpenVINO backend compute the same.",)
    return (f"OpenVINO IR {validated}. Triton's OpenVINO backend reads no INFERENCE_PRECISION_HINT: on a CPU\n"
            "with BF16 (AVX512_BF16, AMX) it computes this model in BF16, not what was validated.",)


def model_config(name: str, backend: str, engine_path: Path | str, profiles: Sequence, batch: int,
                 source_onnx: Path | str | None = None) -> ModelConfig:
    """The Triton configuration of one engine file.

    An ONNX Runtime engine is an ONNX file: its inputs and outputs are read from it.
    A TensorRT plan and an OpenVINO IR have those of `source_onnx`, the ONNX file
    they were built from (for OpenVINO, the one its metadata names when none is given).
    `profiles`: the (batch, seq) optimization profiles (anything with `min`, `opt`,
    `max`); `batch`: the benchmark batch. A model batches when its backend lets
    Triton batch it and every input and output has a free first dimension;
    Triton then owns that dimension and it is left out of the dims.
    """
    serving = SERVING.get(backend)
    if serving is None:
        raise UserInputError(f"no Triton platform for backend {backend!r} (known: {', '.join(SERVING)})")
    openvino = serving.backend == OPENVINO_BACKEND
    metadata = read_metadata(engine_path) if openvino else {}
    source_onnx = source_onnx or metadata.get("source_onnx")
    onnx_path = Path(engine_path) if serving.platform == ONNX_PLATFORM else source_onnx
    if onnx_path is None:
        raise UserInputError(f"{engine_path}: a {backend} engine's inputs and outputs are read from the ONNX file "
                             "it was built from; none was given")
    inputs, outputs = _signature(Path(onnx_path))
    batched = serving.batches and all(shape and shape[0] == DYNAMIC for _, _, shape in [*inputs, *outputs])
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
                       default_model_filename=serving.model_file or Path(engine_path).name, inputs=described(inputs),
                       outputs=described(outputs), instance_groups=groups, preferred_batch_sizes=preferred,
                       accelerators=serving.accelerators, backend=serving.backend,
                       parameters=openvino_parameters(metadata) if openvino else (),
                       notes=_openvino_notes(metadata) if openvino else ())
