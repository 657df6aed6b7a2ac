"""The downloader against a real loopback server: retries, resume, errors, progress."""

import socket

import pytest

from bertbuild.errors import FetchError
from bertbuild.fetch.download import RetryPolicy, download_gdrive, download_http
from bertbuild.progress import want_progress
from httpserver import http_server  # noqa: F401  (fixture)

FAST = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
BODY = bytes(range(256)) * 400  # 100 KiB


def fetch(server, tmp_path, path="/f.bin", **kw):
    return download_http(server.url(path), tmp_path / "out.bin", policy=FAST, **kw)


def test_plain_download(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY)
    out = fetch(http_server, tmp_path)
    assert out.read_bytes() == BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no .part left
    (request,) = http_server.requests_for("/f.bin")
    assert "range" not in request.headers
    assert request.headers["accept-encoding"] == "identity"


def test_503_then_200_is_retried(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY, fail_times=2)
    assert fetch(http_server, tmp_path).read_bytes() == BODY
    assert len(http_server.requests_for("/f.bin")) == 3


def test_persistent_5xx_gives_up_after_all_attempts(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY, fail_times=99, fail_status=502)
    with pytest.raises(FetchError) as err:
        fetch(http_server, tmp_path)
    assert "HTTP 502" in str(err.value) and "gave up after 4 attempts" in str(err.value)
    assert len(http_server.requests_for("/f.bin")) == FAST.attempts
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_4xx_is_not_retried(http_server, tmp_path, status):
    http_server.route("/f.bin", status=status)
    with pytest.raises(FetchError, match=f"HTTP {status}") as err:
        fetch(http_server, tmp_path, hints={404: "no such model"})
    assert len(http_server.requests_for("/f.bin")) == 1
    assert ("no such model" in str(err.value)) == (status == 404)
    assert "\n" not in str(err.value)


def test_401_unless_the_header_matches(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY, require_header=("Authorization", "Bearer k"))
    with pytest.raises(FetchError, match="HTTP 401"):
        fetch(http_server, tmp_path)
    assert fetch(http_server, tmp_path, headers={"Authorization": "Bearer k"}).read_bytes() == BODY
    assert len(http_server.requests_for("/f.bin")) == 2


def test_truncated_body_is_resumed_with_range(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY, truncate_to=1000, truncate_times=1)
    assert fetch(http_server, tmp_path).read_bytes() == BODY
    first, second = http_server.requests_for("/f.bin")
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=1000-"


def test_truncated_body_every_time_fails(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY, truncate_to=0)
    with pytest.raises(FetchError, match=f"connection closed after 0 of {len(BODY)} bytes"):
        fetch(http_server, tmp_path)
    assert len(http_server.requests_for("/f.bin")) == FAST.attempts
    assert not (tmp_path / "out.bin").exists()


def test_existing_partial_file_is_resumed(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY)
    (tmp_path / "out.bin.part").write_bytes(BODY[:4096])
    assert fetch(http_server, tmp_path).read_bytes() == BODY
    (request,) = http_server.requests_for("/f.bin")
    assert request.headers["range"] == "bytes=4096-"


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY, honour_range=False)
    (tmp_path / "out.bin.part").write_bytes(BODY[:4096])
    assert fetch(http_server, tmp_path).read_bytes() == BODY  # not BODY[:4096] + BODY
    (request,) = http_server.requests_for("/f.bin")
    assert request.headers["range"] == "bytes=4096-"


def test_partial_file_longer_than_remote_restarts(http_server, tmp_path):
    http_server.route("/f.bin", body=BODY[:100])
    (tmp_path / "out.bin.part").write_bytes(b"x" * 500)  # 416 from the server
    assert fetch(http_server, tmp_path).read_bytes() == BODY[:100]
    assert [r.headers.get("range") for r in http_server.requests_for("/f.bin")] == ["bytes=500-", None]


def test_429_is_retried_after_the_wait_the_server_asks_for(http_server, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr("bertbuild.fetch.download.time.sleep", waits.append)
    http_server.route("/f.bin", body=BODY, fail_times=1, fail_status=429, retry_after="3")
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=5.0)
    assert download_http(http_server.url("/f.bin"), tmp_path / "out.bin", policy=policy).read_bytes() == BODY
    assert waits == [3] and len(http_server.requests_for("/f.bin")) == 2


def test_a_long_retry_after_is_capped_at_the_longest_wait(http_server, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr("bertbuild.fetch.download.time.sleep", waits.append)
    http_server.route("/f.bin", body=BODY, fail_times=1, retry_after="86400")
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=5.0)
    assert download_http(http_server.url("/f.bin"), tmp_path / "out.bin", policy=policy).read_bytes() == BODY
    assert waits == [5]


