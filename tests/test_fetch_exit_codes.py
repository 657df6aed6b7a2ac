"""The exit-code rule for fetching: 2 for a mistake in what the user gave, 1 for what retries could not get past.

A missing file, an HTTP 404, a text file or an empty/truncated archive as the source, a folder without a
checkpoint or a wrong `--sha256` is the user's to fix (exit 2, like every other bad input); a server that kept
answering 503, or a full disk, is transient (exit 1, like a failed build).
"""

from __future__ import annotations

import errno
import io
import zipfile

import pytest

from bertbuild.cli import main
from bertbuild.errors import FetchError, FetchFailed
from bertbuild.fetch.download import RetryPolicy
from bertbuild.fetch.acquire import Endpoints, fetch_checkpoint
from httpserver import CKPT_FILES, http_server, make_zip  # noqa: F401

FAST = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)


def _cli(argv, capsys) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture()
def sources(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w"):
        pass
    whole = io.BytesIO()
    with zipfile.ZipFile(whole, "w") as archive:
        for name, data in CKPT_FILES.items():
            archive.writestr(f"ckpt/{name}", data)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    empty_dir = tmp_path / "empty-dir"
    empty_dir.mkdir()
    good = tmp_path / "good.zip"
    good.write_bytes(whole.getvalue())
    return {"text": text, "empty_zip": empty_zip, "truncated": truncated, "empty_dir": empty_dir, "good": good,
            "missing": tmp_path / "missing.zip"}


@pytest.mark.parametrize("source, extra, fragment", [
    ("missing", [], "no such file or directory"),
    ("text", [], "not a zip or tar archive"),
    ("empty_zip", [], "no checkpoint found"),
    ("truncated", [], "not a zip or tar archive"),
    ("empty_dir", [], "no checkpoint found"),
    ("good", ["--sha256", "0" * 64], "sha256 mismatch"),
])
def test_a_source_the_user_got_wrong_exits_2(source, extra, fragment, sources, tmp_path, capsys):
    code, lines = _cli(["fetch", sources[source], "--cache-dir", tmp_path / "cache", *extra], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bertbuild: error:"), (code, lines)
    assert fragment in lines[0], lines


def test_an_http_404_exits_2(http_server, tmp_path, capsys):  # noqa: F811
    code, lines = _cli(["fetch", f"{http_server.base}/nothing-here.zip", "--cache-dir", tmp_path / "cache"], capsys)
    assert code == 2 and len(lines) == 1 and "HTTP 404" in lines[0], lines


def test_a_server_that_keeps_failing_is_transient_exit_1(http_server, tmp_path):  # noqa: F811
    http_server.route("/ckpt.zip", body=make_zip({"ckpt/bert_config.json": b"{}"}), fail_times=99)
    with pytest.raises(FetchFailed, match="HTTP 503.*gave up after 2 attempts") as err:
        fetch_checkpoint(f"{http_server.base}/ckpt.zip", cache_dir=tmp_path / "cache", retry=FAST)
    assert err.value.exit_code == 1 and isinstance(err.value, FetchError)  # callers catching FetchError still do


def test_a_full_disk_while_fetching_is_exit_1(sources, tmp_path, monkeypatch):
    from bertbuild.fetch import archive

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache"))

    monkeypatch.setattr(archive, "extract_archive", full)
    monkeypatch.setattr("bertbuild.fetch.acquire.extract_archive", full)
    with pytest.raises(FetchFailed, match="No space left on device") as err:
        fetch_checkpoint(str(sources["good"]), cache_dir=tmp_path / "cache")
    assert err.value.exit_code == 1
