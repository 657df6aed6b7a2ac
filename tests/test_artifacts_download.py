"""download + `bertbuild artifacts list|download`: verified, all-or-nothing, precision-selectable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bertbuild.artifacts.download import download, select_files, verify_dir
from bertbuild.artifacts.manifest import Manifest
from bertbuild.errors import IntegrityError
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.cli import main
from bertbuild.errors import UserInputError

PASS = [GateResult("e", "parity", 1e-6, 1e-4, True, "max")]
NAMES = ("model-fp32.onnx", "model-int8.onnx", "engines/int8/bert-b8.plan", "engines/fp16/bert-b8.plan",
         "results.json", "predictions-onnxruntime-fp32.json", "predictions-trt-int8.json", "plots/accuracy.png")
# What the flow's `artifacts.layout.Bundle` records for these files (None: the whole run's).
PRECISIONS = {"model-fp32.onnx": "fp32", "model-int8.onnx": "int8", "engines/int8/bert-b8.plan": "int8",
              "engines/fp16/bert-b8.plan": "fp16", "predictions-onnxruntime-fp32.json": "fp32",
              "predictions-trt-int8.json": "int8"}


def publish(store, tmp_path, run_id="r1", model="tiny", precisions=PRECISIONS):
    src = tmp_path / f"src-{run_id}"
    src.mkdir()
    files = {}
    for name in NAMES:
        path = src / name.replace("/", "__")
        path.write_bytes(os.urandom(1000) + name.encode())
        files[name] = path
    publish_bundle(store, model, run_id, files, {}, PASS, True, precisions=precisions)
    return files


def stored_path(store, model, run_id, name):
    """Where the store keeps the bytes of one file of a released bundle."""
    return store.content_path(store.run_path(model, run_id), store.read_manifest(model, run_id), name)


def tamper(store, model, run_id, name):
    path = stored_path(store, model, run_id, name)
    data = bytearray(store.read_bytes(path))
    data[10] ^= 0xFF  # same size, different bytes
    store.write_atomic(path, bytes(data))


def test_download_latest_verifies_every_file(store, tmp_path):
    files = publish(store, tmp_path)
    result = download(store, "tiny", tmp_path / "dest")
    assert result.run_id == "r1" and result.dest == (tmp_path / "dest").absolute()
    for name, path in files.items():
        assert (tmp_path / "dest" / name).read_bytes() == path.read_bytes()
    manifest = verify_dir(tmp_path / "dest")
    assert set(manifest.files) == set(NAMES)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")] == []


def test_tampered_file_refuses_and_leaves_nothing(store, tmp_path):
    publish(store, tmp_path)
    tamper(store, "tiny", "r1", "engines/int8/bert-b8.plan")
    with pytest.raises(IntegrityError, match="engines/int8/bert-b8.plan"):
        download(store, "tiny", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp dir removed too


def test_missing_file_refuses(store, tmp_path):
    publish(store, tmp_path)
    store.remove_tree(stored_path(store, "tiny", "r1", "results.json"))
    with pytest.raises(IntegrityError, match="missing file: results.json"):
        download(store, "tiny", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_precision_selects_matching_files_plus_reports(store, tmp_path):
    publish(store, tmp_path)
    result = download(store, "tiny", tmp_path / "int8", precision="int8")
    got = sorted(str(p.relative_to(tmp_path / "int8")) for p in (tmp_path / "int8").rglob("*") if p.is_file())
    assert got == sorted(["engines/int8/bert-b8.plan", "manifest.json", "model-int8.onnx", "plots/accuracy.png",
                          "predictions-trt-int8.json", "results.json"])
    assert result.files[-1] == "manifest.json"
    with pytest.raises(UserInputError, match="no fp8 files.*fp32, fp16, int8"):
        download(store, "tiny", tmp_path / "fp8", precision="fp8")
    assert not (tmp_path / "fp8").exists()


def test_precision_comes_from_the_manifest_not_from_file_names(store, tmp_path):
    """A file is selected by the precision recorded for it, whatever its name says."""
    publish(store, tmp_path, precisions={**PRECISIONS, "engines/fp16/bert-b8.plan": "int8"})
    download(store, "tiny", tmp_path / "int8", precision="int8")
    assert (tmp_path / "int8" / "engines/fp16/bert-b8.plan").is_file()
    assert store.read_manifest("tiny", "r1").precision_of("results.json") is None


def test_a_bundle_that_recorded_no_precisions_is_downloaded_whole_only(store, tmp_path):
    publish(store, tmp_path, precisions=None)
    with pytest.raises(UserInputError, match="before bundles recorded each file's precision"):
        download(store, "tiny", tmp_path / "int8", precision="int8")
    assert not (tmp_path / "int8").exists()
    assert len(download(store, "tiny", tmp_path / "all").files) == len(NAMES) + 1  # + manifest.json


def test_select_files_without_precision_is_everything():
    manifest = Manifest(model="m", run_id="r", passed=True, files={n: {"sha256": "0" * 64, "size": 0} for n in NAMES})
    assert select_files(manifest, None) == sorted(NAMES)


def test_specific_run_and_unknown_run(store, tmp_path):
    publish(store, tmp_path, "r1")
    publish(store, tmp_path, "r2")
    assert download(store, "tiny", tmp_path / "a", run="r1").run_id == "r1"
    assert download(store, "tiny", tmp_path / "b", run="latest").run_id == "r2"
    with pytest.raises(UserInputError, match="no complete bundle for run r9"):
        download(store, "tiny", tmp_path / "c", run="r9")


def test_dest_must_be_absent_or_empty(store, tmp_path):
    publish(store, tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError, match="already exists"):
        download(store, "tiny", tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    download(store, "tiny", tmp_path / "empty")
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_model_defaults_to_the_only_one(store, tmp_path):
    with pytest.raises(UserInputError, match="no models"):
        download(store, None, tmp_path / "x")
    publish(store, tmp_path, model="a")
    assert download(store, None, tmp_path / "y").model == "a"
    publish(store, tmp_path, run_id="r2", model="b")
    with pytest.raises(UserInputError, match="several models"):
        download(store, None, tmp_path / "z")


# -- CLI ---------------------------------------------------------------------

def test_cli_list_and_download(tmp_path, capsys):
    store = ArtifactStore(tmp_path / "store")
    publish(store, tmp_path, "r1")
    publish(store, tmp_path, "r2")
    publish_bundle(store, "tiny", "r3", {"results.json": tmp_path / "src-r1" / "results.json"}, {},
                   [GateResult("e", "parity", 1.0, 1e-4, False, "max")], False)
    assert main(["artifacts", "list", "--store", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    assert "r2*" in out and "r1 " in out and "r3" not in out and "passed" in out
    assert main(["artifacts", "list", "--store", str(tmp_path / "store"), "--failed"]) == 0
    assert "r3" in capsys.readouterr().out

    assert main(["artifacts", "download", "--store", str(tmp_path / "store"), "--model", "tiny",
                 "--run", "r1", "--precision", "fp16", "--dest", str(tmp_path / "dl")]) == 0
    assert "verified" in capsys.readouterr().out
    assert (tmp_path / "dl" / "engines" / "fp16" / "bert-b8.plan").is_file()
    assert not (tmp_path / "dl" / "model-fp32.onnx").exists()


def test_cli_tampered_download_exits_1_with_one_line(tmp_path, capsys):
    store = ArtifactStore(tmp_path / "store")
    publish(store, tmp_path)
    tamper(store, "tiny", "r1", "model-fp32.onnx")
    code = main(["artifacts", "download", "--store", str(tmp_path / "store"), "--model", "tiny",
                 "--run", "latest", "--dest", str(tmp_path / "dl")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("bertbuild: error: checksum mismatch: model-fp32.onnx")
    assert not (tmp_path / "dl").exists()


def test_cli_uses_bertbuild_store_env(tmp_path, capsys, monkeypatch):
    store = ArtifactStore(tmp_path / "envstore")
    publish(store, tmp_path)
    monkeypatch.setenv("BERTBUILD_STORE", str(tmp_path / "envstore"))
    assert main(["artifacts", "download", "--dest", str(tmp_path / "dl")]) == 0
    assert (tmp_path / "dl" / "manifest.json").is_file()
    assert main(["artifacts", "download", "--run", "nope", "--dest", str(tmp_path / "dl2")]) == 2


def test_cli_list_empty_store(tmp_path, capsys):
    assert main(["artifacts", "list", "--store", str(tmp_path / "none")]) == 0
    assert "no bundles" in capsys.readouterr().out


def test_cli_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = ("import sys, argparse, bertbuild.commands.artifacts as a; "
            "a.add_parser(argparse.ArgumentParser().add_subparsers()); "
            "print(any(m in sys.modules for m in ('tensorflow', 'fsspec', 'matplotlib', 'prefect')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"
