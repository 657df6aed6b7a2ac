"""Parsing source strings: every accepted form, and clear errors for the rest."""

import pytest

from bertbuild.errors import UserInputError
from bertbuild.fetch.sources import GDriveFile, HttpUrl, LocalDir, LocalFile, NgcModel, parse_source, slug


def test_ngc_without_team():
    src = parse_source("ngc://nvidia/bert_tf_ckpt_large_qa_squad11_amp_384:19.03.1")
    assert src == NgcModel("nvidia", None, "bert_tf_ckpt_large_qa_squad11_amp_384", "19.03.1")
    assert src.model_path == "nvidia/bert_tf_ckpt_large_qa_squad11_amp_384"
    assert src.display == "ngc://nvidia/bert_tf_ckpt_large_qa_squad11_amp_384:19.03.1"


def test_ngc_with_team():
    src = parse_source("ngc://nvidia/tao/bert_base:v1.0")
    assert src == NgcModel("nvidia", "tao", "bert_base", "v1.0")
    assert src.model_path == "nvidia/tao/bert_base"
    assert slug(src) == "bert_base_v1.0"


@pytest.mark.parametrize(
    "text",
    [
        "gdrive://1AbCdEf_gh-IJ",
        "https://drive.google.com/file/d/1AbCdEf_gh-IJ/view?usp=sharing",
        "https://drive.google.com/file/d/1AbCdEf_gh-IJ",
        "https://drive.google.com/open?id=1AbCdEf_gh-IJ",
        "https://drive.google.com/uc?id=1AbCdEf_gh-IJ&export=download",
    ],
)
def test_google_drive_forms(text):
    assert parse_source(text) == GDriveFile("1AbCdEf_gh-IJ")


def test_http_urls_and_filename():
    src = parse_source("https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json")
    assert isinstance(src, HttpUrl)
    assert src.filename == "dev-v1.1.json"
    assert parse_source("http://example.org/").filename == "download"


def test_http_display_hides_credentials():
    src = parse_source("https://alice:hunter2@example.org/ckpt.zip")
    assert "hunter2" not in src.display and "alice" not in src.display
    assert src.display == "https://***@example.org/ckpt.zip"


def test_local_paths_and_file_urls(tmp_path):
    archive = tmp_path / "ckpt.zip"
    archive.write_bytes(b"zip")
    assert parse_source(str(tmp_path)) == LocalDir(tmp_path.resolve())
    assert parse_source(str(archive)) == LocalFile(archive.resolve())
    assert parse_source(archive.as_uri()) == LocalFile(archive.resolve())
    assert parse_source(tmp_path.as_uri()) == LocalDir(tmp_path.resolve())


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ckpt").mkdir()
    assert parse_source("~/ckpt") == LocalDir((tmp_path / "ckpt").resolve())


@pytest.mark.parametrize(
    "text, cause",
    [
        ("", "empty"),
        ("ngc://nvidia/bert", "ngc://org/name:version"),
        ("ngc://nvidia/a/b/c:1", "ngc://org/name:version"),
        ("ngc://", "ngc://org/name:version"),
        ("gdrive://", "gdrive://<file-id>"),
        ("gdrive://bad/id", "gdrive://<file-id>"),
        ("https://drive.google.com/drive/folders/abc", "without a file id"),
        ("s3://bucket/ckpt.zip", "unsupported scheme s3://"),
        ("http://", "no host"),
        ("file://remotehost/x.zip", "local path"),
        ("/definitely/not/here.zip", "no such file or directory"),
    ],
)
def test_malformed_sources_raise_user_input_error(text, cause):
    with pytest.raises(UserInputError) as err:
        parse_source(text)
    message = str(err.value)
    assert "\n" not in message
    assert cause in message
    assert repr(text) in message
    assert err.value.exit_code == 2


def test_missing_file_url(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        parse_source((tmp_path / "gone.zip").as_uri())


def test_local_file_slug(tmp_path):
    (tmp_path / "my ckpt.tar.gz").write_bytes(b"x")
    assert slug(parse_source(str(tmp_path / "my ckpt.tar.gz"))) == "my_ckpt.tar.gz"
    assert slug(parse_source("gdrive://abc")) == "gdrive-abc"
