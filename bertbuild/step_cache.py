"""A content-keyed cache for the expensive steps of a build: a step reruns only when what it reads changed.

The key of a step is the sha256 of:
- the step's name and its code version: the bytes of every module of this package that the
  step's declared modules can import, followed transitively (`bertbuild.code_closure`), so no
  list kept by hand can leave a dependency out; and the source of the module that wires the
  step (its task), that file alone: its imports of the run, the config and Prefect shape no output,
- the versions of the libraries the step names (`bertbuild.steps.CachedStep.libraries`): an
  upgrade of Prefect or of a reporting library recomputes no export,
- the sha256 of every input file (a directory: every file in it; an ONNX file with
  external data: its data files too, since the .onnx only records where the weights are),
- the config fields the step reads,
- the host kind (CPU model, cores, GPUs) for steps whose output depends on the machine
  (engines and timings).

An entry is a directory `<root>/steps/<step>/<key>/` holding the files the step
wrote and `result.json`, the small dict the step returned, with its paths stored
relative to the entry. An entry is built hidden and renamed into place like every
entry of the cache (`bertbuild.content_cache`), so it is complete or absent; two runs
computing the same entry at once both succeed and one copy is kept. A hit whose files
(or the external data files of its ONNX files) have gone missing is recomputed.

Run directories hard-link an entry's files (no copy of a 1 GB engine per run;
an ONNX file with external data and its data files are copied instead, since
onnx refuses a hard-linked data file: `runs.materialize`), so a file edited in
a run directory is edited in the entry too. Every entry
therefore records the sha256 of each of its files (`digests.json`), and a hit
re-hashes them: an entry whose bytes changed is no hit and is rebuilt. One
sha256 pass over a hit's files is far cheaper than copying them into every
run directory (measured in the issue #23 note), and it also catches a disk
that flipped a bit.

Why not Prefect's own task caching: it would cache the returned dict of paths,
and has no way to know the files behind them were deleted or changed; and the
files have to outlive any one run directory, because every run gets a fresh one.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from bertbuild.content_cache import CacheEntry
from bertbuild.hashing import sha256_bytes, sha256_file

RESULT_FILE = "result.json"
DIGESTS_FILE = "digests.json"  # entry-relative path -> sha256 of every file the step wrote
_PATH_PREFIX = "@entry/"  # marks a stored path as relative to its entry


def code_version(modules: Iterable[ModuleType | str], wiring: Iterable[ModuleType | str] = ()) -> str:
    """sha256 over every source file the modules can import from their package, and the `wiring` modules'
    own files (each named by its path in the package, so a moved file counts): editing any of them
    invalidates the step's entries."""
    from bertbuild.code_closure import source_closure

    def loaded(module):
        return importlib.import_module(module) if isinstance(module, str) else module

    files = sorted(set(source_closure(loaded(m) for m in modules))
                   | {Path(loaded(m).__file__).resolve() for m in wiring})
    root = Path(__file__).resolve().parent.parent
    parts = [f"{p.relative_to(root) if p.is_relative_to(root) else p}".encode() + b"\0" + p.read_bytes() for p in files]
    return sha256_bytes(b"\0\0".join(parts))


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def _one_file(path: Path) -> str:
    info = path.stat()
    return _file_digest(str(path.resolve()), info.st_size, info.st_mtime_ns)


def onnx_pair(path: Path | str) -> tuple[Path, ...]:
    """`path`, plus its external data files when it is an ONNX file that has them (UserInputError if one is gone).

    A file named .onnx that is not ONNX is hashed as bytes: a pair of one.
    """
    from bertbuild import onnx_files

    path = Path(path)
    if path.suffix != ".onnx":
        return (path,)
    try:
        return tuple(onnx_files.companions(path))
    except onnx_files.NotOnnxError:
        return (path,)


