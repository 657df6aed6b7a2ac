"""Build configs: YAML files validated into typed, frozen pydantic models.

Unknown keys, wrong types and missing files are reported as one line naming
the file and the dotted key, e.g. `configs/x.yaml: eval.limit: must be ...`.
`None` means "use the default" throughout. Relative paths (`model.source`,
`eval.dataset`) are resolved against the working directory when validated.

`BuildConfig` is also the type of the `build-bert` flow's parameter
(`ConfigParameter`): Prefect checks a deployment run's parameters against its
JSON schema before the run is created, and a config file path given instead is
loaded and validated before the flow's first task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_serializer, field_validator,
                      model_validator)

from bertbuild.errors import ConfigError
from bertbuild.locations import is_local_path
from bertbuild.kinds import STEPS, Precision
from bertbuild.config.precision import PrecisionConfig
from bertbuild.shapes import DEFAULT_LENGTH_BUCKET, bucket_lengths, describe, fitting_profile, uncovered


class _Section(BaseModel):
    # allow_inf_nan=False: every number a config gives must be finite (a NaN threshold passes or fails nothing).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _existing_path(value: str, exists) -> str:
    """A local path made absolute against the working directory; it must exist."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else (Path.cwd() / path).resolve()
    if not exists(path):
        raise ValueError(f"{value} does not exist")
    return str(path)


class ModelSource(_Section):
    """Where the fine-tuned QA checkpoint comes from.

    `source` is a local directory or archive, `file://`, `https://`, `ngc://`,
    `gdrive://`, or `generated:tiny` (random weights, for smoke tests only).
    """

    source: str
    sha256: str | None = None
    lower_case: bool | None = None  # None: what an HF folder's tokenizer files say, else read off the vocab
    name: str | None = None  # for reports and the artifact store; default from source

    @field_validator("source")
    @classmethod
    def _local_source_exists(cls, value):
        return _existing_path(value, Path.exists) if is_local_path(value) else value

    @field_validator("sha256")
    @classmethod
    def _hex64(cls, value):
        if value is not None and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower())):
            raise ValueError("must be 64 hex characters")
        return value


class ExportConfig(_Section):
    opset: Literal[17, 18] = 17
    # True: every ONNX file keeps its weights in `<file>.data` beside it; None: only files whose
    # weights would pass protobuf's 2 GB limit do (BERT-large FP32, 1.3 GB, stays one file).
    external_data: bool | None = None


class ResourceConfig(_Section):
    """The memory check made before any work starts (`bertbuild.memory_budget`)."""

    # False skips it: the run then starts even where the estimate says it will not fit.
    check_memory: bool = True


class EvalConfig(_Section):
    """Which SQuAD questions are scored, and how features are made."""

    dataset: str = "bundled"  # "bundled", a path or a URL to a SQuAD v1.1 JSON (.json / .json.zip)
    split: Literal["heldout", "train", "all"] = "heldout"
    limit: int | None = Field(default=200, ge=1)  # None: every question of the split
    offset: int = Field(default=0, ge=0)
    max_seq_length: int = Field(default=384, ge=32, le=512)
    doc_stride: int = Field(default=128, ge=8)
    max_query_length: int = Field(default=64, ge=4)
    n_best: int = Field(default=20, ge=1)
    max_answer_length: int = Field(default=30, ge=1)
    batch_size: int = Field(default=8, ge=1)
    # Every pass over SQuAD (scoring, the TensorFlow reference, validation, INT8 calibration and tuning)
    # sorts its windows by real length and trims each batch to a multiple of this many tokens
    # (bertbuild.squad.batching); 0 pads every window to max_seq_length, in file order.
    # The default's measurement: bertbuild.shapes.DEFAULT_LENGTH_BUCKET.
    length_bucket: int = Field(default=DEFAULT_LENGTH_BUCKET, ge=0, le=512)

    @field_validator("dataset")
    @classmethod
    def _local_dataset_exists(cls, value):
        return _existing_path(value, Path.is_file) if value != "bundled" and is_local_path(value) else value

    @model_validator(mode="after")
    def _room_for_context(self):
        # [CLS] question [SEP] context [SEP]: at least one context token must fit.
        if self.max_seq_length <= self.max_query_length + 3:
            raise ValueError(
                f"max_seq_length {self.max_seq_length} leaves no room for context after "
                f"max_query_length {self.max_query_length} (need max_seq_length > max_query_length + 3)"
            )
        return self


class ParityConfig(_Section):
    """Max |Δlogit| allowed between the ONNX FP32 export and TensorFlow."""

    max_abs_logit: float = Field(default=1e-4, gt=0)


