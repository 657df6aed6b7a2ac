"""prune: old runs and unreferenced blobs go; latest, kept manifests' blobs and in-flight publishes' blobs stay."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bertbuild.artifacts import handshake
from bertbuild.artifacts.download import download
from bertbuild.artifacts.handshake import announce_prune, announce_publish, finish_prune
from bertbuild.artifacts.prune import plan_prune, prune
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore, new_token
from bertbuild.cli import main
from bertbuild.errors import BertbuildError, IntegrityError, UserInputError
from bertbuild.hashing import sha256_bytes, sha256_file

PASS = [GateResult("e", "parity", None, None, True, "max")]
FAIL = [GateResult("e", "parity", None, None, False, "max")]


def files_for(directory: Path, shared: Path | None = None) -> dict[str, Path]:
    """A fresh model file and report per run, plus an optional file every run shares."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(os.urandom(2048))
    (directory / "results.json").write_bytes(os.urandom(64))
    files = {"model.onnx": directory / "model.onnx", "results.json": directory / "results.json"}
    if shared is not None:
        files["vocab.txt"] = shared
    return files


def publish_runs(store, tmp_path, model, run_ids, shared=None, passed=True) -> dict[str, dict[str, Path]]:
    runs = {}
    for run_id in run_ids:
        runs[run_id] = files_for(tmp_path / model / run_id, shared)
        publish_bundle(store, model, run_id, runs[run_id], {}, PASS if passed else FAIL, passed)
    return runs


def digests(files: dict[str, Path]) -> set[str]:
    return {sha256_file(p) for p in files.values()}


@pytest.fixture
def shared(tmp_path) -> Path:
    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n[UNK]\n" * 100)
    return path


def test_dry_run_lists_and_removes_nothing(store, tmp_path, shared):
    runs = publish_runs(store, tmp_path, "tiny", ["r1", "r2", "r3"], shared)
    failed = publish_runs(store, tmp_path, "tiny", ["f1", "f2"], passed=False)
    before = store.file_sizes(store.root)
    plan = prune(store, "tiny", 1)
    assert plan.runs == ["r1", "r2"] and plan.failed_runs == ["f1"] and plan.latest == "r3"
    gone = digests(runs["r1"]) | digests(runs["r2"]) | {sha256_file(failed["f1"]["results.json"])}  # reports only
    assert set(plan.blobs) == gone - {sha256_file(shared)}
    assert plan.blob_bytes == sum(plan.blobs.values()) > 0
    assert store.file_sizes(store.root) == before


def test_apply_removes_old_runs_and_their_blobs_only(store, tmp_path, shared):
    runs = publish_runs(store, tmp_path, "tiny", ["r1", "r2", "r3"], shared)
    publish_runs(store, tmp_path, "tiny", ["f1", "f2"], passed=False)
    plan = prune(store, "tiny", 2, apply=True)
    assert plan.runs == ["r1"] and plan.failed_runs == []
    assert store.runs("tiny") == ["r2", "r3"] and store.runs("tiny", failed=True) == ["f1", "f2"]
    assert not store.exists(store.run_path("tiny", "r1"))
    assert set(store.blobs()).isdisjoint(digests(runs["r1"]) - {sha256_file(shared)})
    for run_id in ("r2", "r3"):  # every kept run still downloads and verifies
        download(store, "tiny", tmp_path / "dl" / run_id, run=run_id)
    assert store.list_files(store.path(".pruning")) == []  # the marker is gone
    assert prune(store, "tiny", 2).empty


def test_latest_is_kept_even_when_older_than_the_newest_n(store, tmp_path):
    publish_runs(store, tmp_path, "tiny", ["r1", "r2", "r3"])
    store.set_latest("tiny", "r1")  # e.g. rolled back by hand
    plan = prune(store, "tiny", 1, apply=True)
    assert plan.runs == ["r2"]
    assert store.runs("tiny") == ["r1", "r3"]
    download(store, "tiny", tmp_path / "dl")
    assert prune(store, "tiny", 0, apply=True).runs == ["r3"] and store.runs("tiny") == ["r1"]


def test_blobs_of_other_models_and_kept_runs_stay(store, tmp_path, shared):
    publish_runs(store, tmp_path, "tiny", ["r1", "r2"], shared)
    other = publish_runs(store, tmp_path, "other", ["o1"])
    # tiny's r3 reuses o1's model bytes; r1 and r2 go, and every blob o1 and r3 list must stay.
    publish_bundle(store, "tiny", "r3", {"model.onnx": other["o1"]["model.onnx"], "vocab.txt": shared}, {}, PASS, True)
    prune(store, "tiny", 1, apply=True)
    assert store.runs("tiny") == ["r3"] and store.runs("other") == ["o1"]
    assert digests(other["o1"]) | {sha256_file(shared)} <= set(store.blobs())
    download(store, "other", tmp_path / "dl-other")
    download(store, "tiny", tmp_path / "dl-tiny")


def test_blobs_announced_by_a_publish_in_progress_stay(store, tmp_path):
    publish_runs(store, tmp_path, "tiny", ["r1", "r2"])
    orphan = b"uploaded by a publish whose manifest is not written yet"
    store.write_atomic(store.blob_path(sha256_bytes(orphan)), orphan)
    token = new_token()
    announce_publish(store, token, [sha256_bytes(orphan)])
    plan = prune(store, "tiny", 2, apply=True)
    assert plan.pending == [sha256_bytes(orphan)] and not plan.blobs
    assert store.exists(store.blob_path(sha256_bytes(orphan)))
    store.remove_tree(store.staging_path(token))  # that publish failed and cleaned up
    assert prune(store, "tiny", 2, apply=True).blobs == {sha256_bytes(orphan): len(orphan)}
    assert not store.exists(store.blob_path(sha256_bytes(orphan)))


