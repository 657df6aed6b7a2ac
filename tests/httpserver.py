"""A real HTTP server on 127.0.0.1 for download tests.

Each path gets a `Route` describing how to misbehave (fail N times, demand a
header, cut the body short, ignore Range, ...). Every request is logged so
tests can assert how many requests were made and with which headers.

Use the `http_server` fixture: ``from httpserver import http_server``.
The bottom of the file builds the fake checkpoints and archives they serve.
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest


@dataclass
class Route:
    body: bytes = b""
    status: int = 200  # a non-200 here is answered with an empty body
    fail_times: int = 0  # answer `fail_status` to the first N requests
    fail_status: int = 503
    retry_after: str | None = None  # sent as Retry-After with each failing answer
    require_header: tuple[str, str] | None = None  # else 401
    truncate_to: int | None = None  # send this many bytes, announce all, then close
    truncate_times: int | None = None  # truncate only the first N answers (None: always)
    honour_range: bool = True
    content_type: str = "application/octet-stream"


@dataclass
class Request:
    method: str
    path: str  # with the query string
    headers: dict[str, str] = field(default_factory=dict)  # keys lower-cased


class LoopbackServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        # A short poll keeps shutdown (each test's teardown) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, **behaviour) -> Route:
        self.routes[path] = Route(**behaviour)
        return self.routes[path]

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.log if urlsplit(r.path).path == path]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server._lock:
                    server.log.append(Request("GET", self.path, headers))
                    route = server.routes.get(urlsplit(self.path).path)
                    failing = route is not None and route.fail_times > 0
                    if failing:
                        route.fail_times -= 1
                    truncating = route is not None and route.truncate_to is not None and route.truncate_times != 0
                    if truncating and route.truncate_times is not None:
                        route.truncate_times -= 1
                if route is None:
                    return self._empty(404)
                if route.require_header:
                    name, value = route.require_header
                    if headers.get(name.lower()) != value:
                        return self._empty(401)
                if failing:
                    return self._empty(route.fail_status, route.retry_after)
                if route.status != 200:
                    return self._empty(route.status)
                self._send_body(route, headers.get("range"), truncating)

            def _empty(self, status: int, retry_after: str | None = None) -> None:
                self.send_response(status)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _send_body(self, route: Route, range_header: str | None, truncating: bool) -> None:
                body, status, start = route.body, 200, 0
                m = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if route.honour_range and m:
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                payload = body[start:]
                self.send_response(status)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(payload)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Accept-Ranges", "bytes" if route.honour_range else "none")
                self.end_headers()
                if truncating:
                    payload = payload[: route.truncate_to]
                    self.close_connection = True
                self.wfile.write(payload)
                self.wfile.flush()

        return Handler


@pytest.fixture
def http_server(monkeypatch):
    """A started `LoopbackServer`; proxies from the environment are bypassed."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = LoopbackServer()
    server.start()
    yield server
    server.stop()


# --- Payloads shared by the fetch tests (kept here: one helper module) -----

CKPT_FILES = {
    "bert_config.json": b'{"hidden_size": 8, "num_hidden_layers": 1}',
    "vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n",
    "checkpoint": b'model_checkpoint_path: "model.ckpt-10"\n',
    "model.ckpt-10.index": b"fake index bytes",
    "model.ckpt-10.data-00000-of-00001": bytes(range(256)) * 64,
}


def ckpt_members(prefix: str = "") -> dict[str, bytes]:
    """A fake checkpoint's files, placed under `prefix` (e.g. "bert/ckpt/")."""
    return {prefix + name: data for name, data in CKPT_FILES.items()}


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def make_tar(members: dict[str, bytes], extra: list[tarfile.TarInfo] = (), mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


def listing(root: Path) -> list[str]:
    """Every path under `root`, relative; [] if it does not exist."""
    if not root.exists():
        return []
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)
