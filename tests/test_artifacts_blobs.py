"""Content-addressed storage: each distinct file stored once, downloads unchanged for users."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bertbuild.artifacts.download import download
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.errors import IntegrityError
from bertbuild.hashing import sha256_bytes, sha256_file
from bundlefiles import write_files

PASS = [GateResult("e", "parity", 1e-6, 1e-4, True, "max")]
FAIL = [GateResult("e", "parity", 1.0, 1e-4, False, "max")]


def make_bundle(directory: Path, model_bytes: int = 1 << 20) -> dict[str, Path]:
    """A bundle shaped like a real one: large model and engine files, small reports."""
    contents = {
        "model-fp32.onnx": os.urandom(model_bytes),
        "model-fp16.onnx": os.urandom(model_bytes // 2),
        "engines/fp16/bert-b8.plan": os.urandom(model_bytes // 2),
        "vocab.txt": os.urandom(4096),
        "results.json": b'{"results": []}',
        "predictions-onnxruntime-fp32.json": b'{"q1": "Denver Broncos"}',
        "plots/accuracy.png": os.urandom(20_000),
    }
    return write_files(directory, contents)


def stored_bytes(store: ArtifactStore) -> int:
    return sum(store.file_sizes(store.root).values())


def test_second_identical_publish_adds_only_its_manifest(store, tmp_path, capsys):
    files = make_bundle(tmp_path / "run")
    first = publish_bundle(store, "tiny", "r1", files, {}, PASS, True)
    after_first = stored_bytes(store)
    second = publish_bundle(store, "tiny", "r2", files, {}, PASS, True)
    added = stored_bytes(store) - after_first

    assert first.uploaded_bytes == sum(p.stat().st_size for p in files.values()) and second.uploaded_bytes == 0
    assert added == len(store.read_manifest_bytes("tiny", "r2"))  # the pointer only changed its run id
    assert added < 0.05 * after_first
    with capsys.disabled():
        print(f"\n[storage] first publish stored {after_first} bytes; an identical second publish added "
              f"{added} bytes ({100 * added / after_first:.3f} %)")
    assert store.latest("tiny") == "r2"
    download(store, "tiny", tmp_path / "dl")
    for name, path in files.items():
        assert (tmp_path / "dl" / name).read_bytes() == path.read_bytes()


def test_a_changed_file_adds_only_its_own_blob(store, tmp_path):
    files = make_bundle(tmp_path / "run")
    publish_bundle(store, "tiny", "r1", files, {}, PASS, True)
    files["results.json"] = tmp_path / "results2.json"
    files["results.json"].write_bytes(b'{"results": [1]}')
    result = publish_bundle(store, "tiny", "r2", files, {}, PASS, True)
    assert result.uploaded_bytes == len(b'{"results": [1]}')
    assert len(store.blobs()) == len(files) + 1


def test_identical_files_within_a_bundle_and_across_models_share_one_blob(store, tmp_path):
    same = tmp_path / "same.bin"
    same.write_bytes(b"x" * 1000)
    files = {"a.onnx": same, "copy/a.onnx": same, "results.json": same}
    publish_bundle(store, "one", "r1", files, {}, PASS, True)
    publish_bundle(store, "two", "r1", files, {}, PASS, True)
    assert store.blobs() == {sha256_file(same): 1000}
    download(store, "two", tmp_path / "dl")
    assert (tmp_path / "dl" / "copy" / "a.onnx").read_bytes() == b"x" * 1000


def test_failed_run_stores_its_reports_as_blobs_too(store, tmp_path):
    files = make_bundle(tmp_path / "run")
    publish_bundle(store, "tiny", "bad", files, {}, FAIL, False)
    manifest = store.read_manifest("tiny", "bad", failed=True)
    assert set(manifest.files) == {"vocab.txt", "results.json", "predictions-onnxruntime-fp32.json",
                                   "plots/accuracy.png"}
    assert set(store.blobs()) == {e["sha256"] for e in manifest.files.values()}  # no model or engine bytes
    assert store.list_files(store.failed_path("tiny", "bad")) == ["manifest.json"]


def test_a_truncated_blob_is_uploaded_again(store, tmp_path):
    files = make_bundle(tmp_path / "run", model_bytes=4096)
    publish_bundle(store, "tiny", "r1", files, {}, PASS, True)
    blob = store.blob_path(sha256_file(files["model-fp32.onnx"]))
    store.write_atomic(blob, store.read_bytes(blob)[:100])  # e.g. a bucket copy that was cut short
    result = publish_bundle(store, "tiny", "r2", files, {}, PASS, True)
    assert result.uploaded_bytes == 4096
    assert sha256_bytes(store.read_bytes(blob)) == sha256_file(files["model-fp32.onnx"])


def test_blob_paths_are_sharded_by_hash_prefix(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    digest = sha256_bytes(b"x")
    assert store.blob_path(digest) == f"{store.root}/blobs/sha256/{digest[:2]}/{digest}"
    with pytest.raises(IntegrityError, match="not a sha256"):
        store.blob_path("../../etc")
