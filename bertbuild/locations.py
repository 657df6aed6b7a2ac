"""Telling a local path from a URL or a source scheme (`ngc://`, `gdrive://`, `generated:`).

A leaf: the config resolves local paths while it validates, and the fetcher
parses the rest; both must agree on which is which.
"""

from __future__ import annotations

import re

SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_local_path(text: str) -> bool:
    """True for a plain filesystem path: no ``scheme://`` and not ``generated:``."""
    return not SCHEME.match(text.strip()) and not text.strip().startswith("generated:")
