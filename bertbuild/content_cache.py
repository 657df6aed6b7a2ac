"""The one cache on disk: where it lives, and how an entry appears in it, for downloads and steps alike.

    <cache>/<kind>-<slug>-<hash>/        a fetched checkpoint or file (`bertbuild.fetch.acquire`)
    <cache>/steps/<step>/<key>/          a step's output (`bertbuild.step_cache`)
    <cache>/tensorrt/, onnxruntime-tensorrt/   the host's timing caches (`bertbuild.backends`)
    <dir>/.<key>.*                       an entry's work in progress, hidden beside its final name

An entry is named by what it holds, so the name alone says "done" once it exists: it is built under a
hidden work path and made visible by one `os.replace`, so its name never points at partial data. When
two processes build the same entry, the first to finish wins and the other's copy is dropped, unless
the caller asks to replace a stale entry, which is first renamed to a hidden trash name (a rename, so
readers never see it half deleted).

Builds that must not overlap (a download resumes from a fixed work path) hold a lock on the entry's
directory itself (`fcntl.flock` on its descriptor, so no lock file is left behind); it is re-entrant
within a thread, since a checkpoint build converts an HF folder into the same cache.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_HELD = threading.local()  # cache directories this thread holds the lock of


def default_cache_dir(given: str | os.PathLike | None = None) -> Path:
    """`given` if set, else ``$BERTBUILD_CACHE``, else ``~/.cache/bertbuild``."""
    given = given or os.environ.get("BERTBUILD_CACHE")
    return Path(given).expanduser() if given else Path.home() / ".cache" / "bertbuild"


@dataclass(frozen=True)
class CacheEntry:
    root: Path  # the directory the entry lives in
    key: str

    @property
    def final(self) -> Path:
        return self.root / self.key

    def hit(self) -> Path | None:
        return self.final if self.final.is_dir() else None

    def scratch(self, name: str) -> Path:
        """A hidden work path of this entry; deterministic, so a killed build can be resumed."""
        return self.root / f".{self.key}.{name}"

    def fresh_scratch(self, suffix: str) -> Path:
        """A hidden work path of this entry that no other build uses."""
        return self.scratch(f"{uuid.uuid4().hex[:8]}.{suffix}")

    @contextmanager
    def building(self) -> Iterator[None]:
        """Hold the lock of the entry's directory: one build at a time there (other threads and processes wait)."""
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

    def install(self, work: Path, replace: bool = False) -> Path:
        """Atomically give the built `work` directory the final name.

        An entry another process finished first is kept (and `work` dropped), unless `replace`.
        """
        if replace and self.final.exists():
            trash = self.fresh_scratch("old")
            os.replace(self.final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.replace(work, self.final)
        except OSError:
            if self.hit() is None:
                raise
            shutil.rmtree(work, ignore_errors=True)
        return self.final

    def discard(self, keep_partial: bool = False) -> None:
        """Remove this entry's work files (all of them, or all but a resumable ``*.part`` download)."""
        for path in self.root.glob(self.scratch("*").name):
            if keep_partial and path.name.endswith(".part"):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
