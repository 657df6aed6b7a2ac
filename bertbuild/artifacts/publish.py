"""Publish a run's bundle to an `ArtifactStore`, atomically, storing each distinct file once.

1. announce the run and the digests its manifest will list (`handshake`),
   so a prune running meanwhile keeps them, and wait for any prune already
   running;
2. copy each file whose blob is not stored yet into `.staging/<token>/blobs/`;
3. read each copy back from the store and check its sha256 and size;
4. move the copies to `blobs/sha256/<hex[:2]>/<hex>` (a blob is visible
   under its hash name only once complete);
5. create `<model>/runs/<run_id>/manifest.json` (or `failed/<model>/<run_id>/`)
   LAST, once: until it exists the bundle is invisible, and it is never
   rewritten;
6. only if every gate passed: read the manifest back, check that every blob
   it lists is stored with its size, and only then point `<model>/latest` at
   the run (one whole-object write; no rename, which S3 does not have);
7. drop the announcement.

A second run whose files are identical uploads nothing but its manifest. A
run killed anywhere before step 5 leaves no visible bundle (at most a staging
dir, pruned after a day, and blobs no manifest names, which `prune`
removes). A failed run publishes only its reports, under `failed/`, and never
moves `latest`.

Concurrent publishes do not interfere: each has its own staging dir, two
uploads of one blob write the same bytes, each manifest is created once (two
publishes of one run id must list the same files, else `RunConflict`), and
`latest` is only ever written with a run already complete and checked, so it
always names a complete bundle; of two publishes at once it ends on the one
that wrote it last. `PublishResult.latest` says whether it named this run
when read back right after the write. Blobs already stored are checked by
size only; every download checks sha256.

An ONNX file with external data is published only together with its data
files, each under the name the .onnx records, beside it (`onnx_files.onnx_companions`
adds them): a bundle whose ONNX file would not load after a download is refused.
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bertbuild.artifacts.handshake import announce_publish, wait_for_prunes
from bertbuild.artifacts.manifest import MANIFEST_NAME, Manifest, build_manifest, is_report
from bertbuild.artifacts.names import name_set_problem
from bertbuild.artifacts.store import (STAGING_MAX_AGE_S, ArtifactStore, as_store, check_bundle_name, check_model,
                                       check_run_id, new_token)
from bertbuild.errors import IntegrityError, OutOfSpace, RunConflict, UserInputError
from bertbuild.evaluation.gates import GateResult
from bertbuild.interrupts import stop_if_interrupted

# hook(step, name) is called before each step: "stage", "verify", "release" (per file
# whose blob is uploaded), "manifest", "latest". Tests raise from it to simulate a
# run killed mid-publish.
Hook = Callable[[str, str], None]


@dataclass(frozen=True)
class PublishResult:
    model: str
    run_id: str
    passed: bool  # every gate passed
    released: bool  # published under <model>/runs/ (False: under failed/)
    latest: bool  # the `latest` pointer now names this run
    path: str  # the bundle's directory (holding manifest.json) inside the store's filesystem
    url: str  # the same as a URL (file://, s3://, memory://, ...)
    store: str  # the store's URL
    files: dict = field(default_factory=dict)  # name -> {"sha256", "size"}
    gates: list[GateResult] = field(default_factory=list)
    uploaded_bytes: int = 0  # bytes of new blobs this publish stored (0: every file was already there)

    def to_dict(self) -> dict:
        return asdict(self)


def publish_bundle(store: ArtifactStore | str, model: str, run_id: str, files: dict[str, Path | str],
                   meta: dict | None, gates: list[GateResult], passed: bool, *,
                   precisions: dict[str, str] | None = None, hook: Hook | None = None,
                   prune_after_s: float = STAGING_MAX_AGE_S, storage_options: dict | None = None) -> PublishResult:
    """Publish `files` (bundle-relative name -> local file) as run `run_id` of `model`.

    `passed` and every gate's `passed` must be true for a release; otherwise
    only the report files (json, md, png, ...) go under `failed/`. Publishing
    the same run again with identical files is a no-op (safe to retry); with
    different files it raises `RunConflict`. `storage_options` (credentials,
    endpoint) open `store` when it is a location, not an `ArtifactStore`.
    """
    store = as_store(store, storage_options)
    check_model(model)
    check_run_id(run_id)
    gates = list(gates or [])
    hook = hook or (lambda step, name: None)
    for name in files:
        check_bundle_name(name)
    clash = name_set_problem(files)
    if clash:  # a manifest that downloads would refuse
        raise UserInputError(f"publish: bundle file names collide: {clash}")
    ok = bool(passed) and all(g.passed for g in gates)
    if not ok:
        files = {name: path for name, path in files.items() if is_report(name)}
    local = {name: Path(path) for name, path in files.items()}
    for name, path in local.items():
        if not path.is_file():
            raise UserInputError(f"publish: {name}: {path} is not a file")
    _check_onnx_pairs(local)

    manifest = build_manifest(local, model=model, run_id=run_id, passed=ok, gates=gates, meta=meta,
                              precisions=precisions)
    dest = store.run_path(model, run_id) if ok else store.failed_path(model, run_id)
    try:
        store.prune_staging(prune_after_s)
    except OSError:
        pass  # housekeeping only
    token = new_token()
    staging = store.staging_path(token)
    uploaded, moved = 0, False
    try:
        announce_publish(store, token, (entry["sha256"] for entry in manifest.files.values()),
                         run=(model, run_id, not ok))
        wait_for_prunes(store)  # a prune that missed our announcement may be deleting right now
        existing = store.read_bytes(f"{dest}/{MANIFEST_NAME}")
        if existing is not None:
            _same_files_or_conflict(store, existing, manifest, dest)
        else:
            uploaded = _store_blobs_then_manifest(store, local, manifest, dest, staging, hook)
        if ok:
            _check_release(store, manifest, dest)
            stop_if_interrupted()
            hook("latest", model)
            store.set_latest(model, run_id)
            moved = store.latest(model) == run_id  # another publish may have written it since
    except OSError as exc:
        if exc.errno not in FULL:
            raise
        # Nothing half-written is visible: blobs appear by rename once complete, the manifest and
        # `latest` by a link/rename of a complete temp file; the staging copies go below.
        raise OutOfSpace(_out_of_space(store, exc, staging, dest)) from None
    finally:
        # Best effort: a killed process skips this, and its pending list keeps
        # protecting its run and blobs until the staging dir is pruned. It must not mask the real error.
        with suppress(Exception):
            store.remove_tree(staging)
    return PublishResult(model=model, run_id=run_id, passed=ok, released=ok, latest=moved, path=dest,
                         url=store.url_of(dest), store=store.url, files=manifest.files, gates=manifest.gates,
                         uploaded_bytes=uploaded)


FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def _out_of_space(store: ArtifactStore, exc: OSError, staging: str, dest: str) -> str:
    """One line: which path filled up, how much space is left there, and that nothing was published."""
    path = exc.filename or staging
    free = ""
    if store.is_local:
        probe = Path(path)
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        try:
            free = f" ({human_size(shutil.disk_usage(probe).free)} free there)"
        except OSError:
            pass
    what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on device"
    return (f"publish: {what} writing {path}{free}; nothing was published to {store.url_of(dest)} "
            "(the partial copies were removed): free space in the store and run again")


def human_size(n: float) -> str:
    """A byte count for people: '512 B', '3.4 MiB' (binary units, as the free-space and store listings show)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} B"


