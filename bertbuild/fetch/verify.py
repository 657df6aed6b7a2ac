"""sha256 pins: parse them, compute digests, compare.

A pin is checked on the downloaded archive or file before it is unpacked or
published. A local checkpoint directory has no archive, so its pin covers the
tree instead (see `tree_sha256`), computable with standard tools.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from bertbuild.errors import FetchError, UserInputError
from bertbuild.hashing import sha256_file

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(pin: str | None) -> str | None:
    """Lower-case 64-hex pin (an optional ``sha256:`` prefix is dropped), or None."""
    if pin is None or not pin.strip():
        return None
    value = pin.strip().lower().removeprefix("sha256:")
    if not _HEX64.match(value):
        raise UserInputError(f"invalid sha256 pin {pin!r}: expected 64 hex digits")
    return value


def tree_sha256(root: Path) -> str:
    """Digest of every regular file under `root` (symlinks skipped).

    It is the sha256 of ``sha256sum`` lines over the sorted relative paths, i.e.
    ``cd ROOT && find . -type f -printf '%P\\n' | LC_ALL=C sort | xargs sha256sum | sha256sum``.
    """
    files = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                files.append(path.relative_to(root).as_posix())
    lines = "".join(f"{sha256_file(root / rel)}  {rel}\n" for rel in sorted(files, key=os.fsencode))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_sha256(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise FetchError(f"sha256 mismatch for {what}: expected {expected[:12]}..., got {actual[:12]}...")
