"""Fetch a BERT QA checkpoint or a data file into the local cache.

Usage::

    from bertbuild.fetch.acquire import SQUAD_V11_URLS, fetch_checkpoint, fetch_file

    # NGC (key from NGC_API_KEY, or api_key=...), Google Drive, HTTP(S),
    # file://, a local .zip/.tar.gz, or a local directory (used in place):
    ckpt_dir = fetch_checkpoint("ngc://nvidia/bert_tf_ckpt_large_qa_squad11_amp_384:19.03.1")
    ckpt_dir = fetch_checkpoint("gdrive://1AbC...", sha256="9f2c...")
    ckpt_dir = fetch_checkpoint("/data/bert_large_qa")

    dev_json = fetch_file(SQUAD_V11_URLS["dev"])

`fetch_checkpoint` returns the directory holding ``bert_config.json``, the
``model.ckpt*`` files (and normally ``vocab.txt``); `fetch_file` returns the
file. Both cache by (source, sha256 pin) under ``$BERTBUILD_CACHE`` or
``~/.cache/bertbuild``, so a repeated call makes no request at all.

A Hugging Face ``BertForQuestionAnswering`` folder (``config.json`` +
``model.safetensors``), local or inside an archive, is converted once into a
Google-layout checkpoint in the cache, keyed by the content of the files the
conversion reads, and that directory is returned.

Failures raise `FetchError` (or `UserInputError` for a malformed source or
pin) with a one-line message naming the source and the cause; the cache is
left as it was. The NGC API key travels only in a request header and never
appears in messages, logs or return values.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import errno

from bertbuild.content_cache import CacheEntry, default_cache_dir
from bertbuild.errors import FetchError, FetchFailed, UserInputError
from bertbuild.fetch.archive import Limits, extract_archive
from bertbuild.fetch.download import RetryPolicy, download_gdrive, download_http, one_line
from bertbuild.fetch.locate import find_checkpoint_dir
from bertbuild.fetch.sources import (Generated, GDriveFile, HttpUrl, LocalDir, LocalFile, NgcModel, Source, is_local_path,
                                     parse_source, slug)
from bertbuild.fetch.verify import check_sha256, normalize_sha256, tree_sha256
from bertbuild.hashing import sha256_bytes, sha256_file
from bertbuild.progress import want_progress

SQUAD_V11_URLS = {
    "dev": "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json",
    "train": "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json",
}


@dataclass(frozen=True)
class Endpoints:
    """Base URLs of the services behind ``ngc://`` and ``gdrive://``.

    Tests point them at 127.0.0.1. For Drive, gdown is given
    ``{gdrive}/uc?id=<id>``; on the real host it follows Drive's confirmation
    page, on any other host it does a plain GET.
    """

    ngc_api: str = "https://api.ngc.nvidia.com"
    gdrive: str = "https://drive.google.com"

    def ngc_zip_url(self, model: NgcModel) -> str:
        return f"{self.ngc_api.rstrip('/')}/v2/models/{model.model_path}/versions/{model.version}/zip"

    def gdrive_url(self, file: GDriveFile) -> str:
        return f"{self.gdrive.rstrip('/')}/uc?id={file.file_id}"


def fetch_checkpoint(
    source: str,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    api_key: str | None = None,
    progress: bool | None = None,
    endpoints: Endpoints | None = None,
    retry: RetryPolicy | None = None,
    limits: Limits | None = None,
) -> Path:
    """The checkpoint directory for `source`, downloading and unpacking it if needed.

    `sha256` pins the archive (for a local directory: `tree_sha256` of the
    checkpoint directory). `progress` forces the bar on/off (default: only on
    a TTY outside CI). `retry` and `limits` tune retries and archive checks.
    """
    src = parse_source(source)
    pin = normalize_sha256(sha256)
    with _reported(src):
        if isinstance(src, Generated):
            return _generated(src, cache_dir)
        if isinstance(src, LocalDir):
            # A directory that is itself a checkpoint (Google's, or an HF folder: it has a config.json)
            # is used as it is: the loader's errors (exit 2) name the file that is wrong. Nested ones are located.
            at_top = any((src.path / name).is_file() for name in ("bert_config.json", "config.json"))
            found = src.path if at_top else find_checkpoint_dir(src.path)
            if pin:
                check_sha256(tree_sha256(found), pin, "the checkpoint directory")
            return _google_layout(found, cache_dir)
        entry = _entry("ckpt", source, pin, src, cache_dir)
        with _built_by_one(entry) as hit:
            if hit is not None:
                return _google_layout(find_checkpoint_dir(hit), cache_dir)
            with _cleanup_on_error(entry):
                archive = _obtain(src, entry, pin, api_key, progress, endpoints, retry)
                unpacked = extract_archive(archive, entry.scratch("unpacked"), limits or Limits())
                found = find_checkpoint_dir(unpacked)  # never cache a tree without a checkpoint
                # Nor an HF folder that cannot be converted: convert before publishing (the key is content, not place).
                converted = _google_layout(found, cache_dir)
                final = entry.install(unpacked)
        return converted if converted != found else find_checkpoint_dir(final)


def _google_layout(found: Path, cache_dir: Path | None) -> Path:
    """`found` itself if it is a Google checkpoint; an HF folder is converted once into the cache.

    The entry is keyed by the sha256 of the files the conversion reads and the converter's version,
    and named from the content too, so the same model, wherever it lies (a local folder, an archive, a URL),
    is converted once.
    """
    from bertbuild.model import hf_import

    if not (found / "config.json").is_file() or (found / "bert_config.json").is_file():
        return found
    digest = hf_import.source_sha256(found)
    key = cache_key("hf", digest, None, hf_import.cache_label(found), str(hf_import.CONVERTER_VERSION))
    entry = CacheEntry(default_cache_dir(cache_dir), key)
    with _built_by_one(entry) as hit:
        if hit is not None:
            return hit
        with _cleanup_on_error(entry):
            staged = hf_import.import_hf_qa(found, entry.scratch("converted"), digest=digest)
            return entry.install(staged)


def _generated(src: Generated, cache_dir: Path | None) -> Path:
    """Write the random checkpoint once into the cache (seeded: the same name gives the same weights)."""
    from bertbuild.data import UNCASED_VOCAB, bundled_file
    from bertbuild.model.random_checkpoint import write_random_checkpoint

    entry = _entry("ckpt", src.display, None, src, cache_dir)
    with _built_by_one(entry) as hit:
        if hit is not None:
            return hit
        with _cleanup_on_error(entry):
            staged = write_random_checkpoint(entry.scratch("generated"), bundled_file(UNCASED_VOCAB), **src.shape)
            return entry.install(staged)


def resolve_dataset(dataset: str) -> Path | None:
    """`bundled` -> None (the dev set inside the package); a URL is fetched and cached; else a path."""
    if dataset == "bundled":
        return None
    if not is_local_path(dataset):
        return fetch_file(dataset)
    return Path(dataset)


def fetch_file(
    source: str,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    progress: bool | None = None,
    api_key: str | None = None,
    endpoints: Endpoints | None = None,
    retry: RetryPolicy | None = None,
) -> Path:
    """One file (e.g. a SQuAD JSON) for `source`; a local file is returned in place."""
    src = parse_source(source)
    pin = normalize_sha256(sha256)
    if isinstance(src, LocalDir):
        raise UserInputError(f"invalid source {source!r}: a directory, expected a file")
    with _reported(src):
        if isinstance(src, LocalFile):
            if pin:
                check_sha256(sha256_file(src.path), pin, "the file")
            return src.path
        entry = _entry("file", source, pin, src, cache_dir)
        with _built_by_one(entry) as hit:
            if hit is not None:
                return hit / src.filename
            with _cleanup_on_error(entry):
                downloaded = _obtain(src, entry, pin, api_key, progress, endpoints, retry)
                staged = entry.scratch("staged")
                staged.mkdir()
                os.replace(downloaded, staged / src.filename)
                final = entry.install(staged)
        return final / src.filename


def cache_key(kind: str, source: str, sha256: str | None, slug: str, extra: str = "") -> str:
    """An entry's name: a readable slug and a hash of what identifies it (`extra`: facts the source string
    lacks, e.g. a local archive's size and mtime, so a rebuilt file is not shadowed)."""
    digest = sha256_bytes("\0".join((kind, source, sha256 or "", extra)).encode())
    return f"{kind}-{slug}-{digest[:16]}"


