"""Download a published bundle and verify it against its manifest, writing only inside DEST.

The manifest comes from a shared store, so it is untrusted: every name it
lists is checked before anything is written (`Manifest.from_json` refuses
climbing, absolute, drive and colliding names), only the names it lists are
fetched, and a file it lists that the store lacks, or a file in the bundle's
store directory that it does not list, is an error. Files go into a
temporary directory beside DEST, each one's sha256 and size are checked, and
only when all match is the directory renamed to DEST. On any failure nothing
is left at DEST, beside it, or in the parent directories it created.

An ONNX file with external data is fetched with its data files (listed in
the manifest like any file, beside it), so DEST holds a pair that loads; an
ONNX file that reads data from outside its folder, or data the manifest does
not list, is refused.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from bertbuild.artifacts.manifest import MANIFEST_NAME, Manifest, sha256_and_size
from bertbuild.artifacts.store import ArtifactStore, as_store, check_model, parse_manifest
from bertbuild.errors import BertbuildError, IntegrityError, UserInputError
from bertbuild.kinds import Precision
from bertbuild.serving.repository import TRITON_DIR, triton_model_name


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


def resolve_run(store: ArtifactStore, model: str, run: str | None, *,
                failed: bool = False) -> tuple[str, bytes, Manifest]:
    """The run id (`latest` follows the pointer), its manifest's bytes and the manifest, checked.

    Errors if the bundle is absent or incomplete; the manifest is read once, so
    the bytes saved beside a download are the ones that were checked.
    """
    if failed and run in (None, "latest"):
        runs = store.runs(model, failed=True)
        if not runs:
            raise UserInputError(f"no failed runs of {model} in {store.url}")
        run = runs[-1]
    follow = run in (None, "latest")
    if follow:
        run = store.latest(model)
        if run is None:
            raise UserInputError(f"no released run of {model} in {store.url} (no 'latest' pointer)")
    raw = store.read_manifest_bytes(model, run, failed=failed)
    if raw is None and follow:
        raise BertbuildError(f"{model}/latest names run {run}, which has no manifest in {store.url}")
    if raw is None:
        where = "failed runs" if failed else "released runs"
        raise UserInputError(f"no complete bundle for run {run} of {model} among the {where} in {store.url}")
    return run, raw, parse_manifest(raw, model, run)


def select_files(manifest: Manifest, precision: str | None) -> list[str]:
    """Bundle names to fetch: all, or the files of `precision` plus the whole run's (results, plots, vocab).

    Which precision a file belongs to is what the manifest recorded at publish time.
    """
    names = sorted(manifest.files)
    if not precision:
        return names
    if not manifest.records_precisions():
        raise UserInputError(f"run {manifest.run_id} of {manifest.model} was published before bundles recorded "
                             f"each file's precision: download it whole (without --precision)")
    wanted = precision.lower()
    matching = [n for n in names if manifest.precision_of(n) == wanted]
    if not matching:
        available = sorted({p for n in names if (p := manifest.precision_of(n))}, key=list(Precision).index)
        raise UserInputError(f"run {manifest.run_id} of {manifest.model} has no {precision} files "
                             f"(precisions in this bundle: {', '.join(available) or 'none'})")
    return sorted(set(matching) | {n for n in names if manifest.precision_of(n) is None})


def download(store: ArtifactStore | str | None, model: str | None, dest: Path | str, run: str | None = "latest",
             precision: str | None = None, *, failed: bool = False, triton: bool = False) -> DownloadResult:
    """Fetch run `run` (default: the `latest` pointer) of `model` into `dest`, verified.

    `dest` must not exist or be an empty directory. Raises `IntegrityError`
    (exit 1) naming the first unsafe, missing, extra or corrupt file, leaving
    nothing at `dest`. `triton`: only the bundle's Triton model repository
    (`triton/`), laid out at `dest` as a repository Triton serves
    (`dest/<model>-<precision>/config.pbtxt`, `.../1/<engine>`), without the manifest.
    """
    store = as_store(store)
    model = resolve_model(store, model)
    run_id, raw_manifest, manifest = resolve_run(store, model, run, failed=failed)
    names = triton_names(manifest, precision) if triton else select_files(manifest, precision)
    bundle = store.bundle_path(model, run_id, failed=failed)
    refuse_unlisted_files(store, bundle, manifest)
    prefix = f"{TRITON_DIR}/" if triton else ""  # a Triton repository is the bundle's triton/ folder

    with staged_dest(dest) as tmp:
        fetched: dict[str, Path] = {}  # sha256 -> the first local copy: identical files are fetched once

        def fetch(name: str) -> None:
            target = inside(tmp, name.removeprefix(prefix))
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = manifest.files[name]["sha256"]
            if digest in fetched:
                shutil.copyfile(fetched[digest], target)
            else:  # a store error becomes one line naming the file
                try:
                    store.fetch(store.content_path(bundle, manifest, name), target)
                except FileNotFoundError:
                    raise IntegrityError(f"missing file: {name} (listed in manifest.json, absent from the "
                                         "store)") from None
                except OSError as exc:
                    raise BertbuildError(f"cannot fetch {name} from {store.url}: {exc}") from None
            manifest.check(name, *sha256_and_size(target))
            fetched.setdefault(digest, target)

        for name in names:
            fetch(name)
        extra = onnx_data_names(tmp, names, manifest, prefix)  # data of fetched ONNX files the selection left out
        for name in extra:
            fetch(name)
        names = sorted([*names, *extra])
        if not triton:
            (tmp / MANIFEST_NAME).write_bytes(raw_manifest)
            names.append(MANIFEST_NAME)
    return DownloadResult(dest=Path(dest).expanduser().absolute(), model=model, run_id=run_id, files=names,
                          manifest=manifest)


def triton_names(manifest: Manifest, precision: str | None) -> list[str]:
    """The bundle's Triton repository files (`triton/<model>-<precision>/...`): every model's, or one precision's.

    One-line errors for a bundle without a repository (published before bundles
    carried one), a precision with no Triton model, and a model folder without
    its config.pbtxt.
    """
    listed = sorted(n for n in manifest.files if n.startswith(f"{TRITON_DIR}/") and n.count("/") >= 2)
    if not listed:
        raise UserInputError(f"run {manifest.run_id} of {manifest.model} has no Triton model repository "
                             "(it was published before bundles carried one): download it with --dest")
    folders = sorted({n.split("/")[1] for n in listed})
    if precision:
        wanted = triton_model_name(manifest.model, precision.lower())
        if wanted not in folders:
            raise UserInputError(f"run {manifest.run_id} of {manifest.model} has no Triton model for {precision} "
                                 f"(Triton models in this bundle: {', '.join(folders)})")
        folders = [wanted]
    names = [n for n in listed if n.split("/")[1] in folders]
    for folder in folders:
        if f"{TRITON_DIR}/{folder}/config.pbtxt" not in names:
            raise IntegrityError(f"missing file: {TRITON_DIR}/{folder}/config.pbtxt (the Triton model {folder} "
                                 "has none in manifest.json)")
    return names


def onnx_data_names(root: Path, names: list[str], manifest: Manifest, prefix: str = "") -> list[str]:
    """Bundle names of the external data the ONNX files among `names` (present under `root`) read, not in `names`.

    Each must be a plain file name beside its ONNX file and listed in the
    manifest; a file named .onnx that is not ONNX reads nothing. A name's file
    is at `root/<name less prefix>`.
    """
    from bertbuild import onnx_files

    wanted: list[str] = []
    for name in names:
        path = inside(root, name.removeprefix(prefix))
        if not name.endswith(".onnx") or not path.is_file():
            continue
        try:
            locations = onnx_files.external_locations(path)
        except onnx_files.UnsafeLocation as exc:
            raise IntegrityError(f"unsafe external data: {name} reads tensor {exc.tensor!r} from {exc.location!r}, "
                                 "outside its folder") from None
        except onnx_files.NotOnnxError:
            continue
        folder = name.rpartition("/")[0]
        for location in locations:
            data = f"{folder}/{location}" if folder else location
            if data not in manifest.files:
                raise IntegrityError(f"missing file: {data} (the external data of {name}, not listed in manifest.json)")
            if data not in names and data not in wanted:
                wanted.append(data)
    return wanted


def refuse_unlisted_files(store: ArtifactStore, bundle: str, manifest: Manifest) -> None:
    """A bundle's store directory holds its manifest (and, for schema 1, the files it lists) and nothing else."""
    allowed = {MANIFEST_NAME} | (set() if manifest.content_addressed else set(manifest.files))
    extra = [name for name in store.list_files(bundle) if name not in allowed]
    if extra:
        raise IntegrityError(f"extra file: {extra[0]} is in the bundle's store directory but not in manifest.json")


