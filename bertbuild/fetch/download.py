"""Download one URL to one file, robustly.

`requests` does the HTTP, and urllib3's `Retry` (mounted through requests'
`HTTPAdapter`) retries what fails before an answer's body starts: connection
errors, read timeouts and 429/5xx answers, with exponential back-off and
jitter, honouring a server's `Retry-After` (capped at the policy's longest
wait). Other 4xx answers are not retried: they will not change.

What no library does, and checkpoints of a few GB on flaky links need, is
written here by hand:

* the body goes to ``<dest>.part`` and is renamed to ``<dest>`` only when
  complete, so a reader never sees a half-written file under its final name;
* an existing ``.part`` (from an interrupted attempt or run) is resumed with an
  HTTP ``Range`` request; a server that answers 200 instead of 206 makes us
  start again from zero;
* a body cut short (the connection lost mid-transfer) is resumed from where
  it stopped. `Retry` cannot do this: it retries getting an answer, never a
  partial body, and would start a multi-GB file over.

Both layers share one budget: `RetryPolicy.attempts` HTTP requests in all,
with one back-off formula (`RetryPolicy.delay`).

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import gdown
import gdown.exceptions
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from bertbuild.errors import FetchError, FetchFailed
from bertbuild.progress import Progress

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK = 1 << 20
# (connect, read) seconds: a stalled read is a connection error and retried.
DEFAULT_TIMEOUT = (15.0, 60.0)
RETRY_STATUSES = frozenset({429, *range(500, 600)})  # worth asking again; other 4xx will not change
_TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class Retryable(Exception):
    """A failure that another attempt may cure; `requests`: how many HTTP requests the attempt spent."""

    def __init__(self, message: str, requests: int = 1):
        super().__init__(message)
        self.requests = requests


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; tests pass a tiny `base_delay`.

    `attempts`: HTTP requests in all for one download, retries included.
    """

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


class _PolicyRetry(Retry):
    """urllib3's `Retry` waiting as `RetryPolicy.delay` says, and saying so in the log.

    Only the wait and the log line are ours: urllib3's own formula does not
    wait before the first retry (a 503ing server would be asked again at
    once), and one formula serves both this layer and the resume loop.
    """

    def __init__(self, *args, policy: RetryPolicy = RetryPolicy(), what: str = "download", **kwargs):
        super().__init__(*args, **kwargs)
        self.policy, self.what = policy, what

    def new(self, **kw) -> "_PolicyRetry":
        return super().new(policy=self.policy, what=self.what, **kw)

    def get_backoff_time(self) -> float:
        return self.policy.delay(len(self.history) - 1) if self.history else 0.0

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        retry = super().increment(method, url, response, error, _pool, _stacktrace)  # raises once exhausted
        cause = f"HTTP {response.status}" if response is not None and response.status else \
            f"connection error: {_reason(error) if error else 'unknown'}"
        log.warning("%s: %s; retrying (%d/%d)", self.what, cause, len(retry.history) + 1, self.policy.attempts)
        return retry


def _retry(policy: RetryPolicy, budget: int, what: str) -> Retry:
    """Retries for one request, spending at most `budget` requests (the first included)."""
    return _PolicyRetry(total=max(0, budget - 1), status_forcelist=RETRY_STATUSES, allowed_methods={"GET"},
                        raise_on_status=False, respect_retry_after_header=True,
                        retry_after_max=int(policy.max_delay), policy=policy, what=what)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace (urllib3 errors span lines) and cap the length."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def retrying(attempt: Callable[[int], T], policy: RetryPolicy, what: str) -> T:
    """Call `attempt(budget)` until it stops raising `Retryable`; then raise FetchFailed (exit 1: transient).

    `budget`: the requests the attempt may still make (urllib3 may retry inside
    it); each `Retryable` says how many it spent. The wait after it continues
    the same back-off, counted in requests.
    """
    used = 0
    while True:
        try:
            return attempt(policy.attempts - used)
        except Retryable as exc:
            used += max(1, exc.requests)
            if used >= policy.attempts:
                raise FetchFailed(f"{one_line(exc)} (gave up after {used} attempts)") from exc
            pause = policy.delay(used - 1)
            log.warning("%s: %s; retrying in %.2fs (%d/%d)", what, one_line(exc), pause, used + 1, policy.attempts)
            time.sleep(pause)


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
    decides whether to keep it. `progress`: a bar; without one, a line to the
    log every `bertbuild.progress.PROGRESS_EVERY_S` seconds.
    """
    part = dest.with_name(dest.name + ".part")
    what = label or "download"
    retrying(lambda budget: _attempt(url, part, dict(headers or {}), _retry(policy, budget, what), progress,
                                     hints or {}, label, timeout), policy, what)
    os.replace(part, dest)
    return dest


def _attempt(url, part: Path, headers, retry: Retry, progress, hints, label, timeout) -> None:
    have = part.stat().st_size if part.exists() else 0
    # Compressed transfer would make Content-Length and byte offsets disagree
    # with the bytes we write, breaking both the truncation check and resume.
    headers["Accept-Encoding"] = "identity"
    if have:
        headers["Range"] = f"bytes={have}-"
    offset, got, expected = 0, 0, None
    with requests.Session() as session:
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            resp = session.get(url, headers=headers, stream=True, timeout=timeout)
        except _TRANSIENT as exc:  # urllib3 retried until the budget was spent
            raise Retryable(f"connection error: {_reason(exc)}", requests=retry.total + 1) from exc
        with resp:
            spent = len(resp.raw.retries.history) + 1 if resp.raw.retries is not None else 1
            status = resp.status_code
            if status == 416 and have:
                part.unlink()  # our partial file does not fit the remote one
                raise Retryable("server refused to resume (HTTP 416); starting over", spent)
            if status in RETRY_STATUSES:  # urllib3 gave up on it
                raise Retryable(f"HTTP {status} {resp.reason}", spent)
            if status >= 400:
                raise _http_error(status, resp.reason or "", hints)
            offset = _resume_offset(resp, have)
            if offset is None:
                part.unlink(missing_ok=True)
                raise Retryable("server answered an unexpected byte range; starting over", spent)
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            # urllib3 would raise on a short body and drop the bytes of the last
            # read; we check the length ourselves so those bytes can be resumed.
            resp.raw.enforce_content_length = False
            try:
                with open(part, "ab" if offset else "wb") as out, Progress(
                    None if expected is None else offset + expected, label, unit="B", unit_scale=True,
                    initial=offset, bar=progress, log=log.info,
                ) as bar:
                    for chunk in resp.iter_content(CHUNK):
                        out.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
            except _TRANSIENT as exc:
                if expected is not None:  # urllib3 noticed the short body before we did
                    raise Retryable(f"connection closed after {offset + got} of {offset + expected} bytes",
                                    spent) from exc
                raise Retryable(f"connection error: {_reason(exc)}", spent) from exc
    if expected is not None and got < expected:
        raise Retryable(f"connection closed after {offset + got} of {offset + expected} bytes", spent)


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
        retrying(lambda budget: attempt(), policy, "gdown")  # gdown makes one request per attempt
        os.replace(target, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
