"""Unpack a downloaded zip or tar archive without trusting it.

Checkpoints come from the internet, so every member is vetted before a byte
is written: no absolute paths, no ``..``, no symlinks or hard links, no
devices or fifos, a cap on the member count, on the total unpacked size and on
the compression ratio (zip bombs). `zipfile` has no such checks and
`tarfile`'s ``filter='data'`` covers paths and links but not sizes or ratios,
hence this module; ``filter='data'`` is still applied to tars as a second line.

Extraction goes into a temporary sibling directory that is renamed to the
target only on success, so a failed or rejected archive leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bertbuild.errors import FetchError

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What an archive may expand to. Tests pass small values."""

    max_members: int = 10_000
    # BERT-large with optimizer slots is ~4 GiB; leave room, but stop a bomb.
    max_total_bytes: int = 8 * GiB
    # Real checkpoints compress ~1.1:1 and text ~4:1; 200:1 is only zeros.
    max_ratio: float = 200.0
    # Small members may be highly compressible (padding, empty JSON) and are
    # harmless; the ratio is only judged from this size up.
    ratio_min_bytes: int = 1 * MiB


def extract_archive(archive: Path, dest: Path, limits: Limits = Limits()) -> Path:
    """Unpack `archive` (zip or tar, any compression) into the new directory `dest`."""
    if zipfile.is_zipfile(archive):
        unpack = _extract_zip
    elif tarfile.is_tarfile(archive):
        unpack = _extract_tar
    else:
        raise FetchError("not a zip or tar archive")
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".extract"))
    try:
        unpack(archive, tmp, limits)
        os.replace(tmp, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"cannot unpack archive: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _unsafe(name: str, why: str) -> FetchError:
    return FetchError(f"unsafe archive: member {name!r} {why}")


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, or FetchError if it could escape."""
    posix = name.replace("\\", "/")  # zips written on Windows
    if "\x00" in name:
        raise _unsafe(name, "has a NUL byte in its name")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise _unsafe(name, "has an absolute path")
    parts = tuple(p for p in PurePosixPath(posix).parts if p != ".")
    if ".." in parts:
        raise _unsafe(name, "has a '..' path component")
    return parts


def _check_totals(count: int, total: int, limits: Limits) -> None:
    if count > limits.max_members:
        raise FetchError(f"unsafe archive: more than {limits.max_members} members")
    if total > limits.max_total_bytes:
        raise FetchError(f"unsafe archive: unpacks to more than {limits.max_total_bytes} bytes")


def _check_ratio(name: str, size: int, packed: int, limits: Limits) -> None:
    if size >= limits.ratio_min_bytes and size > limits.max_ratio * max(packed, 1):
        raise _unsafe(name, f"has a compression ratio over {limits.max_ratio:g}:1 ({size} bytes from {packed})")


def _extract_zip(archive: Path, into: Path, limits: Limits) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_totals(len(infos), sum(i.file_size for i in infos), limits)
        plan = []
        for info in infos:
            parts = _safe_parts(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # Unix mode, 0 if the zip has none
            if kind == stat.S_IFLNK:
                raise _unsafe(info.filename, "is a symlink")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _unsafe(info.filename, "is a special file (device, fifo or socket)")
            _check_ratio(info.filename, info.file_size, info.compress_size, limits)
            if parts:
                plan.append((info, parts))
        written = 0
        for info, parts in plan:
            target = into.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # "xb": a duplicate name must not overwrite an earlier member.
            with zf.open(info) as src, open(target, "xb") as out:
                # ZipExtFile stops at the declared size and checks the CRC, but
                # count anyway so the total cap holds whatever the headers say.
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > limits.max_total_bytes:
                        raise FetchError(f"unsafe archive: unpacks to more than {limits.max_total_bytes} bytes")
                    out.write(chunk)


def _extract_tar(archive: Path, into: Path, limits: Limits) -> None:
    packed = archive.stat().st_size
    with tarfile.open(archive, "r:*") as tar:
        members, total = [], 0
        # Iterate rather than getmembers() so a header flood stops early.
        for member in tar:
            parts = _safe_parts(member.name)
            if member.issym() or member.islnk():
                raise _unsafe(member.name, "is a symlink or hard link")
            if not (member.isreg() or member.isdir()):
                raise _unsafe(member.name, "is a special file (device, fifo or socket)")
            total += member.size
            _check_totals(len(members) + 1, total, limits)
            if parts:
                members.append(member)
        # A tar is compressed as one stream, so judge the ratio on the whole.
        _check_ratio(archive.name, total, packed, limits)
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **extra)
