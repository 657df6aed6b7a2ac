"""Write a checkpoint in the Google/NGC BERT TF1 layout with TF's own v1 Saver.

Used by the HF import, fine-tuning and the random-weight test fixture, so all
three produce exactly what `checkpoint.load_checkpoint` (and NVIDIA's tools)
read: `bert_config.json`, `vocab.txt`, `model.ckpt-<step>.*` and `checkpoint`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from bertbuild._lazy import import_tensorflow
from bertbuild.model.checkpoint import CONFIG_FILE, VOCAB_FILE, BertConfig


def save_checkpoint(
    directory: Path | str,
    config: BertConfig,
    vocab_path: Path | str,
    weights: dict[str, np.ndarray],
    step: int = 0,
    dtype=np.float32,
    optimizer_slots: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write `weights` (Google names) as `model.ckpt-<step>`; returns the prefix.

    `dtype=np.float16` halves the size on disk; the loader upcasts to float32.
    `optimizer_slots` (e.g. `.../adam_m`) are written as-is, as a fine-tuning
    run leaves them, and ignored by the loader.
    """
    tf = import_tensorflow()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2) + "\n")
    if Path(vocab_path).resolve() != (directory / VOCAB_FILE).resolve():
        shutil.copyfile(vocab_path, directory / VOCAB_FILE)
    values = {name: np.asarray(v, dtype=dtype) for name, v in weights.items()}
    values.update(optimizer_slots or {})
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=name) for name, v in values.items()]
        global_step = tf.compat.v1.Variable(np.int64(step), name="global_step")
        saver = tf.compat.v1.train.Saver(var_list=variables + [global_step], max_to_keep=1)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(session, str(directory / "model.ckpt"), global_step=step, write_meta_graph=False)  # the .meta is unused, and as big as the weights
    return Path(prefix)
