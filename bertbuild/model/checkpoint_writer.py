"""Write a checkpoint in the Google/NGC BERT TF1 layout, in bounded memory.

Used by the HF import, fine-tuning, the random-weight fixtures and the
full-size generated checkpoints of `benchmarks/scale.py`, so all of them
produce exactly what `checkpoint.load_checkpoint` (and NVIDIA's tools) read:
`bert_config.json`, `vocab.txt`, `model.ckpt-<step>.index` / `.data-*` and
`checkpoint`.

Why not TF1's `Saver`: it embeds every initial value in the graph as a
constant, so a BERT-large checkpoint with its Adam slots (4 GB) would be held
several times over and pass protobuf's 2 GB graph limit. Here tensors are
written in chunks with TensorFlow's own `SaveV2` op (the op the Saver runs)
and the chunks merged with `MergeV2Checkpoints` into one checkpoint: the same
files, with at most one chunk in memory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from bertbuild._lazy import import_tensorflow
from bertbuild.model.checkpoint import CONFIG_FILE, VOCAB_FILE, BertConfig

CHUNK_BYTES = 512 * 2**20


def _items(tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]] | None):
    if tensors is None:
        return iter(())
    return iter(tensors.items()) if isinstance(tensors, Mapping) else iter(tensors)


def write_tensors(prefix: Path | str, tensors: Iterable[tuple[str, np.ndarray]], chunk_bytes: int = CHUNK_BYTES) -> Path:
    """Write (name, array) pairs as the TF checkpoint `prefix`, holding at most ~`chunk_bytes` at once."""
    tf = import_tensorflow()
    prefix = Path(prefix)
    with tempfile.TemporaryDirectory(prefix=".chunks-", dir=prefix.parent) as scratch:
        parts: list[str] = []
        names: list[str] = []
        values: list[np.ndarray] = []
        held = 0

        def flush() -> None:
            nonlocal names, values, held
            if not names:
                return
            part = str(Path(scratch) / f"part-{len(parts):05d}")
            tf.raw_ops.SaveV2(prefix=part, tensor_names=names, shape_and_slices=[""] * len(names),
                              tensors=[tf.constant(v) for v in values])
            parts.append(part)
            names, values, held = [], [], 0

        for name, value in tensors:
            value = np.asarray(value)
            names.append(name)
            values.append(value)
            held += value.nbytes
            if held >= chunk_bytes:
                flush()
        flush()
        if not parts:
            raise ValueError("a checkpoint needs at least one tensor")
        tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=str(prefix), delete_old_dirs=False)
    return prefix


def save_checkpoint(
    directory: Path | str,
    config: BertConfig,
    vocab_path: Path | str,
    weights: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    step: int = 0,
    dtype=np.float32,
    optimizer_slots: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]] | None = None,
) -> Path:
    """Write `weights` (Google names) as `model.ckpt-<step>`; returns the prefix.

    `weights` and `optimizer_slots` may be dicts or lazy (name, array)
    iterables, so a caller can generate tensors one at a time.
    `dtype=np.float16` halves the size on disk; the loader upcasts to float32.
    `optimizer_slots` (e.g. `.../adam_m`) are written as-is, as a fine-tuning
    run leaves them, and ignored by the loader.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2) + "\n")
    if Path(vocab_path).resolve() != (directory / VOCAB_FILE).resolve():
        shutil.copyfile(vocab_path, directory / VOCAB_FILE)

    def everything():
        for name, value in _items(weights):
            yield name, np.asarray(value, dtype=dtype)
        yield from _items(optimizer_slots)
        yield "global_step", np.int64(step)

    prefix = directory / f"model.ckpt-{step}"
    write_tensors(prefix, everything())
    # The state file TF's Saver writes: it names the checkpoint to load (basename, as NGC zips have it).
    (directory / "checkpoint").write_text(
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n')
    return prefix
