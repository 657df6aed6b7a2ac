"""Where released bundles live: a local directory or any fsspec URL (`s3://bucket/prefix`, ...).

Layout under the store's root (all paths are `/`-separated)::

    blobs/sha256/<hex[:2]>/<hex>             every file's bytes, once, named by their sha256
    <model>/runs/<run_id>/manifest.json      a released bundle: name -> sha256 and size of its files
    <model>/latest                           pointer file: the run id of the newest passing bundle
    failed/<model>/<run_id>/manifest.json    reports of runs whose gates failed (their bytes are blobs too)
    .staging/<token>/pending.json            what a publish in progress will reference (prune keeps it)
    .staging/<token>/blobs/<hex>             its uploads, read back and checked before they become blobs
    .pruning/<token>                         a prune in progress (publishes wait until it is gone)

Identical files across runs and models are stored once. A bundle is visible
only when its `manifest.json` is present; publishing writes the manifest
last, after every blob it lists, so readers never see a half-copied bundle,
and a blob appears under its hash name only once its bytes are complete.
Bundles of schema 1 (older bertbuild) keep their files beside the manifest
instead; they are still read. The store is plain library code: no Prefect,
no TensorFlow.

Nothing here needs a rename, which object stores do not have. Every object
is written whole by one call (a PUT on S3, a temporary file renamed on a
disk), so a reader sees all of it or none:

* blobs and manifests are immutable. A blob's name is its content, so two
  writers of one blob write the same bytes; a manifest is created once
  (`create_once`: exclusive on a disk and on S3, `If-None-Match`) and a
  second publish of its run must list the very same files;
* `latest` is one small object replaced whole, and only by a publish whose
  manifest and every blob it lists are stored and checked (see `publish`).
  Two publishes at once both finish complete bundles and the pointer ends on
  whichever wrote it last: it never names a partial bundle, because no
  bundle is partial by the time it is named, and a prune keeps both the run
  the pointer names and every run a publish in progress has announced
  (`handshake`). A reader follows the pointer to a manifest and checks it.

Object stores have no directories and fsspec caches their listings;
`filesystems` opens them so that another process's writes are seen at once.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from fsspec.implementations.local import LocalFileSystem

from bertbuild.artifacts.filesystems import OBJECT_STORES, check_object_store, open_filesystem
from bertbuild.artifacts.manifest import MANIFEST_NAME, Manifest
from bertbuild.artifacts.names import bundle_name_problem, is_sha256
from bertbuild.errors import IntegrityError, StoreUnavailable, UserInputError
from bertbuild.hashing import sha256_stream

DEFAULT_STORE = "runs/store"
STORE_ENV = "BERTBUILD_STORE"
LATEST_NAME = "latest"
RUNS_DIR = "runs"
FAILED_DIR = "failed"
BLOBS_ROOT = "blobs"
BLOBS_DIR = f"{BLOBS_ROOT}/sha256"
STAGING_DIR = ".staging"
PRUNING_DIR = ".pruning"
RESERVED_MODELS = frozenset({FAILED_DIR, BLOBS_ROOT, STAGING_DIR, PRUNING_DIR})

STAGING_MAX_AGE_S = 24 * 3600  # a publish older than this was killed; its staging dir may go

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
    """A bundle-relative file name given to publish: `a/b.onnx` (see `names.bundle_name_problem`)."""
    problem = bundle_name_problem(name)
    if problem:
        raise UserInputError(f"invalid bundle file name {name!r}: it {problem}; "
                             f"expected a relative path like 'engines/x.plan'")
    return name


def new_token(when: datetime | None = None) -> str:
    """Sortable unique token: UTC time plus 12 random hex digits."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{when.strftime(_TOKEN_TIME)}-{uuid.uuid4().hex[:12]}"


