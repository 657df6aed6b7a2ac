"""A random-weight QA checkpoint for tests and for demos without a real model.

Its EM/F1 are noise by construction; it exists to exercise loading, export,
parity and every code path in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertbuild.model.checkpoint import BertConfig, expected_shapes
from bertbuild.model.checkpoint_writer import save_checkpoint


def tiny_config(vocab_size: int, layers: int = 2, hidden: int = 32, heads: int = 4) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=512,
        type_vocab_size=2,
    )


def random_weights(config: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in expected_shapes(config).items():
        if name.endswith("gamma"):
            weights[name] = 1.0 + 0.1 * rng.standard_normal(shape)
        else:
            weights[name] = config.initializer_range * 5 * rng.standard_normal(shape)
    return {k: v.astype(np.float32) for k, v in weights.items()}


def write_random_checkpoint(
    directory: Path | str, vocab_path: Path | str, layers: int = 2, hidden: int = 32,
    heads: int = 4, seed: int = 0, step: int = 1000, with_optimizer_slots: bool = True,
) -> Path:
    """Write a tiny random QA checkpoint (with adam slots, like a real fine-tune)."""
    with open(vocab_path, encoding="utf-8") as handle:
        vocab_size = sum(1 for _ in handle)
    config = tiny_config(vocab_size, layers, hidden, heads)
    weights = random_weights(config, seed)
    slots = {}
    if with_optimizer_slots:
        for name, value in weights.items():
            slots[f"{name}/adam_m"] = np.zeros_like(value)
            slots[f"{name}/adam_v"] = np.zeros_like(value)
    save_checkpoint(directory, config, vocab_path, weights, step=step, optimizer_slots=slots)
    return Path(directory)
