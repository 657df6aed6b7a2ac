"""fetch_checkpoint / fetch_file end to end against a loopback server and local files.

Every failure must: raise FetchError with one line naming the source and the
cause, and leave the cache directory exactly as it was.
"""

import hashlib
import logging
import tarfile

import pytest

from bertbuild.errors import FetchError, UserInputError
from bertbuild.fetch.verify import tree_sha256
from bertbuild.fetch.download import RetryPolicy
from bertbuild.content_cache import CacheEntry, default_cache_dir
from bertbuild.fetch.archive import Limits
from bertbuild.fetch.acquire import SQUAD_V11_URLS, Endpoints, cache_key, fetch_checkpoint, fetch_file
from httpserver import CKPT_FILES, ckpt_members, http_server, listing, make_tar, make_zip  # noqa: F401

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
NGC_PATH = "/v2/models/nvidia/bert_qa/versions/1.0/zip"
NGC_SOURCE = "ngc://nvidia/bert_qa:1.0"
SECRET = "nvapi-SECRET-KEY-do-not-leak"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("NGC_API_KEY", "CI", "BERTBUILD_CACHE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cache(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "unrelated-entry").mkdir()  # something already cached must survive
    return root


def ngc(server, cache, source=NGC_SOURCE, **kw):
    kw.setdefault("retry", FAST)
    return fetch_checkpoint(source, cache_dir=cache, endpoints=Endpoints(ngc_api=server.base), **kw)


def assert_ckpt(path):
    for name, data in CKPT_FILES.items():
        assert (path / name).read_bytes() == data


def failure(cache, call, match, source):
    """Run `call`, expect a one-line FetchError naming `source`, cache unchanged."""
    before = listing(cache)
    with pytest.raises(FetchError, match=match) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot fetch {source}: ")
    assert listing(cache) == before
    return message


# --- NGC ----------------------------------------------------------------------


def test_ngc_zip_without_key(http_server, cache):
    http_server.route(NGC_PATH, body=make_zip(ckpt_members()))
    path = ngc(http_server, cache)
    assert_ckpt(path)
    assert path.parent == cache and not path.name.startswith(".")
    (request,) = http_server.log
    assert "authorization" not in request.headers
    assert sorted(p.name for p in cache.iterdir()) == sorted(["unrelated-entry", path.name])  # no work files left


def test_ngc_team_path(http_server, cache):
    http_server.route("/v2/models/nvidia/tao/bert_qa/versions/2/zip", body=make_zip(ckpt_members("ckpt/")))
    assert_ckpt(ngc(http_server, cache, "ngc://nvidia/tao/bert_qa:2"))


def test_ngc_key_from_argument_and_from_env(http_server, cache, monkeypatch):
    http_server.route(NGC_PATH, body=make_zip(ckpt_members()), require_header=("Authorization", f"Bearer {SECRET}"))
    assert_ckpt(ngc(http_server, cache, api_key=SECRET))
    assert http_server.log[-1].headers["authorization"] == f"Bearer {SECRET}"
    monkeypatch.setenv("NGC_API_KEY", SECRET)
    assert_ckpt(ngc(http_server, cache / "other"))
    assert len(http_server.log) == 2
    assert not any(SECRET in p for p in listing(cache))


def test_ngc_missing_key_says_set_ngc_api_key(http_server, cache):
    http_server.route(NGC_PATH, body=b"", require_header=("Authorization", f"Bearer {SECRET}"))
    message = failure(cache, lambda: ngc(http_server, cache), "HTTP 401", NGC_SOURCE)
    assert "set NGC_API_KEY" in message
    assert len(http_server.log) == 1  # 4xx: not retried


def test_ngc_wrong_key_never_leaks(http_server, cache, caplog):
    caplog.set_level(logging.DEBUG)
    http_server.route(NGC_PATH, body=b"", require_header=("Authorization", "Bearer right"))
    with pytest.raises(FetchError) as err:
        ngc(http_server, cache, api_key=SECRET)
    assert http_server.log[0].headers["authorization"] == f"Bearer {SECRET}"  # it was sent...
    texts = [str(err.value), repr(err.value), caplog.text]
    cause = err.value.__cause__
    while cause is not None:  # ...but is nowhere in the error chain or the logs
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__
    assert not any(SECRET in t for t in texts)


def test_ngc_key_not_in_logs_while_retrying(http_server, cache, caplog):
    caplog.set_level(logging.DEBUG)
    http_server.route(NGC_PATH, body=b"", fail_times=99)
    with pytest.raises(FetchError, match="HTTP 503"):
        ngc(http_server, cache, api_key=SECRET)
    assert "retrying" in caplog.text and SECRET not in caplog.text


def test_ngc_404_names_model_and_version(http_server, cache):
    message = failure(cache, lambda: ngc(http_server, cache), "HTTP 404", NGC_SOURCE)
    assert "NGC has no model nvidia/bert_qa version 1.0" in message
    assert len(http_server.log) == 1


def test_503_then_200_is_retried(http_server, cache):
    http_server.route(NGC_PATH, body=make_zip(ckpt_members()), fail_times=2)
    assert_ckpt(ngc(http_server, cache))
    assert len(http_server.log) == 3


def test_5xx_exhausted(http_server, cache):
    http_server.route(NGC_PATH, fail_times=99, fail_status=500)
    failure(cache, lambda: ngc(http_server, cache), r"HTTP 500 .*gave up after 3 attempts", NGC_SOURCE)
    assert len(http_server.log) == FAST.attempts


def test_truncated_body_once_is_resumed(http_server, cache):
    data = make_zip(ckpt_members())
    http_server.route(NGC_PATH, body=data, truncate_to=len(data) // 2, truncate_times=1)
    assert_ckpt(ngc(http_server, cache))
    assert http_server.log[1].headers["range"] == f"bytes={len(data) // 2}-"


def test_truncated_body_always_fails_and_cleans_up(http_server, cache):
    data = make_zip(ckpt_members())
    http_server.route(NGC_PATH, body=data, truncate_to=100)
    failure(cache, lambda: ngc(http_server, cache), "connection closed after .* bytes", NGC_SOURCE)


def test_interrupted_run_is_resumed(http_server, cache):
    """A killed run leaves .download.part; the next run asks only for the rest."""
    data = make_zip(ckpt_members())
    http_server.route(NGC_PATH, body=data)
    key = cache_key("ckpt", NGC_SOURCE, None, "bert_qa_1.0")
    CacheEntry(cache, key).scratch("download.part").write_bytes(data[:300])
    assert_ckpt(ngc(http_server, cache))
    assert http_server.log[0].headers["range"] == "bytes=300-"
    assert (cache / key).is_dir()


# --- sha256 pin and cache -------------------------------------------------------


def test_sha256_pin(http_server, cache):
    data = make_zip(ckpt_members())
    http_server.route(NGC_PATH, body=data)
    assert_ckpt(ngc(http_server, cache, sha256=hashlib.sha256(data).hexdigest().upper()))


def test_wrong_sha256_leaves_cache_unchanged(http_server, cache):
    data = make_zip(ckpt_members())
    http_server.route(NGC_PATH, body=data)
    actual = hashlib.sha256(data).hexdigest()
    message = failure(cache, lambda: ngc(http_server, cache, sha256="ab" * 32), "sha256 mismatch", NGC_SOURCE)
    assert f"expected {'ab' * 6}..." in message and f"got {actual[:12]}..." in message


def test_malformed_sha256_is_user_input_error(cache):
    with pytest.raises(UserInputError, match="expected 64 hex digits"):
        fetch_checkpoint(NGC_SOURCE, sha256="abc", cache_dir=cache)


def test_second_fetch_makes_no_request(http_server, cache):
    http_server.route(NGC_PATH, body=make_zip(ckpt_members()))
    first = ngc(http_server, cache)
    second = ngc(http_server, cache)
    assert first == second
    assert len(http_server.log) == 1
    http_server.stop()  # not even a server is needed now
    assert ngc(http_server, cache) == first


def test_cache_key_includes_the_pin(http_server, cache):
    data = make_zip(ckpt_members())
    http_server.route(NGC_PATH, body=data)
    unpinned = ngc(http_server, cache)
    pinned = ngc(http_server, cache, sha256=hashlib.sha256(data).hexdigest())
    assert pinned != unpinned and len(http_server.log) == 2


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "bertbuild"
    monkeypatch.setenv("BERTBUILD_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert default_cache_dir("~/given") == default_cache_dir(tmp_path / "given") == tmp_path / "given"


def test_bertbuild_cache_env_is_used(http_server, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTBUILD_CACHE", str(tmp_path / "envcache"))
    http_server.route("/c.zip", body=make_zip(ckpt_members()))
    path = fetch_checkpoint(http_server.url("/c.zip"), retry=FAST)
    assert path.parent == tmp_path / "envcache"


# --- hostile or wrong archives over HTTP ------------------------------------------


def symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info



@pytest.mark.parametrize(
    "archive, cause",
    [
        (make_zip({**ckpt_members(), "../../evil.txt": b"x"}), "'..' path component"),
        (make_zip(ckpt_members(), symlinks={"link": "/etc/passwd"}), "is a symlink"),
        (make_tar(ckpt_members(), extra=[symlink("vocab.txt.link", "/etc/passwd")]), "symlink or hard link"),
        (make_zip({**ckpt_members(), "zeros": bytes(4 << 20)}), "compression ratio over 200:1"),
        (make_zip(ckpt_members("a/") | ckpt_members("b/")), r"several checkpoint directories \(a/, b/\)"),
        (make_zip({"README": b"hi"}), "no checkpoint found: expected .*; found README"),
        (b"<html>not a zip</html>", "not a zip or tar archive"),
    ],
)
def test_bad_archives_leave_cache_unchanged(http_server, cache, archive, cause):
    http_server.route("/ckpt.bin", body=archive)
    url = http_server.url("/ckpt.bin")
    failure(cache, lambda: fetch_checkpoint(url, cache_dir=cache, retry=FAST), cause, url)


def test_member_limit_is_a_parameter(http_server, cache):
    http_server.route("/ckpt.zip", body=make_zip(ckpt_members()))
    url = http_server.url("/ckpt.zip")
    call = lambda: fetch_checkpoint(url, cache_dir=cache, retry=FAST, limits=Limits(max_members=2))  # noqa: E731
    failure(cache, call, "more than 2 members", url)


# --- Google Drive through gdown ---------------------------------------------------


@pytest.mark.parametrize(
    "source", ["gdrive://FILE_id-123", "https://drive.google.com/file/d/FILE_id-123/view?usp=sharing"]
)
def test_gdrive_via_gdown_on_loopback(http_server, cache, source):
    http_server.route("/uc", body=make_zip(ckpt_members("bert_large/")))
    path = fetch_checkpoint(source, cache_dir=cache, endpoints=Endpoints(gdrive=http_server.base), retry=FAST)
    assert_ckpt(path)
    assert [r.path for r in http_server.log] == ["/uc?id=FILE_id-123"]
    assert fetch_checkpoint(source, cache_dir=cache, endpoints=Endpoints(gdrive=http_server.base)) == path
    assert len(http_server.log) == 1


def test_gdrive_failure(http_server, cache):
    endpoints = Endpoints(gdrive=http_server.base)
    call = lambda: fetch_checkpoint("gdrive://nope", cache_dir=cache, endpoints=endpoints)  # noqa: E731
    failure(cache, call, "HTTP 404; no such Drive file", "gdrive://nope")


# --- local sources -------------------------------------------------------------


def write_tree(root, members):
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_local_directory_is_used_in_place(tmp_path):
    write_tree(tmp_path / "src", ckpt_members("nested/"))
    cache = tmp_path / "cache"
    assert fetch_checkpoint(str(tmp_path / "src"), cache_dir=cache) == (tmp_path / "src/nested").resolve()
    assert not cache.exists()  # no copy, no cache entry


def test_local_directory_tree_pin(tmp_path):
    write_tree(tmp_path, ckpt_members())
    good = tree_sha256(tmp_path)
    assert fetch_checkpoint(str(tmp_path), sha256=good) == tmp_path.resolve()
    expected = f"sha256 mismatch for the checkpoint directory: expected 000000000000..., got {good[:12]}"
    with pytest.raises(FetchError, match=expected):
        fetch_checkpoint(str(tmp_path), sha256="0" * 64)


def test_tree_sha256_matches_sha256sum_recipe(tmp_path):
    files = {"b.txt": b"2", "a/c.txt": b"3"}
    write_tree(tmp_path, files)
    lines = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in sorted(files.items()))
    assert tree_sha256(tmp_path) == hashlib.sha256(lines.encode()).hexdigest()


def test_local_directory_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FetchError, match=f"cannot fetch {tmp_path.resolve()}: no checkpoint found.*found notes.txt"):
        fetch_checkpoint(str(tmp_path))


@pytest.mark.parametrize("name, build", [("ckpt.zip", make_zip), ("ckpt.tar.gz", make_tar), ("ckpt.tgz", make_tar)])
def test_local_archives_are_unpacked_into_the_cache(tmp_path, name, build):
    archive = tmp_path / name
    archive.write_bytes(build(ckpt_members("m/")))
    cache = tmp_path / "cache"
    pin = hashlib.sha256(archive.read_bytes()).hexdigest()
    path = fetch_checkpoint(str(archive), cache_dir=cache, sha256=pin)
    assert_ckpt(path)
    assert archive.exists()  # the user's archive is not consumed
    assert fetch_checkpoint(archive.as_uri(), cache_dir=cache) != path  # other source string, other entry
    assert fetch_checkpoint(str(archive), cache_dir=cache, sha256=pin) == path


def test_local_archive_wrong_pin(tmp_path):
    archive = tmp_path / "ckpt.zip"
    archive.write_bytes(make_zip(ckpt_members()))
    cache = tmp_path / "cache"
    cache.mkdir()
    call = lambda: fetch_checkpoint(str(archive), cache_dir=cache, sha256="1" * 64)  # noqa: E731
    failure(cache, call, "sha256 mismatch for ckpt.zip", str(archive.resolve()))


# --- fetch_file ------------------------------------------------------------------


def test_squad_urls_are_the_official_ones():
    assert SQUAD_V11_URLS == {
        "dev": "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json",
        "train": "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json",
    }


def test_fetch_file_json_and_cache_hit(http_server, cache):
    body = b'{"version": "1.1", "data": []}'
    http_server.route("/dataset/dev-v1.1.json", body=body, content_type="application/json")
    url = http_server.url("/dataset/dev-v1.1.json")
    path = fetch_file(url, cache_dir=cache, sha256=hashlib.sha256(body).hexdigest(), retry=FAST)
    assert path.name == "dev-v1.1.json" and path.read_bytes() == body
    assert fetch_file(url, cache_dir=cache, sha256=hashlib.sha256(body).hexdigest()) == path
    assert len(http_server.log) == 1


def test_fetch_file_failures(http_server, cache):
    http_server.route("/dev.json", body=b"{}")
    url = http_server.url("/dev.json")
    failure(cache, lambda: fetch_file(url, cache_dir=cache, sha256="f" * 64), "sha256 mismatch for the download", url)
    failure(cache, lambda: fetch_file(url + "x", cache_dir=cache), "HTTP 404", url + "x")


def test_fetch_file_local_is_returned_in_place(tmp_path):
    f = tmp_path / "dev-v1.1.json"
    f.write_bytes(b"{}")
    assert fetch_file(str(f), sha256=hashlib.sha256(b"{}").hexdigest()) == f.resolve()
    with pytest.raises(UserInputError, match="a directory, expected a file"):
        fetch_file(str(tmp_path))


def test_progress_is_quiet_when_not_a_tty(http_server, cache, capsys):
    http_server.route("/dev.json", body=b"{}" * 1000)
    fetch_file(http_server.url("/dev.json"), cache_dir=cache)
    assert capsys.readouterr().err == ""


# --- the Prefect task wrapper ---------------------------------------------------------


def test_fetch_task_returns_the_model_info_the_flow_passes_on(tiny_checkpoint):
    from bertbuild.config import ModelSource
    from bertbuild.tasks.model import ModelInfo, fetch_model

    info = fetch_model.fn(ModelSource(source=str(tiny_checkpoint.parent)), "tiny")  # found in a nested folder
    assert info == ModelInfo("tiny", str(tiny_checkpoint.resolve()), str(tiny_checkpoint.resolve() / "vocab.txt"),
                             lower_case=True, num_layers=2)


def test_rebuilt_local_archive_is_not_shadowed_by_the_cache(tmp_path):
    archive = tmp_path / "ckpt.zip"
    archive.write_bytes(make_zip(ckpt_members()))
    first = fetch_checkpoint(str(archive), cache_dir=tmp_path / "c")
    archive.write_bytes(make_zip(ckpt_members("v2/")))
    second = fetch_checkpoint(str(archive), cache_dir=tmp_path / "c")
    assert second.name == "v2" and first != second


def test_default_endpoints_are_the_real_services():
    from bertbuild.fetch.sources import GDriveFile, NgcModel

    assert Endpoints().ngc_zip_url(NgcModel("nvidia", None, "bert", "1")) == (
        "https://api.ngc.nvidia.com/v2/models/nvidia/bert/versions/1/zip"
    )
    assert Endpoints().gdrive_url(GDriveFile("X1")) == "https://drive.google.com/uc?id=X1"


def test_a_second_process_waits_for_an_entry_being_built_then_uses_it(cache):
    """Fleet members on one host fetch the same source at once: one builds the entry, the next waits and reuses it.

    Without the lock both wrote into the same work directory, and one failed when the other published it.
    """
    import subprocess
    import sys

    from bertbuild.fetch.sources import parse_source, slug

    entry = CacheEntry(cache, cache_key("ckpt", "generated:tiny", None, slug(parse_source("generated:tiny"))))
    fetch = subprocess.Popen(
        [sys.executable, "-c", "import sys; from bertbuild.fetch.acquire import fetch_checkpoint; print('ready', flush=True); "
                               "print(fetch_checkpoint('generated:tiny', cache_dir=sys.argv[1]))", str(cache)],
        stdout=subprocess.PIPE, text=True)
    with entry.building():  # as a first process would, while it builds the entry
        assert fetch.stdout.readline().strip() == "ready"
        with pytest.raises(subprocess.TimeoutExpired):
            fetch.wait(timeout=3)  # waiting for the lock, having written nothing
        assert [p.name for p in cache.iterdir()] == ["unrelated-entry"]
        entry.final.mkdir()
        (entry.final / "built-by-the-first").write_text("")
    out, _ = fetch.communicate(timeout=120)
    assert fetch.returncode == 0 and out.strip() == str(entry.final)
    assert [p.name for p in entry.final.iterdir()] == ["built-by-the-first"]  # used, not built again
