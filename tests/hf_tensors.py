"""Random BERT weights named as Hugging Face saves them, for the HF import tests.

One generator so the encoder-only (`BertModel`) and QA (`BertForQuestionAnswering`)
tests build the same layer layout; each adds what its checkpoint kind has.
"""

from __future__ import annotations

import numpy as np


def random_bert_tensors(vocab_size: int, *, layers: int, hidden: int, inter: int, positions: int,
                        rng: np.random.Generator, prefix: str = "") -> dict[str, np.ndarray]:
    """Embeddings and encoder layers (HF Linear weights are [out, in]), every name behind `prefix`."""

    def rand(*shape, scale=0.2):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": rand(vocab_size, hidden),
        "embeddings.position_embeddings.weight": rand(positions, hidden),
        "embeddings.token_type_embeddings.weight": rand(2, hidden),
        "embeddings.LayerNorm.weight": 1 + rand(hidden, scale=0.1),
        "embeddings.LayerNorm.bias": rand(hidden, scale=0.1),
    }
    for n in range(layers):
        p = f"encoder.layer.{n}."
        for proj in ("query", "key", "value"):
            t[p + f"attention.self.{proj}.weight"] = rand(hidden, hidden)
            t[p + f"attention.self.{proj}.bias"] = rand(hidden)
        t[p + "attention.output.dense.weight"] = rand(hidden, hidden)
        t[p + "attention.output.dense.bias"] = rand(hidden)
        t[p + "attention.output.LayerNorm.weight"] = 1 + rand(hidden, scale=0.1)
        t[p + "attention.output.LayerNorm.bias"] = rand(hidden, scale=0.1)
        t[p + "intermediate.dense.weight"] = rand(inter, hidden)
        t[p + "intermediate.dense.bias"] = rand(inter)
        t[p + "output.dense.weight"] = rand(hidden, inter)
        t[p + "output.dense.bias"] = rand(hidden)
        t[p + "output.LayerNorm.weight"] = 1 + rand(hidden, scale=0.1)
        t[p + "output.LayerNorm.bias"] = rand(hidden, scale=0.1)
    return {prefix + k: v for k, v in t.items()}