def test_a_killed_publish_protects_its_blobs_for_a_day_only(store, tmp_path):
    orphan = b"left by a publish killed two days ago"
    store.write_atomic(store.blob_path(sha256_bytes(orphan)), orphan)
    token = new_token(datetime.now(timezone.utc) - timedelta(days=2))
    announce_publish(store, token, [sha256_bytes(orphan)])
    plan = prune(store, "tiny", 1)
    assert plan.stale_staging == [token] and sha256_bytes(orphan) in plan.blobs
    prune(store, "tiny", 1, apply=True)
    assert store.children(store.path(".staging")) == [] and store.blobs() == {}


def test_an_unreadable_manifest_stops_the_prune(store, tmp_path):
    publish_runs(store, tmp_path, "tiny", ["r1", "r2"])
    store.write_atomic(f"{store.run_path('other', 'x')}/manifest.json", b"{not json")
    before = store.file_sizes(store.root)
    with pytest.raises(IntegrityError, match="cannot tell which blobs are in use: run x of other"):
        prune(store, "tiny", 1, apply=True)
    assert store.file_sizes(store.root) == before


def test_keep_must_not_be_negative(store):
    with pytest.raises(UserInputError, match="--keep"):
        prune(store, "tiny", -1)


# -- publish and prune at the same time ----------------------------------------------

def test_publish_waits_while_a_prune_runs(store, tmp_path, monkeypatch):
    monkeypatch.setattr(handshake, "POLL_S", 0.01)
    token = announce_prune(store)
    files = files_for(tmp_path / "a")
    done = threading.Event()
    worker = threading.Thread(target=lambda: (publish_bundle(store, "tiny", "r1", files, {}, PASS, True),
                                              done.set()))
    worker.start()
    try:
        assert not done.wait(0.5)
        assert store.runs("tiny") == [] and store.blobs() == {}  # nothing checked or uploaded yet
    finally:
        finish_prune(store, token)
    worker.join(timeout=30)
    assert done.is_set() and store.runs("tiny") == ["r1"]


def test_a_stale_prune_marker_is_ignored(store, tmp_path):
    announce_prune(store, datetime.now(timezone.utc) - timedelta(hours=2))
    publish_bundle(store, "tiny", "r1", files_for(tmp_path / "a"), {}, PASS, True)
    assert store.runs("tiny") == ["r1"]


def test_publish_racing_a_prune_that_deletes_its_blob(store, tmp_path, monkeypatch):
    """The prune has already planned to delete a blob when a publish that reuses it starts."""
    monkeypatch.setattr(handshake, "POLL_S", 0.01)
    old = publish_runs(store, tmp_path, "tiny", ["r1", "r2"])
    reused = old["r1"]["model.onnx"]  # r1 is pruned below, so its model blob is planned for deletion
    new_files = {"model.onnx": reused, "results.json": old["r2"]["results.json"]}
    errors = []

    def start_publish_mid_prune(step, name):
        if step == "blob" and not errors and name == sha256_file(reused):
            thread = threading.Thread(target=publish_r3)
            thread.start()
            errors.append(thread)
            deadline = time.monotonic() + 10
            while not any(f.endswith("pending.json") for f in store.list_files(store.path(".staging"))):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(0.3)  # a publish that did not wait would check the blob (still there) now

    def publish_r3():
        publish_bundle(store, "tiny", "r3", new_files, {}, PASS, True)

    prune(store, "tiny", 1, apply=True, hook=start_publish_mid_prune)
    errors[0].join(timeout=30)
    assert store.runs("tiny") == ["r2", "r3"]
    assert store.exists(store.blob_path(sha256_file(reused)))
    download(store, "tiny", tmp_path / "dl", run="r3")


def test_prune_stops_before_its_marker_goes_stale(store, tmp_path, monkeypatch):
    publish_runs(store, tmp_path, "tiny", ["r1", "r2"])
    monkeypatch.setattr(handshake, "PRUNE_MAX_S", handshake.PRUNE_MARGIN_S)  # no time left at all
    with pytest.raises(BertbuildError, match="prune ran too long"):
        prune(store, "tiny", 1, apply=True)
    assert store.runs("tiny") == ["r2"] and len(store.blobs()) == 4  # the run went, no blob did
    assert store.list_files(store.path(".pruning")) == []


# -- CLI -----------------------------------------------------------------------

def test_cli_prune_is_a_dry_run_unless_yes(tmp_path, capsys):
    store = ArtifactStore(tmp_path / "store")
    runs = publish_runs(store, tmp_path, "tiny", ["r1", "r2"])
    args = ["artifacts", "prune", "--store", str(tmp_path / "store"), "--model", "tiny", "--keep", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "would remove 1 released runs: r1" in out and "dry run: nothing was removed" in out
    assert sha256_file(runs["r1"]["model.onnx"]) in out and store.runs("tiny") == ["r1", "r2"]
    assert main([*args, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 released runs: r1" in out and "dry run" not in out
    assert store.runs("tiny") == ["r2"]
    assert main(args) == 0 and "nothing to remove" in capsys.readouterr().out


def test_cli_prune_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: one line, exit 2
        main(["artifacts", "prune", "--store", str(tmp_path), "--model", "tiny", "--keep", "-1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert err.startswith("bertbuild: error: artifacts prune: argument --keep: must be >= 0 (got -1)")