class ProfileConfig(_Section):
    """(batch, seq) shapes a TensorRT optimization profile covers."""

    # seq from 32: length-bucketed batches are fed as short as one bucket (eval.length_bucket, 32 by default).
    min: tuple[int, int] = (1, 32)
    opt: tuple[int, int] = (8, 384)
    max: tuple[int, int] = (16, 384)

    @model_validator(mode="after")
    def _ordered(self):
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"need min <= opt <= max in each dimension, got {self.min}, {self.opt}, {self.max}")
        return self


class EngineConfig(_Section):
    # auto: TensorRT where it is importable and a GPU is visible; else OpenVINO where it runs on this
    # CPU; else onnxruntime (CPU). The run logs which and why (backends/registry.py).
    # onnxruntime-cuda / onnxruntime-tensorrt: ONNX Runtime's GPU providers (the `gpu` extra).
    backend: Literal["auto", "onnxruntime", "openvino", "tensorrt", "onnxruntime-cuda",
                     "onnxruntime-tensorrt"] = "auto"
    # fp32: the plain export; fused-fp32: after graph surgery; fp16, bf16 and int8 are
    # written from the fused graph (the file TensorRT gets), see `precision:`. A precision the
    # backend cannot compute on this host (bf16 on ONNX Runtime's CPU provider, or on a CPU
    # without AVX512_BF16 / AMX) is skipped with one logged line.
    precisions: tuple[Precision, ...] = tuple(Precision)
    # The float parts of an INT8 engine (everything but its INT8 GEMMs) where the runtime chooses them
    # (OpenVINO): auto picks bf16 when the CPU has it and it keeps precision.tune.min_answer_agreement
    # on the train-half tune split, else fp32; fp32 / bf16 force one. Other runtimes run the file as written.
    int8_float_parts: Literal["auto", "fp32", "bf16"] = "auto"
    profiles: tuple[ProfileConfig, ...] = (ProfileConfig(),)
    threads: int | None = Field(default=None, ge=1)  # None: all cores
    # Engines built and scored at the same time. None: all of them for a model of up to 256 MiB of
    # FP32 weights, else one at a time (bertbuild.memory_budget.engine_groups says why).
    concurrent: int | None = Field(default=None, ge=1)

    @field_validator("precisions")
    @classmethod
    def _some_precision(cls, value):
        if not value:
            raise ValueError(f"name at least one precision ({', '.join(Precision)}): a run with none builds nothing")
        return value


def _merged_into(defaults: dict) -> BeforeValidator:
    """For a field holding one section per key (gates, tolerances): what a config gives is merged into the
    defaults field by field, so `--set gates.int8.max_f1_drop=2` changes that one threshold and keeps the
    rest of the INT8 gate (and every other precision's) as the project sets it. An explicit null for a
    field still turns that field off."""

    def merge(value):
        if not isinstance(value, dict):
            return value  # pydantic says what is wrong with it
        merged = {str(key): section.model_dump() for key, section in defaults.items()}
        for key, given in value.items():
            base = merged.get(str(key))
            merged[str(key)] = {**base, **given} if isinstance(base, dict) and isinstance(given, dict) else given
        return merged

    return BeforeValidator(merge)


class Tolerance(_Section):
    """Polygraphy's comparison thresholds. `error_stat` is what is held to them:
    every element ("elemwise"), or the "mean", "median" or "max" error of each output.
    """

    atol: float = Field(gt=0)
    rtol: float = Field(gt=0)
    error_stat: Literal["elemwise", "mean", "median", "max"] = "elemwise"


_DEFAULT_TOLERANCES = {
    Precision.FP32: Tolerance(atol=1e-4, rtol=1e-3),
    Precision.FUSED_FP32: Tolerance(atol=1e-4, rtol=1e-3),
    Precision.FP16: Tolerance(atol=0.05, rtol=0.02),
    # BF16 keeps 8 mantissa bits to FP16's 11: single logits move by tenths where answers hold.
    Precision.BF16: Tolerance(atol=0.25, rtol=0.1, error_stat="mean"),
    # INT8 moves single logits by several units on a real model (max 3-6 on the embedded
    # one) while answers hold; the mean error is what separates a sound INT8 file from a broken one.
    Precision.INT8: Tolerance(atol=0.5, rtol=0.5, error_stat="mean"),
}


class ValidationConfig(_Section):
    """Polygraphy comparison of each engine with the FP32 ONNX reference."""

    batches: int = Field(default=4, ge=1)  # SQuAD feature batches of eval.batch_size
    tolerances: Annotated[dict[Precision, Tolerance], _merged_into(_DEFAULT_TOLERANCES)] = _DEFAULT_TOLERANCES


