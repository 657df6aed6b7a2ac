"""Download a published bundle and verify it against its manifest.

Files go into a temporary directory beside DEST; each one's sha256 and size
are checked against `manifest.json`; only when all match is the directory
renamed to DEST. On any mismatch nothing is left at DEST and the error names
the file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bertbuild.artifacts.manifest import MANIFEST_NAME, Manifest, is_report, precisions_of, sha256_and_size
from bertbuild.artifacts.store import ArtifactStore, as_store, check_model
from bertbuild.errors import BertbuildError, IntegrityError, UserInputError
from bertbuild.precision import Precision


@dataclass(frozen=True)
class DownloadResult:
    dest: Path
    model: str
    run_id: str
    files: list[str] = field(default_factory=list)  # bundle names written (manifest.json included)
    manifest: Manifest | None = None


def resolve_model(store: ArtifactStore, model: str | None) -> str:
    """`model`, or the store's only model when none is given."""
    if model:
        return check_model(model)
    models = store.models()
    if len(models) == 1:
        return models[0]
    if not models:
        raise UserInputError(f"no models in artifact store {store.url}")
    raise UserInputError(f"artifact store {store.url} holds several models ({', '.join(models)}): pass --model")


def resolve_run(store: ArtifactStore, model: str, run: str | None, *, failed: bool = False) -> tuple[str, Manifest]:
    """The run id (`latest` follows the pointer) and its manifest; errors if absent or incomplete."""
    if failed and run in (None, "latest"):
        runs = store.runs(model, failed=True)
        if not runs:
            raise UserInputError(f"no failed runs of {model} in {store.url}")
        run = runs[-1]
    if run in (None, "latest"):
        run_id = store.latest(model)
        if run_id is None:
            raise UserInputError(f"no released run of {model} in {store.url} (no 'latest' pointer)")
        manifest = store.read_manifest(model, run_id)
        if manifest is None:
            raise BertbuildError(f"{model}/latest names run {run_id}, which has no manifest in {store.url}")
        return run_id, manifest
    manifest = store.read_manifest(model, run, failed=failed)
    if manifest is None:
        where = "failed runs" if failed else "released runs"
        raise UserInputError(f"no complete bundle for run {run} of {model} among the {where} in {store.url}")
    return run, manifest


def select_files(manifest: Manifest, precision: str | None) -> list[str]:
    """Bundle names to fetch: all, or those naming `precision` plus reports naming no other precision."""
    names = sorted(manifest.files)
    if not precision:
        return names
    wanted = precision.lower()
    matching = [n for n in names if wanted in precisions_of(n, (wanted,))]
    if not [n for n in matching if not is_report(n)]:
        available = sorted({p for n in names if not is_report(n) for p in precisions_of(n)},
                           key=list(Precision).index)
        raise UserInputError(f"run {manifest.run_id} of {manifest.model} has no {precision} files "
                             f"(precisions in this bundle: {', '.join(available) or 'none'})")
    reports = [n for n in names if is_report(n) and precisions_of(n) <= {wanted}]
    return sorted(set(matching) | set(reports))


def download(store: ArtifactStore | str | None, model: str | None, dest: Path | str, run: str | None = "latest",
             precision: str | None = None, *, failed: bool = False) -> DownloadResult:
    """Fetch run `run` (default: the `latest` pointer) of `model` into `dest`, verified.

    `dest` must not exist or be an empty directory. Raises `IntegrityError`
    (exit 1) naming the first file whose checksum or size is wrong, leaving
    nothing at `dest`.
    """
    store = as_store(store)
    model = resolve_model(store, model)
    run_id, manifest = resolve_run(store, model, run, failed=failed)
    raw_manifest = store.read_manifest_bytes(model, run_id, failed=failed)
    names = select_files(manifest, precision)

    dest = Path(dest).expanduser().absolute()
    if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
        raise UserInputError(f"--dest {dest} already exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:12]}"
    bundle = store.bundle_path(model, run_id, failed=failed)
    try:
        tmp.mkdir()
        for name in names:
            target = tmp / name
            try:
                store.fetch(f"{bundle}/{name}", target)
            except FileNotFoundError:
                raise IntegrityError(f"missing file: {name} (listed in manifest.json, absent from the store)") from None
            digest, size = sha256_and_size(target)
            manifest.check(name, digest, size)
        (tmp / MANIFEST_NAME).write_bytes(raw_manifest)
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DownloadResult(dest=dest, model=model, run_id=run_id, files=[*names, MANIFEST_NAME], manifest=manifest)


def verify_dir(directory: Path | str) -> Manifest:
    """Check a downloaded bundle against its own manifest.json (files present are checked; returns it)."""
    root = Path(directory)
    manifest = Manifest.from_json((root / MANIFEST_NAME).read_text())
    for name in sorted(manifest.files):
        path = root / name
        if path.is_file():
            manifest.check(name, *sha256_and_size(path))
    return manifest