def _entry(kind: str, source: str, pin: str | None, src: Source, cache_dir: Path | None) -> CacheEntry:
    extra = ""
    if isinstance(src, LocalFile):
        info = src.path.stat()
        extra = f"{info.st_size}:{info.st_mtime_ns}"
    return CacheEntry(default_cache_dir(cache_dir), cache_key(kind, source.strip(), pin, slug(src), extra))


def _obtain(src, entry: CacheEntry, pin, api_key, progress, endpoints, retry) -> Path:
    """The archive/file for `src` on local disk, its pin verified."""
    entry.root.mkdir(parents=True, exist_ok=True)
    entry.discard(keep_partial=True)  # leftovers of a killed run, but resume its download
    if isinstance(src, LocalFile):
        path = src.path
    else:
        path = _download(
            src,
            entry.scratch("download"),
            api_key=api_key,
            progress=want_progress(progress),
            endpoints=endpoints or Endpoints(),
            retry=retry or RetryPolicy(),
        )
    if pin:
        check_sha256(sha256_file(path), pin, path.name if isinstance(src, LocalFile) else "the download")
    return path


def _download(src: Source, dest: Path, *, api_key, progress, endpoints: Endpoints, retry: RetryPolicy) -> Path:
    if isinstance(src, NgcModel):
        key = api_key or os.environ.get("NGC_API_KEY") or ""
        need_key = "NGC refused access; set NGC_API_KEY (or pass api_key) to a valid NGC API key"
        hints = {401: need_key, 403: need_key, 404: f"NGC has no model {src.model_path} version {src.version}"}
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = endpoints.ngc_zip_url(src)
        return download_http(url, dest, headers=headers, policy=retry, progress=progress, hints=hints, label=src.name)
    if isinstance(src, GDriveFile):
        return download_gdrive(endpoints.gdrive_url(src), dest, policy=retry, progress=progress)
    if isinstance(src, HttpUrl):
        return download_http(src.url, dest, policy=retry, progress=progress, label=src.filename)
    raise AssertionError(f"not a remote source: {type(src).__name__}")


