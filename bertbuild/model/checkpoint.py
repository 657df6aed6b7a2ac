"""Read a Google/NVIDIA-format BERT QA checkpoint (TF1 `model.ckpt-<step>`).

The directory holds `bert_config.json`, `vocab.txt`, `model.ckpt-<step>.index`
and `.data-*` shards, optionally a `checkpoint` file naming the step to use.
Every way a checkpoint can be wrong becomes a one-line `CheckpointError` that
names the file and the variable, never a TensorFlow traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bertbuild.errors import CheckpointError

CONFIG_FILE = "bert_config.json"
VOCAB_FILE = "vocab.txt"
# Written beside a converted checkpoint (e.g. from a Hugging Face folder): facts Google's layout has no place
# for, above all the tokenizer's casing, {"format": ..., "lower_case": true|false, ...}.
SOURCE_FILE = "bertbuild-source.json"
# The SQuAD head: what a pretrained (head-less) checkpoint lacks.
HEAD_NAMES = ("cls/squad/output_weights", "cls/squad/output_bias")

# Optimizer state and bookkeeping that fine-tuning leaves in a checkpoint.
_IGNORED = re.compile(r"(/adam_[mv]$|/lamb_[mv]$|^global_step$|/Momentum$|^bad_steps$|^loss_scale$)")
_STEP = re.compile(r"model\.ckpt-(\d+)\.index$")


@dataclass(frozen=True)
class BertConfig:
    """The fields of `bert_config.json` the model graph depends on."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_json(self) -> dict:
        return asdict(self)


_INT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "max_position_embeddings", "type_vocab_size",
)
_GELU_KINDS = {"gelu", "gelu_new", "gelu_tanh", "gelu_fast"}


def read_json_object(path: Path, missing: str, error: type[Exception] = CheckpointError) -> dict:
    """A UTF-8 JSON file holding an object; else one-line `error`s: "<path>: <missing>", bad JSON, not an object."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def read_config(path: Path) -> BertConfig:
    """Parse and check `bert_config.json`; unknown extra keys are ignored."""
    raw = read_json_object(path, f"missing (a BERT checkpoint needs {CONFIG_FILE})")
    for key in _INT_FIELDS:
        if key not in raw:
            raise CheckpointError(f"{path}: missing key '{key}'")
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{path}: '{key}' must be a positive integer, got {value!r}")
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise CheckpointError(
            f"{path}: hidden_size {raw['hidden_size']} is not divisible by "
            f"num_attention_heads {raw['num_attention_heads']}"
        )
    act = raw.get("hidden_act", "gelu")
    if act not in _GELU_KINDS:
        raise CheckpointError(f"{path}: hidden_act '{act}' is not supported (use one of {sorted(_GELU_KINDS)})")
    fields = {k: raw[k] for k in BertConfig.__dataclass_fields__ if k in raw}
    return BertConfig(**fields)


def expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every variable a QA checkpoint must have, with the shape the config implies."""
    h, i = config.hidden_size, config.intermediate_size
    shapes = {
        "bert/embeddings/word_embeddings": (config.vocab_size, h),
        "bert/embeddings/token_type_embeddings": (config.type_vocab_size, h),
        "bert/embeddings/position_embeddings": (config.max_position_embeddings, h),
        "bert/embeddings/LayerNorm/gamma": (h,),
        "bert/embeddings/LayerNorm/beta": (h,),
        "cls/squad/output_weights": (2, h),
        "cls/squad/output_bias": (2,),
    }
    for n in range(config.num_hidden_layers):
        p = f"bert/encoder/layer_{n}"
        for proj in ("query", "key", "value"):
            shapes[f"{p}/attention/self/{proj}/kernel"] = (h, h)
            shapes[f"{p}/attention/self/{proj}/bias"] = (h,)
        shapes[f"{p}/attention/output/dense/kernel"] = (h, h)
        shapes[f"{p}/attention/output/dense/bias"] = (h,)
        shapes[f"{p}/intermediate/dense/kernel"] = (h, i)
        shapes[f"{p}/intermediate/dense/bias"] = (i,)
        shapes[f"{p}/output/dense/kernel"] = (i, h)
        shapes[f"{p}/output/dense/bias"] = (h,)
        for ln in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}/{ln}/gamma"] = (h,)
            shapes[f"{p}/{ln}/beta"] = (h,)
    return shapes


def weight_bytes(config: BertConfig) -> int:
    """FP32 bytes of every weight the QA graph reads."""
    return 4 * sum(int(np.prod(shape)) for shape in expected_shapes(config).values())


def checkpoint_prefix(directory: Path) -> Path:
    """The `model.ckpt-<step>` prefix to load from a checkpoint directory.

    The `checkpoint` file wins when it names a prefix present in the directory
    (its paths may be absolute paths from the machine that trained it, so only
    the basename is used); otherwise the single, or highest-step, `*.index`.
    """
    directory = Path(directory)
    state = directory / "checkpoint"
    if state.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(), re.M)
        if match:
            named = directory / Path(match.group(1)).name
            if named.with_name(named.name + ".index").is_file():
                return named
    indexes = sorted(directory.glob("*.index"))
    if not indexes:
        raise CheckpointError(f"{directory}: no checkpoint found (expected model.ckpt-<step>.index and .data-* files)")

    def step(path: Path) -> int:
        found = _STEP.search(path.name)
        return int(found.group(1)) if found else -1

    best = max(indexes, key=step)
    return best.with_name(best.name[: -len(".index")])