def token_time(token: str) -> datetime | None:
    """When a `new_token` was made, or None if `token` is not one."""
    try:
        return datetime.strptime(token.split("-", 1)[0], _TOKEN_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def make_run_id(when: datetime | None = None, flow_run_id: str | None = None) -> str:
    """A run id that sorts by time: `20260102T020000Z-1a2b3c4d` (flow run id prefix, or random)."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    suffix = (flow_run_id or uuid.uuid4().hex).replace("-", "")[:8]
    return f"{when.strftime(_TOKEN_TIME)}-{suffix}"


class ArtifactStore:
    """A bundle store over fsspec: `ArtifactStore("runs/store")`, `ArtifactStore("s3://bucket/bert")`.

    A location without `://` is a local directory (made absolute against the
    current directory). `storage_options` go to fsspec (credentials, endpoints).
    Opening one does no I/O; `check` asks an object store whether its bucket
    is there.
    """

    def __init__(self, location: str | os.PathLike | None = None, **storage_options):
        location = os.fspath(location) if location is not None else default_store()
        if "://" in location:
            fs, root = open_filesystem(location, storage_options)
        elif storage_options:
            raise UserInputError(f"storage options ({', '.join(sorted(storage_options))}) are for a URL store "
                                 f"(s3://bucket/prefix), not the local directory {location}")
        else:
            fs, root = LocalFileSystem(), Path(location).expanduser().resolve().as_posix()
            if Path(root).exists() and not Path(root).is_dir():
                raise StoreUnavailable(f"{location} is not an artifact store: it is a file, not a directory "
                                       "(name a directory or a URL such as s3://bucket/prefix)")
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.location = location
        self.is_local = isinstance(fs, LocalFileSystem)
        protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
        self.is_object_store = bool(protocols & OBJECT_STORES)
        self._checked = self.is_local or not self.is_object_store

    def check(self) -> "ArtifactStore":
        """Fail with one line now, not mid-publish, if the store's bucket is missing or its endpoint is down.

        A local store needs nothing: its directory is made by the first publish.
        """
        if not self._checked:
            check_object_store(self.fs, self.root, self.url)
            self._checked = True
        return self

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

    def blob_path(self, digest: str) -> str:
        """Where the bytes whose sha256 is `digest` are kept."""
        if not is_sha256(digest):
            raise IntegrityError(f"not a sha256 digest: {digest!r}")
        return self.path(BLOBS_DIR, digest[:2], digest)

    def content_path(self, bundle: str, manifest: Manifest, name: str) -> str:
        """Where the bytes of `name` (listed in `manifest`, the bundle at `bundle`) are read from."""
        if manifest.content_addressed:
            return self.blob_path(manifest.files[name]["sha256"])
        return f"{bundle}/{name}"

    # -- primitive file operations -----------------------------------------
    def _mkdir_parent(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
        elif not self.is_object_store:  # s3fs's makedirs would create a missing bucket, not fail
            try:
                self.fs.makedirs(parent, exist_ok=True)
            except (OSError, NotImplementedError):
                pass

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
        """Move one file. Locally a rename (same filesystem); elsewhere a copy, then the source removed.

        On S3 the copy is one server-side CopyObject: `dst` appears whole or not
        at all. (`fs.mv` would also list both paths as possible directories.)
        """
        self._mkdir_parent(dst)
        if self.is_local:
            os.replace(src, dst)
        else:
            self.fs.cp_file(src, dst)
            self.fs.rm_file(src)

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)  # another process may have written it since a listing was cached
        return self.fs.exists(path)

    def stored_size(self, path: str) -> int | None:
        """Size in bytes of a stored file, None if there is none."""
        self.fs.invalidate_cache(path)
        try:
            return int(self.fs.size(path))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_atomic(self, path: str, data: bytes) -> None:
        """Readers see the old content or the new, never a mix.

        Locally: write a uniquely named temp file beside `path`, fsync, rename.
        On object stores one put is atomic (a multipart upload too: the object
        appears when it completes).
        """
        self._mkdir_parent(path)
        if not self.is_local:
            self.fs.pipe_file(path, data)
            return
        with _local_temp(path, data) as tmp:
            os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))

    def create_once(self, path: str, data: bytes) -> bool:
        """Write `path` only if it does not exist yet; False (and nothing written) if it did.

        Exclusive on a disk (a complete temp file hard-linked into place, which
        fails if `path` exists) and on S3 (a conditional PUT, `If-None-Match: *`).
        fsspec's other filesystems, and a disk without hard links, check and
        then write: two writers at the very same moment may both write, so
        callers read the object back.
        """
        self._mkdir_parent(path)
        if not self.is_local:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                return False
            except (OSError, NotImplementedError, TypeError) as exc:
                # A server (or fsspec filesystem) without conditional writes refuses the
                # request as not implemented or invalid: check, then write, as elsewhere.
                if isinstance(exc, OSError) and exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                if self.exists(path):
                    return False
                self.fs.pipe_file(path, data)
            return True
        with _local_temp(path, data) as tmp:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # no hard links here
                if os.path.exists(path):
                    return False
                os.replace(tmp, path)
        _fsync_dir(os.path.dirname(path))
        return True

    def remove_tree(self, path: str) -> None:
        try:
            if self.is_local:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.unlink(path)
            else:
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def children(self, path: str) -> list[str]:
        """Immediate children of a directory (names only), [] if it does not exist."""
        self.fs.invalidate_cache(path)  # object stores cache listings; others ignore this
        try:
            entries = self.fs.ls(path, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        names = {rel.split("/")[0] for entry in entries if (rel := self._relative(entry.rstrip("/"), path))}
        return sorted(names - {""})

    def file_sizes(self, path: str) -> dict[str, int]:
        """Every file under `path`, relative to it (`/`-separated), with its size in bytes."""
        self.fs.invalidate_cache(path)
        try:
            found = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        sizes = {rel: int(info.get("size") or 0) for entry, info in found.items()
                 if (rel := self._relative(entry, path)) is not None}
        return dict(sorted(sizes.items()))

    def _relative(self, entry: str, path: str) -> str | None:
        """A listed `entry` (with or without its protocol) relative to the directory `path`; None if not under it."""
        stripped = self.fs._strip_protocol(entry) if "://" in entry else entry
        prefix = path.rstrip("/") + "/"
        return stripped[len(prefix):] if stripped.startswith(prefix) else None

    def list_files(self, path: str) -> list[str]:
        """Every file under `path`, relative to it (`/`-separated)."""
        return list(self.file_sizes(path))

    def blobs(self) -> dict[str, int]:
        """Every stored blob: sha256 -> size. Files that are not named like a blob are left out (and alone)."""
        found = {}
        for relative, size in self.file_sizes(self.path(BLOBS_DIR)).items():
            digest = relative.rsplit("/", 1)[-1]
            if is_sha256(digest) and relative == f"{digest[:2]}/{digest}":
                found[digest] = size
        return found

    # -- bundles -------------------------------------------------------------
    def models(self) -> list[str]:
        """Model names with at least one released run, failed run or pointer."""
        names = {n for n in self.children(self.root) if n not in RESERVED_MODELS and _SEGMENT.match(n)}
        names.update(n for n in self.children(self.path(FAILED_DIR)) if _SEGMENT.match(n))
        return sorted(names)

    def runs(self, model: str, *, failed: bool = False) -> list[str]:
        """Run ids whose bundle is complete (manifest present), oldest first."""
        base = self.path(FAILED_DIR, check_model(model)) if failed else self.path(check_model(model), RUNS_DIR)
        return [r for r in self.children(base)
                if _SEGMENT.match(r) and r != "latest" and self.exists(f"{base}/{r}/{MANIFEST_NAME}")]

    def bundle_path(self, model: str, run_id: str, *, failed: bool = False) -> str:
        return self.failed_path(model, run_id) if failed else self.run_path(model, run_id)

    def read_manifest_bytes(self, model: str, run_id: str, *, failed: bool = False) -> bytes | None:
        return self.read_bytes(f"{self.bundle_path(model, run_id, failed=failed)}/{MANIFEST_NAME}")

    def read_manifest(self, model: str, run_id: str, *, failed: bool = False) -> Manifest | None:
        """The bundle's `Manifest`, or None if the bundle is absent or incomplete.

        Raises `IntegrityError` if it is not a valid manifest of that very run.
        """
        data = self.read_manifest_bytes(model, run_id, failed=failed)
        return None if data is None else parse_manifest(data, model, run_id)

    def latest(self, model: str) -> str | None:
        """The run id the `latest` pointer names, or None if there is no pointer."""
        data = self.read_bytes(self.latest_path(model))
        if data is None:
            return None
        run_id = data.decode(errors="replace").strip()
        return run_id if _SEGMENT.match(run_id) else None

    def set_latest(self, model: str, run_id: str) -> None:
        self.write_atomic(self.latest_path(model), (check_run_id(run_id) + "\n").encode())

    def tokens(self, directory: str, max_age_s: float, now: datetime | None = None, *, stale: bool) -> list[str]:
        """Tokens in `directory` (`STAGING_DIR`, `PRUNING_DIR`) older than `max_age_s` (`stale=True`: left by
        killed publishes or prunes) or not.

        The age comes from the token's own timestamp, so it works on object
        stores without modification times. Unparseable names count as neither.
        """
        now = now or datetime.now(timezone.utc)
        return [token for token in self.children(self.path(directory))
                if (born := token_time(token)) is not None and ((now - born).total_seconds() > max_age_s) == stale]

    def prune_staging(self, max_age_s: float = STAGING_MAX_AGE_S, now: datetime | None = None) -> list[str]:
        """Remove staging dirs older than `max_age_s` (left by killed publishes); returns their tokens.

        Younger ones may belong to a publish in progress and are kept.
        """
        removed = self.tokens(STAGING_DIR, max_age_s, now, stale=True)
        for token in removed:
            self.remove_tree(self.path(STAGING_DIR, token))
        return removed


@contextmanager
def _local_temp(path: str, data: bytes) -> Iterator[str]:
    """A complete, fsynced, uniquely named file beside `path`, removed afterwards unless renamed away."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(directory: str) -> None:
    """Make a rename or link in `directory` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_manifest(data: bytes, model: str, run_id: str) -> Manifest:
    """Untrusted manifest bytes read from `<model>/.../<run_id>/`: valid, and about that run."""
    manifest = Manifest.from_json(data)
    if manifest.model != model or manifest.run_id != run_id:
        raise IntegrityError(f"manifest.json of run {run_id} of {model} describes run {manifest.run_id!r} "
                             f"of {manifest.model!r}")
    return manifest


def as_store(store: ArtifactStore | str | os.PathLike | None, storage_options: dict | None = None) -> ArtifactStore:
    """`store` itself, or the store at that location (opened with `storage_options`), checked (`check`)."""
    if not isinstance(store, ArtifactStore):
        store = ArtifactStore(store, **(storage_options or {}))
    return store.check()
