"""Run directories: every flow run writes into a directory of its own.

    <output_dir>/<model>/<run id>/      this run's files (engines, reports, the bundle's layout)
    <output_dir>/<model>/latest         symlink to the newest run that completed, passed or failed on a gate
                                        (moved atomically; never to a run still working, or one that crashed)

The run id is the one the store publishes under (`20261201T020000Z-1a2b3c4d`:
the flow run's scheduled start and id), so a local directory and its bundle
carry the same name. The directory is created exclusively: two runs can never
share one, and no file of an earlier run can end up in a later bundle. A
retry of the same flow run (same run id, a later attempt) moves the failed
attempt's directory aside to `.<run id>.attempt-<n>` and starts clean, so
its partial files cannot reach the bundle either.
Expensive outputs live in the step cache and are hard-linked in; ONNX files with external data are
copied, since onnx refuses a hard-linked data file (see `materialize`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from bertbuild.content_cache import default_cache_dir
from bertbuild.step_cache import StepCache

LATEST = "latest"


@dataclass(frozen=True)
class RunContext:
    """Where one run writes, and the cache its steps read and fill."""

    run_id: str
    run_dir: Path
    cache: StepCache

    def path(self, name: str) -> Path:
        return self.run_dir / name


def open_run(output_dir: str | os.PathLike, model: str, run_id: str, *, cache_enabled: bool = True,
             cache_dir: str | None = None, refresh: tuple[str, ...] = (), attempt: int = 1) -> RunContext:
    """Create `<output_dir>/<model>/<run_id>/` (`latest` moves only when the run completes: `mark_complete`).

    On a first attempt the directory must not exist (FileExistsError: another
    run owns it). On a retry (`attempt` > 1) an earlier attempt's directory is
    moved aside first.
    """
    from bertbuild.artifacts.store import check_model, check_run_id

    parent = Path(output_dir).expanduser().resolve() / check_model(model)
    run_dir = parent / check_run_id(run_id)
    parent.mkdir(parents=True, exist_ok=True)
    if attempt > 1 and run_dir.is_dir():
        _set_aside(run_dir)
    run_dir.mkdir()
    cache = StepCache(root=default_cache_dir(cache_dir) if cache_enabled else None, scratch=run_dir / ".scratch",
                      refresh=frozenset(refresh))
    return RunContext(run_id, run_dir, cache)


def mark_complete(run: RunContext) -> bool:
    """The run wrote its results (its gates passed or failed): point `latest` at it, unless `latest` already
    names a newer completed run (run ids sort by start time; a run started earlier may finish later).
    Returns whether `latest` now names this run."""
    parent = run.run_dir.parent
    link = parent / LATEST
    try:
        current = os.readlink(link)
    except OSError:
        current = None
    if current and current != run.run_dir.name and current > run.run_dir.name and (parent / current).is_dir():
        return False
    _point_latest(parent, run.run_dir)
    return True


def check_commit(expected: str) -> None:
    """Refuse to build unless the code running is git commit `expected` (a prefix will do) with no local edits."""
    from bertbuild.artifacts.manifest import git_info
    from bertbuild.errors import UserInputError

    here = git_info()
    if not here["commit"] or not here["commit"].startswith(expected.strip().lower()) or here["dirty"]:
        state = "not a git checkout" if not here["commit"] else \
            f"at {here['commit'][:12]}{' with local edits' if here['dirty'] else ''}"
        raise UserInputError(f"require_commit {expected[:12]}: this worker's code is {state}; update its checkout "
                             f"(git fetch && git checkout {expected[:12]}) before gating that commit")


def _set_aside(run_dir: Path) -> None:
    """Rename a failed attempt's directory to the first free `.<run id>.attempt-<n>` (kept for a post-mortem)."""
    n = 1
    while (aside := run_dir.parent / f".{run_dir.name}.attempt-{n}").exists():
        n += 1
    run_dir.rename(aside)


def _point_latest(parent: Path, run_dir: Path) -> None:
    """Replace the `latest` symlink in one rename, so a reader never sees it missing."""
    link = parent / LATEST
    temporary = parent / f".{LATEST}.{uuid.uuid4().hex[:8]}"
    try:
        temporary.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(temporary, link)
    except OSError:  # no symlinks on this filesystem: the run directory is still printed and recorded
        temporary.unlink(missing_ok=True)


def materialize(files: dict[str, str], run_dir: Path) -> dict[str, str]:
    """Give every bundle file its bundle name inside the run directory; returns bundle name -> that path.

    Exactly the files listed, so the bundle and the run directory can only hold
    what this run produced. A file is hard-linked (no copy of a 1 GB engine per
    run; else copied), but the files of an ONNX model with external data are
    cloned (`_clone`): onnx refuses to read a data file with more than one hard
    link, so a linked pair could be read neither in the run directory nor in
    the step cache the next run reads it from.
    """
    pairs = _onnx_pairs(files)
    placed = {}
    for name, source in sorted(files.items()):
        target = run_dir / name
        if Path(source).resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                target.unlink()
            if Path(source).resolve() in pairs:
                _clone(source, target)
            else:
                try:
                    os.link(source, target)
                except OSError:  # another filesystem, or links not allowed
                    shutil.copyfile(source, target)
        placed[name] = str(target)
    return placed


def _onnx_pairs(files: dict[str, str]) -> set[Path]:
    """Every listed ONNX file that has external data, and its data files (resolved).

    `onnx_files.companions` parses each file once per size and mtime, and a run's bundle has asked it
    about every one of its ONNX files already (`Bundle.add_companions`), so this reads nothing again.
    """
    from bertbuild import onnx_files
    from bertbuild.errors import UserInputError

    found: set[Path] = set()
    for name, source in files.items():
        if name.endswith(".onnx"):
            try:
                pair = onnx_files.companions(source)
            except UserInputError:  # not ONNX (linked as bytes), or a broken pair the bundle's checks report
                continue
            if len(pair) > 1:
                found.update(file.resolve() for file in pair)
    return found


_FICLONE = 0x40049409  # Linux's ioctl that makes `dst` share `src`'s blocks (btrfs, XFS, bcachefs)


def _clone(source: str | Path, target: Path) -> None:
    """Copy `source` to `target`: a reflink (no bytes written, copy-on-write) where the filesystem can, else bytes."""
    try:
        import fcntl

        with open(source, "rb") as src, open(target, "wb") as dst:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
    except (ImportError, OSError):  # ext4, tmpfs, another filesystem, not Linux
        shutil.copyfile(source, target)
