"""Download one URL to one file, robustly.

`requests` does the HTTP. What it does not do, and checkpoints of a few GB on
flaky links need, is written here by hand:

* the body goes to ``<dest>.part`` and is renamed to ``<dest>`` only when
  complete, so a reader never sees a half-written file under its final name;
* an existing ``.part`` (from an interrupted attempt or run) is resumed with an
  HTTP ``Range`` request; a server that answers 200 instead of 206 makes us
  start again from zero;
* connection errors, truncated bodies and 5xx answers are retried with
  exponential back-off and jitter; 4xx answers are not (they will not change).

The retries live here, not in Prefect, so that the library works on its own.
Google Drive goes through `gdown` (it knows Drive's confirmation pages), inside
the same retry loop.

Messages never contain request headers, so an API key sent as a header cannot
leak into an exception or a log line.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import gdown
import gdown.exceptions
import requests
from tqdm import tqdm

from bertbuild.errors import FetchError

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK = 1 << 20
# (connect, read) seconds: a stalled read is a connection error and retried.
DEFAULT_TIMEOUT = (15.0, 60.0)
_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class Retryable(Exception):
    """A failure that another attempt may cure (5xx, lost connection, short body)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; tests pass a tiny `base_delay`."""

    attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based).

        Exponential, with "equal jitter" (half fixed, half random) so parallel
        clients do not retry in lock-step yet the wait still grows.
        """
        ceiling = min(self.max_delay, self.base_delay * 2**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace (urllib3 errors span lines) and cap the length."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def want_progress(progress: bool | None) -> bool:
    """Show a bar only for a person watching: stderr is a TTY and not in CI."""
    if progress is not None:
        return progress
    return sys.stderr.isatty() and not os.environ.get("CI")


def retrying(attempt: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """Call `attempt` until it stops raising `Retryable`; then raise FetchError."""
    for number in range(1, policy.attempts + 1):
        try:
            return attempt()
        except Retryable as exc:
            if number >= policy.attempts:
                raise FetchError(f"{one_line(exc)} (gave up after {number} attempts)") from exc
            pause = policy.delay(number - 1)
            log.warning("%s: %s; retrying in %.2fs (%d/%d)", what, one_line(exc), pause, number + 1, policy.attempts)
            time.sleep(pause)
    raise AssertionError("unreachable")  # attempts >= 1 always returns or raises


def _http_error(status: int, reason: str, hints: Mapping[int, str]) -> FetchError:
    hint = hints.get(status)
    return FetchError(f"HTTP {status} {reason}".strip() + (f"; {hint}" if hint else ""))


def download_http(
    url: str,
    dest: Path,
    *,
    headers: Mapping[str, str] | None = None,
    policy: RetryPolicy = RetryPolicy(),
    progress: bool = False,
    hints: Mapping[int, str] | None = None,
    label: str = "",
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
) -> Path:
    """Fetch `url` into `dest` (via ``dest.part``); return `dest`.

    `hints` maps an HTTP status to advice appended to the error message.
    On failure the ``.part`` file is left for a later resume; the caller
    decides whether to keep it.
    """
    part = dest.with_name(dest.name + ".part")
    with requests.Session() as session:
        retrying(
            lambda: _attempt(session, url, part, dict(headers or {}), progress, hints or {}, label, timeout),
            policy,
            label or "download",
        )
    os.replace(part, dest)
    return dest


def _attempt(session, url, part: Path, headers, progress, hints, label, timeout) -> None:
    have = part.stat().st_size if part.exists() else 0
    # Compressed transfer would make Content-Length and byte offsets disagree
    # with the bytes we write, breaking both the truncation check and resume.
    headers["Accept-Encoding"] = "identity"
    if have:
        headers["Range"] = f"bytes={have}-"
    offset, got, expected = 0, 0, None
    try:
        with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            status = resp.status_code
            if status == 416 and have:
                part.unlink()  # our partial file does not fit the remote one
                raise Retryable("server refused to resume (HTTP 416); starting over")
            if status >= 500:
                raise Retryable(f"HTTP {status} {resp.reason}")
            if status >= 400:
                raise _http_error(status, resp.reason or "", hints)
            offset = _resume_offset(resp, have)
            if offset is None:
                part.unlink(missing_ok=True)
                raise Retryable("server answered an unexpected byte range; starting over")
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            # urllib3 would raise on a short body and drop the bytes of the last
            # read; we check the length ourselves so those bytes can be resumed.
            resp.raw.enforce_content_length = False
            with open(part, "ab" if offset else "wb") as out, tqdm(
                total=None if expected is None else offset + expected,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label or None,
                disable=not progress,
                file=sys.stderr,
            ) as bar:
                for chunk in resp.iter_content(CHUNK):
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except _TRANSIENT as exc:
        if expected is not None:  # urllib3 noticed the short body before we did
            raise Retryable(f"connection closed after {offset + got} of {offset + expected} bytes") from exc
        raise Retryable(f"connection error: {_reason(exc)}") from exc
    if expected is not None and got < expected:
        raise Retryable(f"connection closed after {offset + got} of {offset + expected} bytes")


def _reason(exc: Exception) -> str:
    """The OS-level cause ("Connection refused") buried in urllib3's wrapping, else the type."""
    m = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return m.group(1).strip() if m else type(exc).__name__


def _resume_offset(resp: requests.Response, have: int) -> int | None:
    """Where the body starts: 0 for a full answer, `have` for a matching 206.

    A 200 to a Range request means the server ignores ranges: start from zero.
    None means a 206 for a range we did not ask for.
    """
    if resp.status_code != 206:
        return 0
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return have if m and int(m.group(1)) == have else None


def download_gdrive(url: str, dest: Path, *, policy: RetryPolicy = RetryPolicy(), progress: bool = False) -> Path:
    """Fetch a Google Drive file with gdown into `dest`; return `dest`.

    gdown handles Drive's "can't scan for viruses" confirmation page; we add
    our retry policy (gdown's own back-off is neither injectable nor applied
    to 5xx) and the temp-then-rename rule: gdown writes into a private
    ``<dest>.gdown/`` directory that is removed afterwards.
    """
    work = dest.with_name(dest.name + ".gdown")
    work.mkdir(exist_ok=True)
    target = work / "file"

    def attempt() -> None:
        try:
            # use_cookies=False: the confirmation flow only needs the session's
            # in-memory cookies; True would write ~/.cache/gdown/cookies.txt.
            gdown.download(url=url, output=str(target), quiet=not progress, use_cookies=False, timeout=DEFAULT_TIMEOUT)
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status >= 500:
                raise Retryable(f"HTTP {status}") from exc
            raise _http_error(
                status, "", {403: "the Drive file is not shared as 'anyone with the link'", 404: "no such Drive file"}
            ) from exc
        except gdown.exceptions.FileURLRetrievalError as exc:
            raise FetchError(
                "Google Drive gave no download link (file not public, or its download quota is exceeded)"
            ) from exc
        except gdown.exceptions.DownloadError as exc:  # e.g. body shorter than announced
            raise Retryable(one_line(exc, 120)) from exc
        except _TRANSIENT as exc:
            raise Retryable(f"connection error: {_reason(exc)}") from exc

    try:
        retrying(attempt, policy, "gdown")
        os.replace(target, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
