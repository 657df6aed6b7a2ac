"""Concurrent publishers and readers in separate OS processes, on a local store and on a real S3 server.

Each round two processes publish different runs of one model at the same
moment (both new blobs of their own, and one new blob they share), while a
third downloads `latest` over and over. After every round both bundles are
complete and verified and `latest` names one of them; every download the
reader made was a complete, verified release.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bertbuild.artifacts.download import download
from bertbuild.artifacts.manifest import sha256_and_size
from bertbuild.artifacts.prune import prune
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore
from bundlefiles import write_files

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "store_worker.py"
MODEL = "tiny"
ROUNDS = 12
TIME_BUDGET_S = 60.0  # no new round starts after this; each wait below has its own timeout
PASS = [GateResult("onnxruntime-fp32", "parity", 1e-6, 1e-4, True, "max")]


class Worker:
    """One `store_worker.py` process; its JSON lines arrive on a queue (so every wait has a timeout)."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, str(WORKER), *args], cwd=PROJECT_ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next(self, timeout: float) -> dict:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker {self.proc.args[2:4]} said nothing for {timeout} s "
                                 f"(exit {self.proc.poll()})") from None

    def drain(self) -> list[dict]:
        out = []
        while not self.lines.empty():
            out.append(self.lines.get())
        return out

    def close(self) -> str:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stderr.read()


def round_files(root: Path, round_: int, run_id: str) -> Path:
    """A run's files: one blob shared by every run, one shared by this round's two runs, two of its own."""
    shared_now = round_.to_bytes(4, "big") * 64 * 1024  # 256 KiB, new this round, both publishers upload it
    directory = root / run_id
    write_files(directory, {
        "vocab.txt": b"the same in every run\n" * 100,
        "model-fp32.onnx": shared_now,
        "engines/fp16/bert.plan": os.urandom(192 * 1024) + run_id.encode(),
        "predictions-onnxruntime-fp32.json": json.dumps({"q": run_id}).encode(),
        "results.json": json.dumps({"run": run_id}).encode(),
    })
    return directory


def files_in(directory: Path) -> dict[str, Path]:
    """Bundle name -> file, as `round_files` (and `store_worker.py`) lay them out."""
    return {p.name.replace("__", "/"): p for p in directory.iterdir()}


def assert_complete(store: ArtifactStore, run_id: str, directory: Path) -> None:
    """The run's manifest lists exactly its files and every blob it names is stored, bytes verified."""
    manifest = store.read_manifest(MODEL, run_id)
    assert manifest is not None, f"{run_id} has no manifest"
    local = files_in(directory)
    assert set(manifest.files) == set(local)
    for name, path in local.items():
        assert store.digest(store.blob_path(manifest.files[name]["sha256"])) == sha256_and_size(path), name


@pytest.fixture(params=["local", "s3"])
def shared_store(request, tmp_path):
    """(store seen from this process, its URL, the environment a worker process reaches it with)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                                       os.environ.get("PYTHONPATH")]))}
    if request.param == "local":
        url = str(tmp_path / "store")
        return ArtifactStore(url), url, env
    s3 = request.getfixturevalue("s3_server")
    url = f"s3://{s3.new_bucket()}/store"
    return ArtifactStore(url, **s3.storage_options()), url, {**env, **s3.env()}


def test_two_publisher_processes_and_a_reader(shared_store, tmp_path):
    store, url, env = shared_store
    publishers = [Worker(["publish", url, MODEL], env) for _ in range(2)]
    stop = tmp_path / "stop-reading"
    reader = Worker(["read", url, MODEL, str(tmp_path / "reads"), str(stop)], env)
    published: dict[str, Path] = {}
    windows = []  # (t0, t1) of every publish
    started = time.monotonic()
    try:
        rounds = 0
        while rounds < ROUNDS and time.monotonic() - started < TIME_BUDGET_S:
            runs = [f"r{rounds:03d}-{side}" for side in "ab"]
            dirs = {run_id: round_files(tmp_path / "files", rounds, run_id) for run_id in runs}
            start_at = time.time() + 0.3  # both start at this moment (one clock: one host)
            for worker, run_id in zip(publishers, runs):
                worker.send(f"{run_id} {dirs[run_id]} {start_at}")
            results = {}
            for worker in publishers:
                said = worker.next(timeout=60)
                assert "error" not in said, said
                results[said["run"]] = said
                windows.append((said["t0"], said["t1"]))
            assert set(results) == set(runs)
            for run_id in runs:
                assert_complete(store, run_id, dirs[run_id])
            latest = store.latest(MODEL)
            assert latest in runs, f"round {rounds}: latest is {latest}, not one of {runs}"
            # The last writer read its own run back right after writing the pointer.
            assert results[latest]["latest"] is True
            published.update(dirs)
            rounds += 1
        assert rounds >= 2, f"only {rounds} rounds in {TIME_BUDGET_S} s"
        assert sorted(store.runs(MODEL)) == sorted(published)
    finally:
        stop.write_text("")
        for worker in publishers:
            worker.close()
        reader_stderr = reader.close()
    reads = reader.drain()
    errors = [r for r in reads if "error" in r]
    assert not errors, f"{errors[:3]} {reader_stderr[-2000:]}"
    seen = [r for r in reads if "run" in r]
    assert seen, f"the reader never downloaded a release: {reader_stderr[-2000:]}"
    assert {r["run"] for r in seen} <= set(published)
    # Some downloads ran while a publish was in progress (the point of the reader).
    assert any(r["t0"] < t1 and r["t1"] > t0 for r in seen for t0, t1 in windows)


def test_a_prune_keeps_the_run_a_publish_is_about_to_make_latest(store, tmp_path):
    """keep=0 removes every run but latest; a run whose publish has yet to move `latest` must stay too."""
    for run_id in ("r1", "r2"):
        publish_bundle(store, MODEL, run_id, files_in(round_files(tmp_path, 0, run_id)), {}, PASS, True)
    at_pointer, go_on = threading.Event(), threading.Event()

    def hook(step, name):
        if step == "latest":
            at_pointer.set()
            assert go_on.wait(timeout=60)

    errors = []

    def publish_r3():
        try:
            publish_bundle(store, MODEL, "r3", files_in(round_files(tmp_path, 1, "r3")), {}, PASS, True, hook=hook)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=publish_r3)
    thread.start()
    try:
        assert at_pointer.wait(timeout=60)  # r3's manifest is written; latest still names r2
        plan = prune(store, MODEL, 0, apply=True)
    finally:
        go_on.set()
        thread.join(timeout=60)
    assert not errors
    assert plan.runs == ["r1"] and plan.publishing == ["r3"] and plan.latest == "r2"
    assert store.latest(MODEL) == "r3"
    assert_complete(store, "r3", tmp_path / "r3")
    assert download(store, MODEL, tmp_path / "dl").run_id == "r3"
    # Once published, r3 is protected by the pointer; r2 is now fair game.
    assert prune(store, MODEL, 0, apply=True).runs == ["r2"] and store.runs(MODEL) == ["r3"]