def inside(root: Path, name: str) -> Path:
    """`root/name`, refusing any name that would resolve outside `root` (names are checked already; belt and braces)."""
    target = root.joinpath(*name.split("/"))
    if os.path.commonpath([os.path.abspath(target), os.path.abspath(root)]) != os.path.abspath(root):
        raise IntegrityError(f"unsafe file name {name!r}: it resolves outside the destination")
    return target


@contextmanager
def staged_dest(dest: Path | str) -> Iterator[Path]:
    """A fresh temporary directory beside `dest`, renamed to `dest` if the block succeeds.

    On any failure it is removed, and so is every parent directory made for
    it, so nothing is left at or outside `dest`.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.is_symlink() or (dest.exists() and not (dest.is_dir() and not any(dest.iterdir()))):
        raise UserInputError(f"{dest} already exists and is not an empty directory")
    made = _missing_parents(dest)
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        yield tmp
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in made:  # deepest first
            try:
                directory.rmdir()
            except OSError:
                break  # something else put a file there meanwhile: not ours to remove
        raise


def _missing_parents(dest: Path) -> list[Path]:
    """The parent directories of `dest` that do not exist yet, deepest first."""
    missing = []
    parent = dest.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing


def verify_dir(directory: Path | str, precision: str | None = None) -> Manifest:
    """Check a downloaded bundle against its own manifest.json; returns the manifest.

    The directory must hold exactly the files a download of `precision` (None:
    every file) writes: a missing, extra, linked or corrupt file raises
    `IntegrityError` naming it.
    """
    root = Path(directory)
    try:
        manifest = Manifest.from_json((root / MANIFEST_NAME).read_bytes())
    except FileNotFoundError:
        raise UserInputError(f"{root} has no {MANIFEST_NAME}: not a downloaded bundle") from None
    selected = select_files(manifest, precision)
    expected = set(selected) | set(onnx_data_names(root, selected, manifest))
    present = set()
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise IntegrityError(f"{name}: a symbolic link, not a downloaded file")
        if path.is_file() and name != MANIFEST_NAME:
            if name not in expected:
                raise IntegrityError(f"extra file: {name} (not listed in manifest.json)")
            present.add(name)
    for name in sorted(expected):
        if name not in present:
            raise IntegrityError(f"missing file: {name} (listed in manifest.json)")
        manifest.check(name, *sha256_and_size(root / name))
    return manifest
