"""Find the checkpoint directory inside an unpacked (or local) tree.

Archives nest checkpoints at arbitrary depths (``bert/ckpt/...``, or at the
root for NGC zips), so we walk the tree for the one directory holding
``bert_config.json`` next to a ``model.ckpt*.index``, or a Hugging Face
folder (``config.json`` next to ``model.safetensors`` or its shard index),
which the caller converts. Choosing which step prefix to load is left to the
checkpoint reader (it reads the ``checkpoint`` file); here we only make sure
at least one prefix exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertbuild.errors import FetchError

EXPECTED = ("a directory with bert_config.json and model.ckpt*.index, "
            "or a Hugging Face folder with config.json and model.safetensors")
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def _is_checkpoint_dir(filenames: list[str]) -> bool:
    names = set(filenames)
    return "bert_config.json" in names and any(n.startswith("model.ckpt") and n.endswith(".index") for n in names)


def _is_hf_dir(filenames: list[str]) -> bool:
    # bert_config.json wins: a Google checkpoint that also carries a config.json is read the Google way.
    names = set(filenames)
    return "config.json" in names and "bert_config.json" not in names and any(n in names for n in HF_WEIGHTS)


def find_checkpoint_dir(root: Path) -> Path:
    """The single directory under `root` (itself included) holding a checkpoint, Google's or an HF folder
    (the one without `bert_config.json`)."""
    hits, pytorch_only = [], False
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if _is_checkpoint_dir(filenames) or _is_hf_dir(filenames):
            hits.append(Path(dirpath))
        elif "config.json" in filenames and "pytorch_model.bin" in filenames:
            pytorch_only = True
    if len(hits) == 1:
        return hits[0]
    if hits:
        names = ", ".join(_rel(h, root) for h in hits)
        raise FetchError(f"several checkpoint directories ({names}); keep only one or point at it directly")
    hint = "; pytorch_model.bin is not read: save the model with safetensors" if pytorch_only else ""
    raise FetchError(f"no checkpoint found: expected {EXPECTED}; found {_summary(root)}{hint}")


def _rel(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return "./" if rel == "." else rel + "/"


def _summary(root: Path, shown: int = 6) -> str:
    """The first few files under `root`, so the user can see what came instead."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        files += [(Path(dirpath) / f).relative_to(root).as_posix() for f in sorted(filenames)]
    if not files:
        return "no files"
    more = f" (+{len(files) - shown} more)" if len(files) > shown else ""
    return ", ".join(files[:shown]) + more
