"""Hostile manifests and tampered downloads: nothing is written at or outside --dest, one-line errors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from bertbuild.artifacts.download import download, verify_dir
from bertbuild.artifacts.names import bundle_name_problem, name_set_problem
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.cli import main
from bertbuild.errors import BertbuildError, IntegrityError
from bertbuild.hashing import sha256_bytes

PAYLOAD = b"pwned\n"


@pytest.mark.parametrize("name", ["model.onnx", "engines/int8/bert-b8.plan", "a.b/c-d_e+f.json", ".hidden",
                                  "unicod\u00e9.txt", "x" * 255])
def test_plain_relative_names_are_safe(name):
    assert bundle_name_problem(name) is None


@pytest.mark.parametrize("name, why", [
    ("../../pwned.txt", "'..'"), ("a/../../b", "'..'"), ("./a", "'.'"), ("a//b", "empty"), ("a/", "empty"),
    ("/etc/passwd", "absolute"), ("C:/Windows/x.dll", "drive"), ("C:x", "drive"), ("file.txt:stream", "drive"),
    ("..\\..\\pwned.txt", "backslash"), ("a\\b", "backslash"), ("", "non-empty"), ("a\x00b", "control"),
    ("a\nb", "control"), ("x" * 256, "255 bytes"), ("manifest.json", "manifest.json"), (7, "string"),
])
def test_unsafe_names_say_why(name, why):
    assert why in bundle_name_problem(name)


@pytest.mark.parametrize("names, why", [
    (["Model.onnx", "model.onnx"], "name the same file"),
    (["caf\u00e9.txt", "cafe\u0301.txt"], "name the same file"),  # NFC vs NFD spelling
    (["a", "a/b"], "needs it to be a directory"),
    (["A", "a/b/c"], "needs it to be a directory"),
])
def test_colliding_name_sets(names, why):
    assert why in name_set_problem(names)
    assert name_set_problem(["a/b", "a/c", "ab"]) is None


# -- hostile bundles in a store ---------------------------------------------------

def entry(data: bytes) -> dict:
    return {"sha256": sha256_bytes(data), "size": len(data)}


def plant(store: ArtifactStore, files: dict[str, bytes] | None = None, *, raw: bytes | None = None,
          run_id: str = "evil", with_blobs: bool = True) -> None:
    """A released bundle whose manifest lists `files` (or is `raw` bytes), blobs stored, `latest` pointing at it."""
    files = files or {}
    if with_blobs:
        for data in files.values():
            store.write_atomic(store.blob_path(sha256_bytes(data)), data)
    manifest = {"schema": 2, "model": "tiny", "run_id": run_id, "passed": True,
                "files": {name: entry(data) for name, data in files.items()}}
    store.write_atomic(f"{store.run_path('tiny', run_id)}/manifest.json", raw or json.dumps(manifest).encode())
    store.set_latest("tiny", run_id)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def work(tmp_path) -> Path:
    """The user's directory: downloads go to work/deep/er/dest, whose parents do not exist yet."""
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def assert_nothing_written(work: Path) -> None:
    assert tree(work) == []  # no dest, no temp dir, no parents, nothing climbed out