def _same_files_or_conflict(store: ArtifactStore, existing: bytes, manifest: Manifest, dest: str) -> None:
    """A run already published (a retry, or a publish of the same run at the same moment) must list the same files."""
    if Manifest.from_json(existing).files != manifest.files:
        raise RunConflict(f"run {manifest.run_id} of {manifest.model} is already published at "
                          f"{store.url_of(dest)} with different files; publish under a new run id")


def _check_release(store: ArtifactStore, manifest: Manifest, dest: str) -> None:
    """Before `latest` may name the run: its manifest reads back as ours and every blob it lists is stored."""
    stored = store.read_bytes(f"{dest}/{MANIFEST_NAME}")
    if stored is None:
        raise IntegrityError(f"publish: {store.url_of(dest)}/{MANIFEST_NAME} vanished before 'latest' could "
                             "name it; latest was not moved")
    _same_files_or_conflict(store, stored, manifest, dest)
    for name, entry in sorted(manifest.files.items()):
        if store.stored_size(store.blob_path(entry["sha256"])) != entry["size"]:
            raise IntegrityError(f"publish: the blob of {name} is missing or incomplete in {store.url}; "
                                 "latest was not moved")


def _check_onnx_pairs(local: dict[str, Path]) -> None:
    """Every ONNX file's external data is in the bundle, beside it, under the name the .onnx records."""
    from bertbuild import onnx_files

    for name, path in local.items():
        if not name.endswith(".onnx"):
            continue
        try:
            pair = onnx_files.companions(path)
        except onnx_files.NotOnnxError:  # the name is not a promise: such a file is published as bytes
            continue
        except UserInputError as exc:
            raise UserInputError(f"publish: {name}: {exc}") from None
        folder = name.rpartition("/")[0]
        for data in pair[1:]:
            data_name = f"{folder}/{data.name}" if folder else data.name
            listed = local.get(data_name)
            if listed is None or not (os.path.samefile(listed, data) or filecmp.cmp(listed, data, shallow=False)):
                raise UserInputError(f"publish: {name} keeps its weights in {data.name}, but the bundle has "
                                     f"{'no ' + data_name if listed is None else 'another file as ' + data_name}")