@contextlib.contextmanager
def _reported(src: Source) -> Iterator[None]:
    """Prefix every failure with the source, on one line, keeping its kind.

    FetchError (exit 2) for what the user gave; FetchFailed (exit 1) for what retries could not get past
    and for the host's own trouble (a full disk, an I/O error).
    """
    try:
        yield
    except FetchError as exc:
        raise type(exc)(one_line(f"cannot fetch {src.display}: {exc}", 600)) from exc
    except OSError as exc:  # disk full, permissions, ...
        cause = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        kind = FetchFailed if exc.errno in HOST_ERRNOS else FetchError
        raise kind(one_line(f"cannot fetch {src.display}: {cause}", 600)) from exc


# The host's trouble, not the source's: exit 1 (anything else, e.g. a file that cannot be read, is exit 2).
HOST_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS})


@contextlib.contextmanager
def _built_by_one(entry: CacheEntry) -> Iterator[Path | None]:
    """The finished entry, or None with its lock held until the block has built it.

    A finished entry is used without locking; otherwise this waits for any
    other process building it and looks again, since it may be done by then.
    """
    if (hit := entry.hit()) is not None:
        yield hit
        return
    with entry.building():
        yield entry.hit()


@contextlib.contextmanager
def _cleanup_on_error(entry: CacheEntry) -> Iterator[None]:
    """On an error, leave the cache as it was; on success, drop the work files.

    Only `Exception` triggers the clean-up: after Ctrl-C or a kill the
    ``.download.part`` stays so the next run resumes it.
    """
    try:
        yield
    except Exception:
        entry.discard()
        raise
    entry.discard()
