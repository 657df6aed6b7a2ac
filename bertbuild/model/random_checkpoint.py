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


# The shapes of NVIDIA's NGC BERT SQuAD checkpoints (BERT-base and BERT-large, uncased vocab).
NGC_SHAPES = {
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
}


def ngc_config(size: str, vocab_size: int = 30522, layers: int | None = None) -> BertConfig:
    """The `bert_config.json` of an NGC checkpoint of `size` (optionally with fewer layers)."""
    shape = dict(NGC_SHAPES[size])
    if layers is not None:
        shape["num_hidden_layers"] = layers
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=512, type_vocab_size=2, **shape)


def _streamed_tensors(config: BertConfig, seed: int):
    """Random weights, then Adam slots, one tensor at a time (float32, as NGC's checkpoints hold them)."""
    shapes = expected_shapes(config)
    rng = np.random.default_rng(seed)
    scale = np.float32(config.initializer_range)
    for name, shape in shapes.items():
        values = rng.standard_normal(shape, dtype=np.float32) * scale
        yield name, (values + np.float32(1.0)) if name.endswith("gamma") else values
    for name, shape in shapes.items():  # Adam slots: the bulk of an NGC zip (2x the weights)
        yield f"{name}/adam_m", rng.standard_normal(shape, dtype=np.float32) * np.float32(1e-4)
        yield f"{name}/adam_v", np.abs(rng.standard_normal(shape, dtype=np.float32)) * np.float32(1e-7)


def write_ngc_checkpoint(directory: Path | str, size: str, vocab_path: Path | str, seed: int = 0,
                         step: int = 8000, layers: int | None = None) -> Path:
    """A random-weight checkpoint in the NGC layout and shape of `size`, written in bounded memory."""
    with open(vocab_path, encoding="utf-8") as handle:
        vocab_size = sum(1 for _ in handle)
    config = ngc_config(size, vocab_size, layers)
    tensors = _streamed_tensors(config, seed)
    save_checkpoint(directory, config, vocab_path, tensors, step=step)
    return Path(directory)


def write_ngc_zip(zip_path: Path | str, size: str, vocab_path: Path | str, seed: int = 0,
                  layers: int | None = None) -> Path:
    """`write_ngc_checkpoint` packed as NGC ships it: a flat zip, every file at its root.

    Stored, not deflated: random weights do not compress, and the unpacking
    code handles both.
    """
    import tempfile
    import zipfile

    zip_path = Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ngc-", dir=zip_path.parent) as scratch:
        folder = write_ngc_checkpoint(Path(scratch) / "ckpt", size, vocab_path, seed, layers=layers)
        partial = zip_path.with_name(zip_path.name + ".partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for file in sorted(folder.iterdir()):
                archive.write(file, arcname=file.name)
        partial.replace(zip_path)
    return zip_path