def _store_blobs_then_manifest(store: ArtifactStore, local: dict[str, Path], manifest: Manifest, dest: str,
                               staging: str, hook: Hook) -> int:
    """Upload the blobs the store lacks via `staging`, then create the manifest; returns the bytes uploaded."""
    missing = _missing_blobs(store, manifest)  # digest -> first name with that content
    for digest, name in missing.items():
        hook("stage", name)
        store.upload(local[name], f"{staging}/blobs/{digest}")
    for digest, name in missing.items():
        hook("verify", name)
        try:
            manifest.check(name, *store.digest(f"{staging}/blobs/{digest}"))
        except IntegrityError as exc:
            raise IntegrityError(f"publish: staged copy differs from the local file: {exc}") from None
    for digest, name in missing.items():
        hook("release", name)
        store.move(f"{staging}/blobs/{digest}", store.blob_path(digest))
    stop_if_interrupted()  # Ctrl-C/SIGTERM during the upload: no manifest, so no bundle (bertbuild/interrupts.py)
    hook("manifest", MANIFEST_NAME)
    data = manifest.to_json().encode()
    if not store.create_once(f"{dest}/{MANIFEST_NAME}", data):  # the same run, published meanwhile
        existing = store.read_bytes(f"{dest}/{MANIFEST_NAME}")
        _same_files_or_conflict(store, existing if existing is not None else data, manifest, dest)
    return sum(manifest.files[name]["size"] for name in missing.values())


def _missing_blobs(store: ArtifactStore, manifest: Manifest) -> dict[str, str]:
    """Digests (-> one bundle name with that content) that have no complete blob in the store yet."""
    missing: dict[str, str] = {}
    seen: set[str] = set()
    for name, entry in manifest.files.items():
        digest = entry["sha256"]
        if digest not in seen and store.stored_size(store.blob_path(digest)) != entry["size"]:
            missing[digest] = name
        seen.add(digest)
    return missing


# -- the numbers the run report plots (the plots: `bertbuild.reporting.run_plots`) --

def latencies(rows: list[dict]) -> tuple[str, list[float | None]]:
    """(label, value per row): p50 ms where the rows have benchmarks, else eval ms per question."""
    if any(r.get("p50_ms") is not None for r in rows):
        return "p50 latency (ms)", [None if r.get("p50_ms") is None else float(r["p50_ms"]) for r in rows]
    values = []
    for r in rows:
        seconds, questions = r.get("seconds"), r.get("questions")
        values.append(1000.0 * float(seconds) / float(questions) if seconds is not None and questions else None)
    return "eval ms per question", values
