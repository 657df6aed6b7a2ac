"""Which bundle file names and digests are safe to write to disk or use as store paths.

A bundle name becomes a path under a user's `--dest`, and a manifest read from
a shared store is untrusted, so a name must be a plain relative path that
lands inside the destination on every OS a user may download to: no absolute
path, drive (`C:`) or stream (`a:b`), no backslash, no `.`/`..`/empty
segment, no control character. A set of names must also be writable side by
side: no duplicates (on a case-insensitive or Unicode-normalising filesystem
`A.onnx`, `a.onnx` and the NFD spelling of `é` are one file) and no name that
is also the directory of another (`a` and `a/b`).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable

MANIFEST_NAME = "manifest.json"
MAX_SEGMENT_BYTES = 255  # what ext4, APFS and NTFS allow in one path component
MAX_NAME_CHARS = 1024

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def bundle_name_problem(name: object) -> str | None:
    """Why `name` is not a safe bundle-relative file name, or None if it is."""
    if not isinstance(name, str) or not name:
        return "not a non-empty string"
    if len(name) > MAX_NAME_CHARS:
        return f"longer than {MAX_NAME_CHARS} characters"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if "\\" in name:
        return "contains a backslash"
    if ":" in name:
        return "contains ':' (a drive letter or an NTFS stream)"
    if name.startswith("/"):
        return "is absolute"
    segments = name.split("/")
    if any(s in ("", ".", "..") for s in segments):
        return "has an empty, '.' or '..' segment"
    if any(len(s.encode("utf-8")) > MAX_SEGMENT_BYTES for s in segments):
        return f"has a segment longer than {MAX_SEGMENT_BYTES} bytes"
    if name == MANIFEST_NAME:
        return f"is the bundle's own {MANIFEST_NAME}"
    return None


def _folded(name: str) -> str:
    """The key under which case-insensitive, normalising filesystems store `name`."""
    return unicodedata.normalize("NFC", name).casefold()


def name_set_problem(names: Iterable[str]) -> str | None:
    """Why these (individually safe) names cannot be written side by side, or None."""
    seen: dict[str, str] = {}
    for name in names:
        key = _folded(name)
        if key in seen:
            other = seen[key]
            return f"{other!r} and {name!r} name the same file" if other != name else f"{name!r} is listed twice"
        seen[key] = name
    for key, name in seen.items():
        parts = key.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if directory in seen:
                return f"{seen[directory]!r} is a file but {name!r} needs it to be a directory"
    return None


def is_sha256(value: object) -> bool:
    """A lowercase hex sha256: the only form a digest may take before it becomes a store path."""
    return isinstance(value, str) and bool(_SHA256.match(value))
