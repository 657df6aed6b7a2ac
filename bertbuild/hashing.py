"""The one sha256 helper: files are hashed in 1 MiB blocks, so any size fits in memory."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

BLOCK = 1 << 20


def sha256_stream(handle: BinaryIO) -> tuple[str, int]:
    """(hex sha256, byte count) of everything left to read in an open binary file (local or fsspec)."""
    digest, size = hashlib.sha256(), 0
    while block := handle.read(BLOCK):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a local file's bytes."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)[0]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