def vocab_size_of(path: Path) -> int:
    try:
        with open(path, encoding="utf-8") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (a BERT checkpoint needs {VOCAB_FILE})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not UTF-8 text") from None


def vocab_and_case(checkpoint_dir: Path | str, lower_case: bool | None = None) -> tuple[Path, bool]:
    """The checkpoint's vocab file and whether text is lower-cased (see `checkpoint_casing`)."""
    return Path(checkpoint_dir) / VOCAB_FILE, checkpoint_casing(checkpoint_dir, lower_case)


def checkpoint_casing(checkpoint_dir: Path | str, lower_case: bool | None = None) -> bool:
    """Whether text is lower-cased for this checkpoint: the user's `lower_case` when set, else the casing
    `SOURCE_FILE` records (a converted model's tokenizer said so), else read off the vocab."""
    if lower_case is not None:
        return lower_case
    recorded = Path(checkpoint_dir) / SOURCE_FILE
    if recorded.is_file():
        try:
            raw = json.loads(recorded.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{recorded}: not valid JSON ({exc})") from None
        value = raw.get("lower_case") if isinstance(raw, dict) else None
        if not isinstance(value, bool):
            raise CheckpointError(f"{recorded}: 'lower_case' must be true or false, got {value!r}")
        return value
    return vocab_is_uncased(Path(checkpoint_dir) / VOCAB_FILE)


def check_sequence_lengths(config: BertConfig, lengths: dict[str, int], where: Path | str) -> None:
    """Every sequence length a run feeds needs a position embedding; name the setting that asks for more.

    Without this a too-long setting fails deep inside TensorFlow with a broadcast error.
    """
    for setting, length in lengths.items():
        if length > config.max_position_embeddings:
            raise CheckpointError(
                f"{where}: max_position_embeddings is {config.max_position_embeddings}, below {setting} "
                f"{length}; set {setting} to at most {config.max_position_embeddings}"
            )


def vocab_is_uncased(path: Path) -> bool:
    """An uncased vocab has no word pieces with capital letters.

    Google's format does not record lower-casing, so it is read off the vocab:
    a cased vocab has thousands of capitalised pieces ("The", "##A"), an
    uncased one only the bracketed specials ("[CLS]").
    """
    with open(path, encoding="utf-8") as handle:
        tokens = [line.rstrip("\n") for line in handle]
    capitalised = sum(1 for t in tokens if not t.startswith("[") and any(c.isupper() for c in t))
    return capitalised < 10


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint directory holds, checked without reading any tensor."""

    directory: Path
    prefix: Path
    config: BertConfig
    vocab_path: Path
    lower_case: bool

    @property
    def step(self) -> int | None:
        found = _STEP.search(self.prefix.name + ".index")
        return int(found.group(1)) if found else None


@dataclass(frozen=True)
class Checkpoint(CheckpointInfo):
    """A loaded QA checkpoint: its info plus float32 weights by Google name."""

    weights: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def open_reader(prefix: Path):
    """TensorFlow's checkpoint reader for `prefix`; a file TF cannot read is one `CheckpointError`."""
    from bertbuild._lazy import import_tensorflow

    tf = import_tensorflow()
    try:
        return tf.train.load_checkpoint(str(prefix))
    except Exception as exc:  # TF raises several error classes for a bad index/shard
        raise CheckpointError(f"{prefix}.index: cannot be read as a TF checkpoint ({first_line(exc)})") from None


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def config_and_vocab(directory: Path | str) -> tuple[Path, BertConfig, Path]:
    """A checkpoint directory's (path, checked config, vocab path); one CheckpointError line if it is no directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a directory (expected a BERT checkpoint directory)")
    return directory, read_config(directory / CONFIG_FILE), directory / VOCAB_FILE


def _checked(directory: Path | str, lower_case: bool | None):
    directory, config, vocab_path = config_and_vocab(directory)
    n_vocab = vocab_size_of(vocab_path)
    if n_vocab != config.vocab_size:
        raise CheckpointError(
            f"{vocab_path}: has {n_vocab} tokens but {CONFIG_FILE} says vocab_size {config.vocab_size}"
        )
    prefix = checkpoint_prefix(directory)
    reader = open_reader(prefix)
    stored = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items() if not _IGNORED.search(k)}
    for name, shape in expected_shapes(config).items():
        if name not in stored:
            raise CheckpointError(f"{prefix}: missing variable '{name}'")
        if stored[name] != shape:
            raise CheckpointError(
                f"{prefix}: variable '{name}' has shape {list(stored[name])}, "
                f"but {CONFIG_FILE} implies {list(shape)}"
            )
    return CheckpointInfo(directory, prefix, config, vocab_path, checkpoint_casing(directory, lower_case)), reader


def inspect_checkpoint(directory: Path | str, lower_case: bool | None = None) -> CheckpointInfo:
    """Check config, vocab and every variable's name and shape; read no tensor."""
    return _checked(directory, lower_case)[0]


def load_checkpoint(directory: Path | str, lower_case: bool | None = None) -> Checkpoint:
    """Load and check a QA checkpoint directory. Values are upcast to float32."""
    info, reader = _checked(directory, lower_case)
    weights = {
        name: np.asarray(reader.get_tensor(name), dtype=np.float32) for name in expected_shapes(info.config)
    }
    return Checkpoint(**vars(info), weights=weights)