class GateConfig(_Section):
    """Thresholds for one precision; None disables a gate."""

    min_em: float | None = None
    min_f1: float | None = None
    max_em_drop: float | None = None  # vs the TensorFlow FP32 reference, in EM points
    max_f1_drop: float | None = None
    min_argmax_agreement: float | None = Field(default=None, ge=0, le=1)
    min_throughput: float | None = None  # sequences/s at the benchmark shape
    require_validation: bool = True  # Polygraphy's comparison must pass
    # What max_em_drop / max_f1_drop judge: "point", the measured drop; "interval", the worst end of
    # its paired bootstrap 95 % interval (pass only if the data rule out a larger drop). On 200
    # questions that interval is about +-3.5 F1 wide, so only "point" can pass a 1-point budget there.
    drop_judged_on: Literal["point", "interval"] = "point"


_DEFAULT_GATES = {
    Precision.FP32: GateConfig(max_f1_drop=0.1, min_argmax_agreement=0.99),
    Precision.FUSED_FP32: GateConfig(max_f1_drop=0.1, min_argmax_agreement=0.99),
    Precision.FP16: GateConfig(max_f1_drop=0.1, min_argmax_agreement=0.98),
    # FP16's F1 budget. BF16's 8-bit mantissa flips the argmax of near-flat logits in windows without the
    # answer (as INT8 noise does), so its token-level agreement sits lower (0.969 on the demo's validation
    # batches) while 99 % of its answers match FP32's: 0.95, with F1 as the real gate.
    Precision.BF16: GateConfig(max_f1_drop=0.1, min_argmax_agreement=0.95),
    # argmax over 4 validation batches includes windows without the answer, where
    # start/end logits are flat and INT8 noise flips the argmax: 0.8, with F1 as the real gate.
    Precision.INT8: GateConfig(max_f1_drop=1.0, min_argmax_agreement=0.8),
}


class BenchmarkConfig(_Section):
    batch: int = Field(default=8, ge=1)
    seq: int = Field(default=384, ge=8, le=512)
    warmup: int = Field(default=3, ge=0)
    iterations: int = Field(default=10, ge=1)
    # True: a timing measured earlier for the same engine file on this kind of host is reused
    # (fast local reruns). The nightly deployment sets False, so every release is timed afresh.
    reuse: bool = True


class CacheConfig(_Section):
    """Content-keyed step cache (see `bertbuild.step_cache`)."""

    enabled: bool = True  # False (`bertbuild run --no-cache`): every step recomputes, nothing is stored
    dir: str | None = None  # None: $BERTBUILD_CACHE, else ~/.cache/bertbuild
    refresh: tuple[str, ...] = ()  # steps that recompute and replace their entry (`--refresh STEP`)

    @field_validator("refresh")
    @classmethod
    def _known_steps(cls, value):
        unknown = [step for step in value if step not in STEPS]
        if unknown:
            raise ValueError(f"unknown step(s) {', '.join(unknown)} (steps: {', '.join(STEPS)})")
        return value


REDACTED = "<redacted>"


