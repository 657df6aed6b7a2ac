"""Where released bundles live: a local directory or any fsspec URL.

Layout under the store's root (all paths are `/`-separated)::

    <model>/runs/<run_id>/...          released bundles (visible once manifest.json exists)
    <model>/latest                     pointer file: the run id of the newest passing bundle
    failed/<model>/<run_id>/...        reports of runs whose gates failed
    .staging/<token>/...               uploads in progress (never read by list/download)

A bundle is visible only when its `manifest.json` is present; publishing
writes the manifest last, so readers never see a half-copied bundle. The
store is plain library code: no Prefect, no TensorFlow.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from bertbuild.artifacts.manifest import MANIFEST_NAME, Manifest
from bertbuild.errors import UserInputError
from bertbuild.hashing import sha256_stream

DEFAULT_STORE = "runs/store"
STORE_ENV = "BERTBUILD_STORE"
LATEST_NAME = "latest"
RUNS_DIR = "runs"
FAILED_DIR = "failed"
STAGING_DIR = ".staging"
RESERVED_MODELS = frozenset({FAILED_DIR, STAGING_DIR})

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_TOKEN_TIME = "%Y%m%dT%H%M%SZ"


def default_store() -> str:
    """`$BERTBUILD_STORE` if set, else `runs/store` (relative to the working directory)."""
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


def check_segment(value: str, what: str) -> str:
    """A model name or run id: one safe path segment (letters, digits, `._+-`)."""
    if not isinstance(value, str) or not _SEGMENT.match(value) or value in (".", ".."):
        raise UserInputError(f"invalid {what} {value!r}: use letters, digits and . _ + - (no slashes)")
    return value


def check_model(model: str) -> str:
    check_segment(model, "model name")
    if model in RESERVED_MODELS:
        raise UserInputError(f"invalid model name {model!r}: reserved by the artifact store layout")
    return model


def check_run_id(run_id: str) -> str:
    check_segment(run_id, "run id")
    if run_id == "latest":
        raise UserInputError("invalid run id 'latest': it names the pointer, not a run")
    return run_id


def check_bundle_name(name: str) -> str:
    """A bundle-relative file name: `a/b.onnx`, never absolute, never `..`, never the manifest."""
    parts = name.split("/") if isinstance(name, str) else []
    if (not parts or name.startswith("/") or "\\" in name
            or any(p in ("", ".", "..") for p in parts) or name == MANIFEST_NAME):
        raise UserInputError(f"invalid bundle file name {name!r}: expected a relative path like 'engines/x.plan'")
    return name


def new_token(when: datetime | None = None) -> str:
    """Sortable unique token: UTC time plus 12 random hex digits."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{when.strftime(_TOKEN_TIME)}-{uuid.uuid4().hex[:12]}"


