"""Layout of the download cache.

One entry per (kind, source string, sha256 pin), flat in the cache directory::

    <cache>/<kind>-<slug>-<hash>/        a finished entry (unpacked tree, or a
                                         directory holding one fetched file)
    <cache>/.<kind>-<slug>-<hash>.*      work in progress: the resumable
                                         download (.download.part) and
                                         staging directories

An entry becomes visible only through one `os.replace` of a fully built
staging directory, so its final name never points at partial data, and its
existence is the only "complete" marker needed. Hidden work files are removed
when a fetch fails with an error; a run that is killed keeps its
``.download.part`` so the next run resumes it.

One writer per entry at a time is assumed: two processes fetching the same
source at once may fail, but cannot publish a corrupt entry (archives carry
CRCs, and publishing is atomic).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


def default_cache_dir() -> Path:
    """``$BERTBUILD_CACHE``, else ``~/.cache/bertbuild``."""
    env = os.environ.get("BERTBUILD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bertbuild"


def cache_key(kind: str, source: str, sha256: str | None, slug: str, extra: str = "") -> str:
    """A directory name for an entry: readable slug + hash of what identifies it.

    `extra` lets a caller add facts that the source string does not carry
    (e.g. a local archive's size and mtime, so a rebuilt file is not shadowed).
    """
    digest = hashlib.sha256("\0".join((kind, source, sha256 or "", extra)).encode()).hexdigest()[:16]
    return f"{kind}-{slug}-{digest}"


@dataclass(frozen=True)
class CacheEntry:
    root: Path
    key: str

    @property
    def final(self) -> Path:
        return self.root / self.key

    def hit(self) -> Path | None:
        return self.final if self.final.is_dir() else None

    def scratch(self, name: str) -> Path:
        """A hidden work path of this entry; deterministic, so it can be resumed."""
        return self.root / f".{self.key}.{name}"

    def publish(self, staged: Path) -> Path:
        """Atomically give the staged directory its final name."""
        try:
            os.replace(staged, self.final)
        except OSError:
            if self.hit() is None:
                raise
            shutil.rmtree(staged, ignore_errors=True)  # someone else finished first
        return self.final

    def discard(self, keep_partial: bool = False) -> None:
        """Remove this entry's work files (all of them, or all but the resumable download)."""
        for path in self.root.glob(f".{self.key}.*"):
            if keep_partial and path.name.endswith(".part"):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