def _plain_data(value, where: str = "") -> None:
    """Storage options are YAML data: text, numbers, booleans, null, lists and mappings with text keys."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"keys must be non-empty text, got {key!r}" + (f" in {where}" if where else ""))
            _plain_data(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for item in value:
            _plain_data(item, where)
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"{where}: expected text, a number, a boolean, a list or a mapping, "
                         f"got {type(value).__name__}")


class PublishConfig(_Section):
    """Where passing runs are published (a directory or any fsspec URL: s3://, gs://, file://)."""

    enabled: bool = True
    store: str | None = None  # None: $BERTBUILD_STORE, else runs/store
    # fsspec options of a URL store (s3fs: endpoint_url, key, secret, client_kwargs, ...). Secrets are
    # better left to the AWS_* variables; values given here are written as "<redacted>" wherever
    # the config is recorded (results.json, the manifest, Prefect's flow-run parameters).
    storage_options: dict[str, Any] = {}

    @field_validator("storage_options")
    @classmethod
    def _plain_options(cls, value):
        _plain_data(value)
        return value

    @model_validator(mode="after")
    def _options_need_a_url(self):
        if self.storage_options and self.store is not None and "://" not in self.store:
            raise ValueError(f"storage_options are for a URL store (s3://bucket/prefix), "
                             f"not the local directory {self.store!r}")
        return self

    @field_serializer("storage_options")
    def _redacted(self, value: dict, info):
        """JSON dumps record which options were set, never their values, unless asked (`REVEAL`)."""
        if info.mode_is_json() and not (info.context or {}).get(REVEAL):
            return {key: REDACTED for key in value}
        return value


# `model_dump(mode="json", context={REVEAL: True})`: a dump that keeps the storage options, to be validated again.
REVEAL = "reveal_storage_options"


class RegressionConfig(_Section):
    """Gates against the model's last release (`latest` in the store); both are skipped for a first release."""

    max_f1_drop_vs_latest: float | None = Field(default=0.5, ge=0)  # F1 points below latest's, per precision
    # this run's p50 / latest's, same kind of host only (timings of another machine say nothing)
    max_latency_ratio_vs_latest: float | None = Field(default=1.15, gt=0)


class BuildConfig(_Section):
    model: ModelSource
    export: ExportConfig = ExportConfig()
    eval: EvalConfig = EvalConfig()
    parity: ParityConfig = ParityConfig()
    engines: EngineConfig = EngineConfig()
    validation: ValidationConfig = ValidationConfig()
    gates: Annotated[dict[Precision, GateConfig], _merged_into(_DEFAULT_GATES)] = _DEFAULT_GATES
    benchmark: BenchmarkConfig = BenchmarkConfig()
    precision: PrecisionConfig = PrecisionConfig()
    publish: PublishConfig = PublishConfig()
    regression: RegressionConfig = RegressionConfig()
    cache: CacheConfig = CacheConfig()
    resources: ResourceConfig = ResourceConfig()
    # Each run writes into <output_dir>/<model name>/<run id>/; `latest` there links to the newest.
    output_dir: str = "runs"

    @model_validator(mode="after")
    def _profiles_cover_run_shapes(self):
        """Every (batch, seq) the run feeds an engine must lie in some profile: caught here, not by TensorRT mid-run.

        Evaluation batches run from 1 (the last, partial batch) to eval.batch_size, at eval.max_seq_length
        and, trimmed by eval.length_bucket, at every multiple of the bucket below it.
        """
        profiles = self.engines.profiles
        seq = self.eval.max_seq_length
        batches = range(1, self.eval.batch_size + 1)
        batch = uncovered(profiles, batches, seq)
        if batch is not None:
            raise ValueError(f"engines.profiles ({describe(profiles)}) cover no (batch, seq) = ({batch}, {seq}): "
                             f"eval runs batches 1..eval.batch_size {self.eval.batch_size} at eval.max_seq_length "
                             f"{seq}; widen a profile")
        lengths = bucket_lengths(self.eval.length_bucket, seq)
        for length in lengths:
            batch = uncovered(profiles, batches, length)
            if batch is not None:
                shown = ", ".join(map(str, lengths))
                raise ValueError(f"engines.profiles ({describe(profiles)}) cover no (batch, seq) = ({batch}, "
                                 f"{length}): eval.length_bucket {self.eval.length_bucket} trims batches 1..eval."
                                 f"batch_size {self.eval.batch_size} to seq {shown}; widen a profile to seq "
                                 f"{lengths[0]}..{seq}, or set eval.length_bucket 0 to pad every batch to {seq}")
        if fitting_profile(profiles, self.benchmark.batch, self.benchmark.seq) is None:
            raise ValueError(f"engines.profiles ({describe(profiles)}) cover no (batch, seq) = "
                             f"({self.benchmark.batch}, {self.benchmark.seq}) of benchmark.batch/benchmark.seq; "
                             "widen a profile")
        return self

    def gate_for(self, precision: str) -> GateConfig:
        return self.gates[precision]  # every precision has one: given fields merge into the defaults

    def tolerance_for(self, precision: str) -> Tolerance:
        return self.validation.tolerances[precision]

    @property
    def model_name(self) -> str:
        if self.model.name:
            return self.model.name
        tail = self.model.source.rstrip("/").split("/")[-1].split(":")[-1]
        return tail.removesuffix(".zip").removesuffix(".tar.gz") or "model"


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a whole-config check: its message names the keys, the input is the whole file
        return message
    if {"publish", "storage_options"} & set(error["loc"]):  # the input may hold storage options, credentials among them: never echoed
        return f"{where}: {message}"
    shown = repr(error.get("input"))
    return f"{where}: {message} (got {shown if len(shown) <= 120 else shown[:117] + '...'})"


def _plain_value(value, inside: tuple[int, ...] = ()) -> bool:
    """YAML's plain data: text, a number, a boolean, null, and lists and mappings of them, holding no
    container inside itself (an anchor referenced within itself: `&a [*a]`)."""
    if isinstance(value, (dict, list)):
        if id(value) in inside:
            return False
        inside = (*inside, id(value))
        if isinstance(value, dict):
            return all(isinstance(key, (str, int, float, bool)) and _plain_value(item, inside)
                       for key, item in value.items())
        return all(_plain_value(item, inside) for item in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _holds_itself(value, inside: tuple[int, ...] = ()) -> bool:
    """True for YAML data holding a list or mapping inside itself (validating it would recurse forever)."""
    if not isinstance(value, (dict, list)):
        return False
    if id(value) in inside:
        return True
    inside = (*inside, id(value))
    return any(_holds_itself(item, inside) for item in (value.values() if isinstance(value, dict) else value))


def _plain_kind(value) -> str:
    """What a value that is not plain data is, for the message."""
    if isinstance(value, (dict, list)):
        return "structure holding itself (an anchor used inside itself)"
    names = {"date": "date", "datetime": "timestamp", "bytes": "!!binary value", "set": "!!set"}
    return names.get(type(value).__name__, type(value).__name__)


def _apply_override(raw: dict, assignment: str) -> None:
    """`--set eval.limit=50`: the value is parsed as YAML so numbers stay numbers.

    A value YAML cannot parse (`[1,`, `*a`, a tab), or one that is not plain data (a date, `!!binary`,
    `!!set`), is one ConfigError line naming the key.
    """
    key, sep, value = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. eval.limit=50")
    *parents, leaf = key.split(".")
    if not all(part.strip() for part in [*parents, leaf]):
        raise ConfigError(f"--set {key}: empty part in the key (expected e.g. eval.limit)")
    try:
        parsed = yaml.safe_load(value)
    except RecursionError:
        raise ConfigError(f"--set {key}: the value is nested too deeply") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())[:120]
        raise ConfigError(f"--set {key}: the value {value!r} is not valid YAML ({problem}); "
                          f"quote it, e.g. --set '{key}=\"...\"'") from None
    if not _plain_value(parsed):
        raise ConfigError(f"--set {key}: the value {value!r} is a YAML {_plain_kind(parsed)}, not text, a number, "
                          f"a boolean, a list or a mapping; quote it, e.g. --set '{key}=\"{value}\"'")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: '{part}' is not a section")
    node[leaf] = parsed


def parse_config(raw: dict, origin: str = "config", section: type[BaseModel] = BuildConfig) -> BuildConfig:
    """Validate a config dict (relative paths resolve against the working directory) into `section`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return section.model_validate(raw)
    except ValidationError as exc:
        # Every problem at once, on one line: a user fixing a config should not discover them one run at a time.
        raise ConfigError(f"{origin}: " + "; ".join(_describe(error) for error in exc.errors())) from None


def build_section(section: type[BaseModel], origin: str, /, **values):
    """`section(**values)`, with every problem in one ConfigError line (`origin`: where the values came from)."""
    return parse_config(values, origin, section)


def read_yaml_file(path: Path, what: str = "config file"):
    """A YAML file's content ({} when empty), or one ConfigError line: not found, or not valid YAML."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML {what}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8), expected a YAML {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML (nested too deeply)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if _holds_itself(raw):
        raise ConfigError(f"{path}: a YAML anchor is used inside itself (e.g. `&a [*a]`): the data never ends")
    return raw if raw is not None else {}


def load_config(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> BuildConfig:
    """Read a YAML config file, apply `KEY=VALUE` overrides, validate."""
    path = Path(path)
    raw = read_yaml_file(path)
    for assignment in overrides:
        if isinstance(raw, dict):
            _apply_override(raw, assignment)
    return parse_config(raw, origin=str(path))


def with_overrides(config: BuildConfig, overrides: list[str] | tuple[str, ...] = ()) -> BuildConfig:
    """`config` with `KEY=VALUE` overrides applied and validated again."""
    if not overrides:
        return config
    raw = config.model_dump(mode="json", context={REVEAL: True})
    for assignment in overrides:
        _apply_override(raw, assignment)
    return parse_config(raw, origin="--set")


def _config_from_path(value):
    """The flow parameter may name a config file (as prefect.yaml's presets do) instead of holding one."""
    if isinstance(value, (str, Path)):
        return read_yaml_file(Path(value))
    return value


# The type of the build-bert flow's `config` parameter: a config, or the path of a YAML file holding one.
ConfigParameter = Annotated[BuildConfig, BeforeValidator(_config_from_path, json_schema_input_type=str | BuildConfig)]