def make_run_id(when: datetime | None = None, flow_run_id: str | None = None) -> str:
    """A run id that sorts by time: `20260102T020000Z-1a2b3c4d` (flow run id prefix, or random)."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    suffix = (flow_run_id or uuid.uuid4().hex).replace("-", "")[:8]
    return f"{when.strftime(_TOKEN_TIME)}-{suffix}"


class ArtifactStore:
    """A bundle store over fsspec: `ArtifactStore("runs/store")`, `ArtifactStore("s3://bucket/bert")`.

    A location without `://` is a local directory (made absolute against the
    current directory). `storage_options` go to fsspec (credentials, endpoints).
    """

    def __init__(self, location: str | os.PathLike | None = None, **storage_options):
        location = os.fspath(location) if location is not None else default_store()
        if "://" in location:
            fs, root = fsspec.core.url_to_fs(location, **storage_options)
        else:
            fs, root = LocalFileSystem(), Path(location).expanduser().resolve().as_posix()
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.location = location
        self.is_local = isinstance(fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- paths -------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.url_of(self.root)

    def url_of(self, path: str) -> str:
        """Full URL of a store path, e.g. `file:///abs/runs/store/m/runs/r` or `s3://b/m/runs/r`."""
        return self.fs.unstrip_protocol(path)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root != "/" else "/" + "/".join(parts)

    def run_path(self, model: str, run_id: str) -> str:
        return self.path(check_model(model), RUNS_DIR, check_run_id(run_id))

    def failed_path(self, model: str, run_id: str) -> str:
        return self.path(FAILED_DIR, check_model(model), check_run_id(run_id))

    def latest_path(self, model: str) -> str:
        return self.path(check_model(model), LATEST_NAME)

    def staging_path(self, token: str) -> str:
        return self.path(STAGING_DIR, check_segment(token, "staging token"))

    # -- primitive file operations -----------------------------------------
    def _mkdir_parent(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
        else:
            try:
                self.fs.makedirs(parent, exist_ok=True)
            except (OSError, NotImplementedError):
                pass  # object stores have no directories

    def upload(self, local: os.PathLike | str, path: str) -> None:
        self._mkdir_parent(path)
        self.fs.put_file(os.fspath(local), path)

    def fetch(self, path: str, local: os.PathLike | str) -> None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        self.fs.get_file(path, os.fspath(local))

    def digest(self, path: str) -> tuple[str, int]:
        """sha256 hex digest and size of a stored file, read back from the store."""
        with self.fs.open(path, "rb") as handle:
            return sha256_stream(handle)

    def move(self, src: str, dst: str) -> None:
        """Move one file. Locally a rename (same filesystem); elsewhere fsspec's move."""
        self._mkdir_parent(dst)
        if self.is_local:
            os.replace(src, dst)
        else:
            self.fs.mv(src, dst)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Readers see the old content or the new, never a mix.

        Locally: write a uniquely named temp file beside `path`, fsync, rename.
        On object stores a single small put is atomic.
        """
        self._mkdir_parent(path)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:
            fd = os.open(os.path.dirname(path), os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def remove_tree(self, path: str) -> None:
        try:
            if self.is_local:
                import shutil

                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.unlink(path)
            else:
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def _names(self, path: str) -> list[str]:
        """Immediate children of a directory (names only), [] if it does not exist."""
        self.fs.invalidate_cache(path)  # object stores cache listings; others ignore this
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        prefix = path.rstrip("/") + "/"
        names = set()
        for entry in entries:
            entry = entry.rstrip("/")
            stripped = self.fs._strip_protocol(entry) if "://" in entry else entry
            if stripped.startswith(prefix):
                names.add(stripped[len(prefix):].split("/")[0])
        return sorted(n for n in names if n)

    def list_files(self, path: str) -> list[str]:
        """Every file under `path`, relative to it (`/`-separated)."""
        self.fs.invalidate_cache(path)
        try:
            found = self.fs.find(path)
        except FileNotFoundError:
            return []
        prefix = path.rstrip("/") + "/"
        out = []
        for entry in found:
            stripped = self.fs._strip_protocol(entry) if "://" in entry else entry
            if stripped.startswith(prefix):
                out.append(stripped[len(prefix):])
        return sorted(out)

    # -- bundles -------------------------------------------------------------
    def models(self) -> list[str]:
        """Model names with at least one released run, failed run or pointer."""
        names = {n for n in self._names(self.root) if n not in RESERVED_MODELS and _SEGMENT.match(n)}
        names.update(n for n in self._names(self.path(FAILED_DIR)) if _SEGMENT.match(n))
        return sorted(names)

    def runs(self, model: str, *, failed: bool = False) -> list[str]:
        """Run ids whose bundle is complete (manifest present), oldest first."""
        base = self.path(FAILED_DIR, check_model(model)) if failed else self.path(check_model(model), RUNS_DIR)
        return [r for r in self._names(base)
                if _SEGMENT.match(r) and r != "latest" and self.exists(f"{base}/{r}/{MANIFEST_NAME}")]

    def bundle_path(self, model: str, run_id: str, *, failed: bool = False) -> str:
        return self.failed_path(model, run_id) if failed else self.run_path(model, run_id)

    def read_manifest_bytes(self, model: str, run_id: str, *, failed: bool = False) -> bytes | None:
        return self.read_bytes(f"{self.bundle_path(model, run_id, failed=failed)}/{MANIFEST_NAME}")

    def read_manifest(self, model: str, run_id: str, *, failed: bool = False):
        """The bundle's `Manifest`, or None if the bundle is absent or incomplete."""
        data = self.read_manifest_bytes(model, run_id, failed=failed)
        return None if data is None else Manifest.from_json(data.decode())

    def latest(self, model: str) -> str | None:
        """The run id the `latest` pointer names, or None if there is no pointer."""
        data = self.read_bytes(self.latest_path(model))
        if data is None:
            return None
        run_id = data.decode(errors="replace").strip()
        return run_id if _SEGMENT.match(run_id) else None

    def set_latest(self, model: str, run_id: str) -> None:
        self.write_atomic(self.latest_path(model), (check_run_id(run_id) + "\n").encode())

    def prune_staging(self, max_age_s: float = 24 * 3600, now: datetime | None = None) -> list[str]:
        """Remove staging dirs older than `max_age_s` (left by killed publishes); returns their tokens.

        The age comes from the token's own timestamp, so it works on object
        stores without modification times. Younger ones may belong to a
        publish in progress and are kept.
        """
        now = now or datetime.now(timezone.utc)
        removed = []
        for token in self._names(self.path(STAGING_DIR)):
            try:
                born = datetime.strptime(token.split("-", 1)[0], _TOKEN_TIME).replace(tzinfo=timezone.utc)
            except ValueError:
                continue
            if (now - born).total_seconds() > max_age_s:
                self.remove_tree(self.path(STAGING_DIR, token))
                removed.append(token)
        return removed


def as_store(store: ArtifactStore | str | os.PathLike | None) -> ArtifactStore:
    return store if isinstance(store, ArtifactStore) else ArtifactStore(store)
