"""Parse a source string into a typed Source.

Parsing is kept apart from fetching so that a typo in a config or on the
command line fails at once with `UserInputError` (exit 2), before any cache is
created or any request is made.

Accepted forms:

* ``ngc://org/name:version`` and ``ngc://org/team/name:version``
* ``gdrive://<file-id>`` and Drive share links
  (``https://drive.google.com/file/d/<id>/view``, ``.../open?id=<id>``, ``.../uc?id=<id>``)
* ``http://`` / ``https://`` URLs to any file
* ``file://`` URLs, local directories and local files (archives or plain files)
* ``generated:<name>``: a random-weight checkpoint written on demand (smoke
  tests only: its EM/F1 are noise), e.g. ``generated:tiny``
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bertbuild.errors import UserInputError
from bertbuild.locations import SCHEME, is_local_path

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_NGC = re.compile(rf"^({_NAME})(?:/({_NAME}))?/({_NAME}):({_NAME})$")
_DRIVE_ID = re.compile(r"^[-\w]+$")
_DRIVE_PATH = re.compile(r"^/file(?:/u/\d+)?/d/([-\w]+)(?:/[^/]*)?/?$")
_DRIVE_HOSTS = {"drive.google.com", "docs.google.com"}


def _slug(text: str) -> str:
    """A short, filesystem-safe hint used in cache entry names (never a secret)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[-60:] or "source"


@dataclass(frozen=True)
class NgcModel:
    org: str
    team: str | None
    name: str
    version: str

    @property
    def model_path(self) -> str:
        """``org[/team]/name`` as the NGC API spells it."""
        return "/".join(p for p in (self.org, self.team, self.name) if p)

    @property
    def display(self) -> str:
        return f"ngc://{self.model_path}:{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version}.zip"


@dataclass(frozen=True)
class GDriveFile:
    file_id: str

    @property
    def display(self) -> str:
        return f"gdrive://{self.file_id}"

    @property
    def filename(self) -> str:
        return f"gdrive-{self.file_id}"


@dataclass(frozen=True)
class HttpUrl:
    url: str

    @property
    def display(self) -> str:
        """The URL with any ``user:password@`` replaced, safe for messages and logs."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.username is None and parts.password is None:
            return self.url
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))

    @property
    def filename(self) -> str:
        name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(self.url).path)).name
        return _slug(name) if name else "download"


@dataclass(frozen=True)
class LocalDir:
    path: Path

    @property
    def display(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class LocalFile:
    """A local archive (for checkpoints) or a plain file (for `fetch_file`)."""

    path: Path

    @property
    def display(self) -> str:
        return str(self.path)

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Generated:
    """A random-weight checkpoint of a known small shape, written with the bundled uncased vocab."""

    name: str

    @property
    def display(self) -> str:
        return f"generated:{self.name}"

    @property
    def shape(self) -> dict:
        return GENERATED_MODELS[self.name]


# generated:<name> -> the BERT shape written (seeded, so the same name always gives the same weights).
GENERATED_MODELS = {"tiny": dict(layers=2, hidden=32, heads=4)}

Source = NgcModel | GDriveFile | HttpUrl | LocalDir | LocalFile | Generated


def slug(source: Source) -> str:
    """Readable part of a cache entry name for `source`."""
    if isinstance(source, NgcModel):
        return _slug(f"{source.name}_{source.version}")
    if isinstance(source, GDriveFile):
        return _slug(source.filename)
    if isinstance(source, HttpUrl):
        return source.filename
    if isinstance(source, Generated):
        return _slug(f"generated-{source.name}")
    return _slug(source.path.name)


def _bad(text: str, why: str) -> UserInputError:
    return UserInputError(f"invalid source {text!r}: {why}")


def parse_source(text: str) -> Source:
    """Turn a source string into a Source, or raise `UserInputError` naming it."""
    text = text.strip() if isinstance(text, str) else ""
    if not text:
        raise _bad(text, "empty; expected ngc://, gdrive://, http(s)://, file://, generated: or a local path")
    scheme_match = SCHEME.match(text)
    scheme = scheme_match.group(1).lower() if scheme_match else None

    if scheme == "ngc":
        m = _NGC.match(text[len("ngc://"):])
        if not m:
            raise _bad(text, "expected ngc://org/name:version or ngc://org/team/name:version")
        return NgcModel(*m.groups())
    if scheme == "gdrive":
        file_id = text[len("gdrive://"):]
        if not _DRIVE_ID.match(file_id):
            raise _bad(text, "expected gdrive://<file-id>")
        return GDriveFile(file_id)
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(text)
        if not parts.hostname:
            raise _bad(text, "URL has no host")
        if parts.hostname in _DRIVE_HOSTS:
            return GDriveFile(_drive_id(text, parts))
        return HttpUrl(text)
    if scheme == "file":
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise _bad(text, "file:// URLs must name a local path")
        return _local(text, Path(urllib.parse.unquote(parts.path)))
    if scheme is not None:
        raise _bad(text, f"unsupported scheme {scheme}://")
    if text.startswith("generated:"):
        name = text[len("generated:"):]
        if name not in GENERATED_MODELS:
            raise _bad(text, f"unknown generated model (known: {', '.join(f'generated:{n}' for n in GENERATED_MODELS)})")
        return Generated(name)
    return _local(text, Path(text))


def _drive_id(text: str, parts: urllib.parse.SplitResult) -> str:
    """The file id of a Drive share link (``/file/d/<id>/...`` or ``?id=<id>``)."""
    ids = urllib.parse.parse_qs(parts.query).get("id", [])
    if len(ids) == 1 and _DRIVE_ID.match(ids[0]):
        return ids[0]
    m = _DRIVE_PATH.match(parts.path)
    if m:
        return m.group(1)
    raise _bad(text, "a Google Drive link without a file id (folders are not supported)")


def _local(text: str, path: Path) -> Source:
    path = path.expanduser().resolve()
    if path.is_dir():
        return LocalDir(path)
    if path.is_file():
        return LocalFile(path)
    raise _bad(text, "no such file or directory (and not ngc://, gdrive:// or a URL)")
