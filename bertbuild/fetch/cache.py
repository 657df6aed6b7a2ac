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

Processes that fetch at once (the runs of a fleet on one host, say) take
turns: an entry is built holding a lock on the cache directory itself
(`fcntl.flock` on its descriptor, so no lock file is left behind), so the
work paths, fixed so that a killed download resumes, have one writer, and a
process that waited finds the entry finished and uses it. Finished entries
are read without the lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


_HELD = threading.local()  # cache directories this thread holds the lock of


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

    @contextmanager
    def building(self) -> Iterator[None]:
        """Hold the cache directory's lock while this entry is built: one build at a time per cache.

        Re-entrant within a thread (a checkpoint build converts an HF folder into the same
        cache); other threads and processes wait.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        held = _HELD.__dict__.setdefault("roots", set())
        root = os.path.realpath(self.root)
        if root in held:
            yield
            return
        fd = os.open(root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.add(root)
            yield
        finally:
            held.discard(root)
            os.close(fd)  # releases the lock

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