HOSTILE = {
    "climbing name": ({"ok.json": b"{}", "../../pwned.txt": PAYLOAD}, "unsafe file name '../../pwned.txt'"),
    "deep climb": ({"a/../../../../pwned.txt": PAYLOAD}, "unsafe file name 'a/../../../../pwned.txt'"),
    "absolute name": ({"/tmp/bertbuild-pwned.txt": PAYLOAD}, "unsafe file name '/tmp/bertbuild-pwned.txt'"),
    "drive name": ({"C:/pwned.txt": PAYLOAD}, "unsafe file name 'C:/pwned.txt'"),
    "backslash climb": ({"..\\..\\pwned.txt": PAYLOAD}, "contains a backslash"),
    "case duplicate": ({"model.onnx": b"a", "MODEL.onnx": PAYLOAD},
                       "colliding file names: 'model.onnx' and 'MODEL.onnx' name the same file"),
    "file and directory": ({"engines": b"a", "engines/x.plan": PAYLOAD},
                           "'engines' is a file but 'engines/x.plan' needs it to be a directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_names_are_refused_before_anything_is_written(store, work, case):
    files, message = HOSTILE[case]
    plant(store, files)
    with pytest.raises(IntegrityError, match=re.escape(message)):
        download(store, "tiny", work / "deep" / "er" / "dest")
    assert_nothing_written(work)
    assert not Path("/tmp/bertbuild-pwned.txt").exists()


def test_duplicate_json_key_is_refused(store, work):
    body = (b'{"schema": 2, "model": "tiny", "run_id": "evil", "passed": true, "files": {'
            b'"a.json": ' + json.dumps(entry(b"{}")).encode() + b', "a.json": ' +
            json.dumps(entry(PAYLOAD)).encode() + b"}}")
    plant(store, raw=body)
    with pytest.raises(IntegrityError, match="lists 'a.json' twice"):
        download(store, "tiny", work / "dest")
    assert_nothing_written(work)


@pytest.mark.parametrize("digest", ["../../../pwned", "A" * 64, "0" * 63, 12])
def test_digest_must_be_lowercase_hex_sha256(store, work, digest):
    manifest = {"schema": 2, "model": "tiny", "run_id": "evil", "passed": True,
                "files": {"a.json": {"sha256": digest, "size": 2}}}
    plant(store, raw=json.dumps(manifest).encode())
    with pytest.raises(IntegrityError, match="needs a lowercase hex sha256"):
        download(store, "tiny", work / "dest")
    assert_nothing_written(work)


def test_manifest_of_another_run_is_refused(store, work):
    plant(store, {"a.json": b"{}"})
    body = store.read_bytes(f"{store.run_path('tiny', 'evil')}/manifest.json").replace(b'"evil"', b'"other"')
    store.write_atomic(f"{store.run_path('tiny', 'evil')}/manifest.json", body)
    with pytest.raises(IntegrityError, match="describes run 'other'"):
        download(store, "tiny", work / "dest")
    assert_nothing_written(work)


def test_missing_blob_is_an_error_and_leaves_nothing(store, work):
    plant(store, {"a.json": b"{}", "b.onnx": b"model"})
    store.remove_tree(store.blob_path(sha256_bytes(b"model")))
    with pytest.raises(IntegrityError, match="missing file: b.onnx"):
        download(store, "tiny", work / "deep" / "dest")
    assert_nothing_written(work)


def test_extra_file_in_the_bundle_directory_is_an_error(store, work):
    plant(store, {"a.json": b"{}"})
    store.write_atomic(f"{store.run_path('tiny', 'evil')}/pwned.txt", PAYLOAD)
    with pytest.raises(IntegrityError, match="extra file: pwned.txt"):
        download(store, "tiny", work / "dest")
    assert_nothing_written(work)


def test_only_listed_names_are_fetched_and_identical_files_fetched_once(store, work):
    plant(store, {"a.json": b"same", "copy/a.json": b"same", "b.onnx": b"model"})
    store.write_atomic(store.blob_path(sha256_bytes(PAYLOAD)), PAYLOAD)  # an unrelated blob
    download(store, "tiny", work / "dest")
    assert tree(work / "dest") == ["a.json", "b.onnx", "copy", "copy/a.json", "manifest.json"]
    assert (work / "dest" / "copy" / "a.json").read_bytes() == b"same"


def test_schema_1_bundle_with_files_beside_the_manifest_still_downloads(store, work):
    files = {"a.json": b"{}", "engines/x.plan": b"engine"}
    for name, data in files.items():
        store.write_atomic(f"{store.run_path('tiny', 'old')}/{name}", data)
    plant(store, raw=json.dumps({"model": "tiny", "run_id": "old", "passed": True,
                                 "files": {n: entry(d) for n, d in files.items()}}).encode(), run_id="old")
    result = download(store, "tiny", work / "dest")
    assert not result.manifest.content_addressed
    assert (work / "dest" / "engines" / "x.plan").read_bytes() == b"engine"


# -- CLI -------------------------------------------------------------------------

@pytest.mark.parametrize("case, code", [("climbing name", 1), ("absolute name", 1), ("drive name", 1),
                                        ("case duplicate", 1), ("missing", 1), ("extra", 1)])
def test_cli_refuses_hostile_bundles_with_one_line(tmp_path, work, capsys, case, code):
    store = ArtifactStore(tmp_path / "store")
    if case == "missing":
        plant(store, {"a.json": b"{}"}, with_blobs=False)
    elif case == "extra":
        plant(store, {"a.json": b"{}"})
        store.write_atomic(f"{store.run_path('tiny', 'evil')}/extra.bin", PAYLOAD)
    else:
        plant(store, HOSTILE[case][0])
    assert main(["artifacts", "download", "--store", str(tmp_path / "store"), "--model", "tiny",
                 "--dest", str(work / "a" / "dest")]) == code
    err = capsys.readouterr().err
    assert err.startswith("bertbuild: error: ") and err.count("\n") == 1, err
    assert_nothing_written(work)


# -- verify_dir --------------------------------------------------------------------

@pytest.fixture
def downloaded(tmp_path) -> Path:
    store = ArtifactStore(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    files = {}
    for name in ("model-fp32.onnx", "model-int8.onnx", "results.json"):
        (src / name).write_bytes(os.urandom(64))
        files[name] = src / name
    publish_bundle(store, "tiny", "r1", files, {}, [GateResult("e", "parity", None, None, True, "max")], True,
                   precisions={"model-fp32.onnx": "fp32", "model-int8.onnx": "int8"})
    download(store, "tiny", tmp_path / "dl")
    return tmp_path / "dl"


def test_verify_dir_accepts_an_intact_download(downloaded):
    assert set(verify_dir(downloaded).files) == {"model-fp32.onnx", "model-int8.onnx", "results.json"}


def test_verify_dir_refuses_a_missing_file(downloaded):
    (downloaded / "model-int8.onnx").unlink()
    with pytest.raises(IntegrityError, match="missing file: model-int8.onnx"):
        verify_dir(downloaded)


def test_verify_dir_refuses_an_extra_file(downloaded):
    (downloaded / "engines").mkdir()
    (downloaded / "engines" / "planted.plan").write_bytes(b"x")
    with pytest.raises(IntegrityError, match="extra file: engines/planted.plan"):
        verify_dir(downloaded)


def test_verify_dir_refuses_a_changed_file_and_a_link(downloaded, tmp_path):
    (downloaded / "results.json").write_bytes(b"{}")
    with pytest.raises(IntegrityError, match="checksum mismatch: results.json"):
        verify_dir(downloaded)
    (downloaded / "results.json").unlink()
    (tmp_path / "elsewhere.json").write_bytes(b"{}")
    (downloaded / "results.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(IntegrityError, match="results.json: a symbolic link"):
        verify_dir(downloaded)


def test_verify_dir_of_a_precision_download(tmp_path, downloaded):
    store = ArtifactStore(tmp_path / "store")
    download(store, "tiny", tmp_path / "int8", precision="int8")
    assert set(verify_dir(tmp_path / "int8", precision="int8").files) == {"model-fp32.onnx", "model-int8.onnx",
                                                                          "results.json"}
    with pytest.raises(IntegrityError, match="missing file: model-fp32.onnx"):
        verify_dir(tmp_path / "int8")  # the whole bundle was not downloaded


def test_a_manifest_from_a_newer_bertbuild_is_refused(store, work):
    plant(store, raw=json.dumps({"schema": 99, "model": "tiny", "run_id": "evil", "files": {}}).encode())
    with pytest.raises(BertbuildError, match="schema 99, newer than this bertbuild reads"):
        download(store, "tiny", work / "dest")
    assert_nothing_written(work)