def input_digest(path: Path | str) -> str:
    """sha256 of a file, or of a directory's files with their relative names (memoized per size and mtime).

    An ONNX file with external data: sha256 over it and its data files (`onnx_files.files_digest`).
    """
    path = Path(path)
    if path.is_dir():
        parts = [f"{p.relative_to(path).as_posix()}:{input_digest(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return sha256_bytes("\n".join(parts).encode())
    if len(onnx_pair(path)) > 1:
        from bertbuild import onnx_files

        return onnx_files.files_digest(path, _one_file)
    return _one_file(path)


def step_key(step: str, *, files: Iterable[Path | str] = (), fields: Any = None,
             modules: Iterable[ModuleType | str] = (), wiring: Iterable[ModuleType | str] = (),
             libraries: Iterable[str] = (), host: bool = False) -> str:
    """The one key function: see the module docstring for what goes in.

    `modules`: the modules the step's work runs (each brings every module of the package it can import);
    `wiring`: modules counted by their own source only; `libraries`: keys of `bertbuild.host.PACKAGES`.
    """
    from bertbuild.host import library_version

    record = {
        "step": step, "code": code_version(modules, wiring),
        "libraries": {name: library_version(name) for name in sorted(set(libraries))},
        "inputs": [input_digest(f) for f in files], "fields": fields, "host": _this_host() if host else None,
    }
    return sha256_bytes(json.dumps(record, sort_keys=True, default=str).encode())


def _this_host() -> dict:
    """What makes an engine or a timing belong to this kind of machine (`bertbuild.host.host_kind`)."""
    from bertbuild.host import hardware, host_kind

    return host_kind(hardware())


def _relativize(value: Any, entry: Path) -> Any:
    if isinstance(value, dict):
        return {k: _relativize(v, entry) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relativize(v, entry) for v in value]
    if isinstance(value, str) and value.startswith(str(entry) + os.sep):
        return _PATH_PREFIX + Path(value).relative_to(entry).as_posix()
    return value


def _absolutize(value: Any, entry: Path) -> Any:
    if isinstance(value, dict):
        return {k: _absolutize(v, entry) for k, v in value.items()}
    if isinstance(value, list):
        return [_absolutize(v, entry) for v in value]
    if isinstance(value, str) and value.startswith(_PATH_PREFIX):
        return str(entry / value[len(_PATH_PREFIX):])
    return value


def _stored_paths(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [p for v in value.values() for p in _stored_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _stored_paths(v)]
    return [value[len(_PATH_PREFIX):]] if isinstance(value, str) and value.startswith(_PATH_PREFIX) else []


def _entry_files(entry: Path) -> list[Path]:
    return sorted(p for p in entry.rglob("*") if p.is_file() and p.name not in (RESULT_FILE, DIGESTS_FILE))


def _write_digests(entry: Path) -> None:
    digests = {p.relative_to(entry).as_posix(): sha256_file(p) for p in _entry_files(entry)}
    (entry / DIGESTS_FILE).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


def _intact(entry: Path) -> bool:
    """Every file the step wrote is there with the bytes it had (and nothing was added)."""
    try:
        recorded = json.loads((entry / DIGESTS_FILE).read_text())
    except (OSError, ValueError):
        return False
    present = {p.relative_to(entry).as_posix(): p for p in _entry_files(entry)}
    if set(present) != set(recorded):
        return False
    return all(_one_file(path) == recorded[name] for name, path in present.items())


def _complete(entry: Path) -> dict | None:
    """An entry's result (paths made absolute) if its result and every file it names are there, unchanged."""
    try:
        stored = json.loads((entry / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not all((entry / rel).is_file() for rel in _stored_paths(stored)):
        return None
    if not _intact(entry):
        return None
    from bertbuild.errors import UserInputError

    try:  # an ONNX file whose data file went missing (or moved) is no hit
        for rel in _stored_paths(stored):
            onnx_pair(entry / rel)
    except UserInputError:
        return None
    return _absolutize(stored, entry) | {"cached": True}


@dataclass(frozen=True)
class StepCache:
    """Where entries live, and which steps must recompute.

    `root=None` turns caching off (`--no-cache`): each step then writes into
    `scratch/<step>-<random>/` inside the run directory and nothing is reused.
    """

    root: Path | None
    scratch: Path
    refresh: frozenset[str] = field(default_factory=frozenset)

    def entry(self, step: str, key: str) -> CacheEntry | None:
        return None if self.root is None else CacheEntry(self.root / "steps" / step, key)

    def lookup(self, step: str, key: str) -> dict | None:
        """The stored result of a complete entry whose files are all present (None under a refresh)."""
        entry = self.entry(step, key)
        if entry is None or step in self.refresh:
            return None
        return _complete(entry.final)

    def run(self, step: str, key: str, produce: Callable[[Path], dict]) -> dict:
        """`produce(out_dir)` writes its files under `out_dir` and returns a JSON-able dict (paths as strings)."""
        if (hit := self.lookup(step, key)) is not None:
            return hit
        entry = self.entry(step, key)
        if entry is None:
            out = self.scratch / f"{step}-{uuid.uuid4().hex[:8]}"
            out.mkdir(parents=True)
            return produce(out) | {"cached": False}
        work = entry.fresh_scratch("tmp")
        work.mkdir(parents=True)
        from bertbuild.interrupts import stop_if_interrupted, writing

        try:
            with writing(work):  # an interrupted command removes it (bertbuild/interrupts.py)
                result = produce(work)
                stop_if_interrupted()  # interrupted: no entry from a step whose children were stopped mid-way
                _write_digests(work)
                (work / RESULT_FILE).write_text(json.dumps(_relativize(result, work), indent=1, default=str) + "\n")
                # A refresh replaces the entry; so does a run finding one whose files went missing.
                stale = step in self.refresh or (entry.final.exists() and not _complete(entry.final))
                final = entry.install(work, replace=stale)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return _absolutize(json.loads((final / RESULT_FILE).read_text()), final) | {"cached": False}