def test_5xx_retries_and_resumes_share_one_budget(http_server, tmp_path):
    # Two 503s (retried inside urllib3), then bodies that always break off (resumed by our loop):
    # FAST.attempts requests in all, not that many of each.
    http_server.route("/f.bin", body=BODY, fail_times=2, truncate_to=0)
    with pytest.raises(FetchError, match="connection closed after 0 of .* bytes .*gave up after 4 attempts"):
        fetch(http_server, tmp_path)
    assert len(http_server.requests_for("/f.bin")) == FAST.attempts


def test_a_503_then_a_cut_body_then_the_rest(http_server, tmp_path):
    # truncate_times counts every answer: the 503 is the first, the cut body the second.
    http_server.route("/f.bin", body=BODY, fail_times=1, truncate_to=5000, truncate_times=2)
    assert fetch(http_server, tmp_path).read_bytes() == BODY
    assert [r.headers.get("range") for r in http_server.requests_for("/f.bin")] == [None, None, "bytes=5000-"]


def test_connection_refused_is_retried_then_fails(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    delays = []
    monkeypatch.setattr("bertbuild.fetch.download.time.sleep", delays.append)
    with pytest.raises(FetchError, match="connection error: Connection refused.*gave up after 4 attempts"):
        download_http(f"http://127.0.0.1:{port}/x", tmp_path / "x", policy=FAST)
    assert len(delays) == FAST.attempts - 1


def test_backoff_is_exponential_with_jitter():
    policy = RetryPolicy(attempts=6, base_delay=1.0, max_delay=8.0)
    for attempt, ceiling in enumerate([1, 2, 4, 8, 8]):
        samples = {policy.delay(attempt) for _ in range(20)}
        assert all(ceiling / 2 <= d <= ceiling for d in samples)
        assert len(samples) > 1  # jittered


def test_progress_choice(monkeypatch):
    class Tty:
        def isatty(self):
            return True

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("sys.stderr", Tty())
    assert want_progress(None) is True
    monkeypatch.setenv("CI", "true")
    assert want_progress(None) is False
    assert want_progress(True) is True
    monkeypatch.delenv("CI")
    assert want_progress(False) is False


def test_progress_off_when_stderr_is_not_a_tty(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert want_progress(None) is False  # pytest captures stderr: not a TTY


def test_progress_bar_shows_bytes_and_rate(http_server, tmp_path, capsys):
    http_server.route("/f.bin", body=BODY)
    fetch(http_server, tmp_path, progress=True, label="f.bin")
    err = capsys.readouterr().err
    assert "f.bin" in err and "100k" in err.lower() and "B/s" in err


def test_quiet_without_progress(http_server, tmp_path, capsys):
    http_server.route("/f.bin", body=BODY)
    fetch(http_server, tmp_path, progress=False)
    assert capsys.readouterr().err == ""


# gdown, pointed at the loopback server: on a host other than drive.google.com
# it does a plain GET, which is what lets these tests run offline.


def test_gdown_downloads_from_loopback(http_server, tmp_path):
    http_server.route("/uc", body=BODY)
    out = download_gdrive(http_server.url("/uc?id=FILE123"), tmp_path / "g.bin", policy=FAST)
    assert out.read_bytes() == BODY
    assert [r.path for r in http_server.log] == ["/uc?id=FILE123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.bin"]


def test_gdown_5xx_is_retried_by_our_policy(http_server, tmp_path):
    http_server.route("/uc", body=BODY, fail_times=2)
    assert download_gdrive(http_server.url("/uc?id=F"), tmp_path / "g.bin", policy=FAST).read_bytes() == BODY
    assert len(http_server.requests_for("/uc")) == 3


def test_gdown_404_is_not_retried(http_server, tmp_path):
    http_server.route("/uc", status=404)
    with pytest.raises(FetchError, match="HTTP 404; no such Drive file"):
        download_gdrive(http_server.url("/uc?id=F"), tmp_path / "g.bin", policy=FAST)
    assert len(http_server.requests_for("/uc")) == 1
    assert list(tmp_path.iterdir()) == []


def test_gdown_truncated_body_is_retried_then_fails(http_server, tmp_path):
    http_server.route("/uc", body=BODY, truncate_to=10)
    with pytest.raises(FetchError, match="gave up after 4 attempts"):
        download_gdrive(http_server.url("/uc?id=F"), tmp_path / "g.bin", policy=FAST)
    assert len(http_server.requests_for("/uc")) == FAST.attempts
    assert list(tmp_path.iterdir()) == []
