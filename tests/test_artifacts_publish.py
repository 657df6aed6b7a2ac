"""publish_bundle: atomic, gated, concurrent-safe; the Prefect tasks that wrap it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bertbuild.artifacts.download import download
from bertbuild.artifacts.manifest import sha256_and_size
from bertbuild.errors import IntegrityError, RunConflict
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.errors import UserInputError
from bertbuild.reporting.run_plots import write_plots
from bundlefiles import write_files

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASS = [GateResult("e", "parity", 1e-6, 1e-4, True, "max")]
FAIL = [GateResult("e", "parity", 3e-2, 1e-4, False, "max", detail="ONNX FP32 differs from TensorFlow")]


def make_files(directory: Path, tag: str = "a", size: int = 4096) -> dict[str, Path]:
    contents = {
        "model-fp32.onnx": os.urandom(size),
        "model-int8.onnx": os.urandom(size // 2),
        "engines/fp16/bert.plan": os.urandom(size // 4),
        "results.json": f'{{"run": "{tag}"}}'.encode(),
        "predictions-onnxruntime-fp32.json": b"{}",
    }
    return write_files(directory, contents)


def assert_complete(store: ArtifactStore, model: str, run_id: str, files: dict[str, Path]) -> None:
    manifest = store.read_manifest(model, run_id)
    assert manifest is not None and set(manifest.files) == set(files)
    for name, path in files.items():
        assert store.digest(store.blob_path(manifest.files[name]["sha256"])) == sha256_and_size(path)
    assert store.list_files(store.run_path(model, run_id)) == ["manifest.json"]  # the bytes are blobs


def visible(store: ArtifactStore, model: str) -> list[str]:
    return store.runs(model)


def test_publish_releases_bundle_and_moves_latest(store, tmp_path):
    files = make_files(tmp_path / "a")
    result = publish_bundle(store, "tiny", "r1", files, {"config": {"model": {"source": "generated:tiny"}}}, PASS, True)
    assert result.released and result.latest and result.passed
    assert result.url == store.url_of(store.run_path("tiny", "r1"))
    assert_complete(store, "tiny", "r1", files)
    assert store.latest("tiny") == "r1"
    assert store.list_files(store.path(".staging")) == []  # staging cleaned up
    manifest = store.read_manifest("tiny", "r1")
    assert manifest.gates == PASS and manifest.source["source"] == "generated:tiny"

    result2 = publish_bundle(store, "tiny", "r2", make_files(tmp_path / "b", "b"), {}, PASS, True)
    assert result2.latest and store.latest("tiny") == "r2" and store.runs("tiny") == ["r1", "r2"]


def test_failed_run_publishes_nothing_released(store, tmp_path):
    publish_bundle(store, "tiny", "good", make_files(tmp_path / "good"), {}, PASS, True)
    files = make_files(tmp_path / "bad", "bad")
    result = publish_bundle(store, "tiny", "bad", files, {}, FAIL, False)
    assert not result.released and not result.latest and not result.passed
    assert store.runs("tiny") == ["good"] and store.latest("tiny") == "good"
    assert not store.exists(store.run_path("tiny", "bad"))
    assert store.runs("tiny", failed=True) == ["bad"]
    failed = store.read_manifest("tiny", "bad", failed=True)
    # Reports only: no model or engine files of a failed run are published anywhere.
    assert set(failed.files) == {"results.json", "predictions-onnxruntime-fp32.json"}
    assert failed.passed is False and failed.gates == FAIL


def test_a_failed_gate_overrides_passed_true(store, tmp_path):
    result = publish_bundle(store, "tiny", "r1", make_files(tmp_path), {}, PASS + FAIL, True)
    assert not result.released and store.latest("tiny") is None and store.runs("tiny") == []


def test_failed_first_run_creates_no_model_dir(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    publish_bundle(store, "tiny", "bad", make_files(tmp_path / "f"), {}, FAIL, False)
    assert sorted(p.name for p in (tmp_path / "store").iterdir() if not p.name.startswith(".")) == ["blobs",
                                                                                                   "failed"]


class Killed(BaseException):
    """Stands in for SIGKILL: a BaseException that ordinary handlers do not catch."""


@pytest.mark.parametrize("step, at", [("stage", 2), ("verify", 1), ("release", 1), ("release", 3), ("manifest", 0)])
def test_publish_killed_midway_leaves_no_visible_bundle(store, tmp_path, step, at):
    publish_bundle(store, "tiny", "old", make_files(tmp_path / "old"), {}, PASS, True)
    files = make_files(tmp_path / "new", "new")
    seen = []

    def hook(s, name):
        if s == step:
            seen.append(name)
            if len(seen) > at:
                raise Killed(f"killed at {s} {name}")

    with pytest.raises(Killed):
        publish_bundle(store, "tiny", "new", files, {}, PASS, True, hook=hook)
    assert visible(store, "tiny") == ["old"] and store.latest("tiny") == "old"
    for digest in store.blobs():  # a blob under its hash name is always complete
        assert store.digest(store.blob_path(digest))[0] == digest
    assert store.read_manifest("tiny", "new") is None
    with pytest.raises(UserInputError, match="no complete bundle"):
        download(store, "tiny", tmp_path / "dl", run="new")
    assert not (tmp_path / "dl").exists()
    # A retry of the same run completes it.
    publish_bundle(store, "tiny", "new", files, {}, PASS, True)
    assert_complete(store, "tiny", "new", files)
    assert store.latest("tiny") == "new"


def test_killed_before_pointer_keeps_previous_latest(store, tmp_path):
    publish_bundle(store, "tiny", "old", make_files(tmp_path / "old"), {}, PASS, True)

    def hook(step, name):
        if step == "latest":
            raise Killed()

    with pytest.raises(Killed):
        publish_bundle(store, "tiny", "new", make_files(tmp_path / "new"), {}, PASS, True, hook=hook)
    assert store.latest("tiny") == "old"  # pointer still names a complete bundle
    assert store.runs("tiny") == ["new", "old"]


KILL_SCRIPT = r"""
import sys, time
from pathlib import Path
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
store, files_dir, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
files = {p.name.replace("__", "/"): p for p in files_dir.iterdir()}
count = [0]
def hook(step, name):
    if step == "release":
        count[0] += 1
        if count[0] == 3:
            marker.write_text(name)
            time.sleep(120)
publish_bundle(store, "tiny", "victim", files, {}, [GateResult("e", "parity", None, None, True, "max")], True, hook=hook)
"""


def test_sigkilled_publish_process_leaves_no_visible_bundle(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    files = make_files(tmp_path / "files")
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "store"), str(tmp_path / "files"),
                             str(marker)], cwd=PROJECT_ROOT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "publisher exited early"
            assert time.monotonic() < deadline, "publisher never reached the release step"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run_dir = Path(store.run_path("tiny", "victim"))
    assert len(store.blobs()) == 2  # two blobs were moved into place...
    assert not (run_dir / "manifest.json").exists()  # ...but the bundle is invisible
    assert store.runs("tiny") == [] and store.latest("tiny") is None
    assert store.list_files(store.path(".staging"))  # leftovers wait for pruning
    with pytest.raises(UserInputError):
        download(store, "tiny", tmp_path / "dl")
    assert not (tmp_path / "dl").exists()
    # The retried publish replaces the leftovers and completes.
    publish_bundle(store, "tiny", "victim", files, {}, PASS, True)
    assert_complete(store, "tiny", "victim", files)
    download(store, "tiny", tmp_path / "dl")
    assert (tmp_path / "dl" / "manifest.json").is_file()


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_publishes_both_complete_and_latest_consistent(store, tmp_path, round_):
    n = 4
    runs = {f"r{i}": make_files(tmp_path / f"f{i}", f"t{i}", size=64 * 1024) for i in range(n)}
    barrier = threading.Barrier(n)
    errors = []

    def hook(step, name):
        # Line the threads up where they race hardest: first release and pointer move.
        if (step == "release" and name == "engines/fp16/bert.plan") or step == "latest":
            barrier.wait(timeout=60)

    def worker(run_id):
        try:
            publish_bundle(store, "tiny", run_id, runs[run_id], {}, PASS, True, hook=hook)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert store.runs("tiny") == sorted(runs)
    for run_id, files in runs.items():
        assert_complete(store, "tiny", run_id, files)
    latest = store.latest("tiny")
    assert latest in runs
    result = download(store, "tiny", tmp_path / "dl")
    assert result.run_id == latest
    assert (tmp_path / "dl" / "results.json").read_bytes() == runs[latest]["results.json"].read_bytes()


def test_republish_is_idempotent_but_different_files_conflict(store, tmp_path):
    files = make_files(tmp_path / "a")
    publish_bundle(store, "tiny", "r1", files, {}, PASS, True)
    again = publish_bundle(store, "tiny", "r1", files, {}, PASS, True)
    assert again.latest and store.runs("tiny") == ["r1"]
    with pytest.raises(RunConflict, match="already published"):
        publish_bundle(store, "tiny", "r1", make_files(tmp_path / "b", "b"), {}, PASS, True)


def test_corruption_in_staging_is_caught_before_release(store, tmp_path):
    files = make_files(tmp_path / "a")

    def hook(step, name):
        if step == "verify" and name == "model-int8.onnx":
            digest = sha256_and_size(files[name])[0]
            staged = [f for f in store.list_files(store.path(".staging")) if f.endswith(f"/blobs/{digest}")]
            store.write_atomic(store.path(".staging", staged[0]), b"bit rot")

    with pytest.raises(IntegrityError, match="model-int8.onnx"):
        publish_bundle(store, "tiny", "r1", files, {}, PASS, True, hook=hook)
    assert store.runs("tiny") == [] and store.latest("tiny") is None
    assert store.list_files(store.path(".staging")) == []


def test_bad_names_and_missing_files_are_user_errors(store, tmp_path):
    files = make_files(tmp_path / "a")
    with pytest.raises(UserInputError):
        publish_bundle(store, "tiny", "r1", {"../escape.onnx": files["model-fp32.onnx"]}, {}, PASS, True)
    with pytest.raises(UserInputError):
        publish_bundle(store, "tiny", "r1", {"manifest.json": files["results.json"]}, {}, PASS, True)
    with pytest.raises(UserInputError, match="C:/x.onnx"):
        publish_bundle(store, "tiny", "r1", {"C:/x.onnx": files["model-fp32.onnx"]}, {}, PASS, True)
    with pytest.raises(UserInputError, match="collide: 'a.onnx' and 'A.onnx' name the same file"):
        publish_bundle(store, "tiny", "r1", {"a.onnx": files["model-fp32.onnx"], "A.onnx": files["results.json"]},
                       {}, PASS, True)
    assert store.blobs() == {}  # refused before anything was uploaded
    with pytest.raises(UserInputError, match="not a file"):
        publish_bundle(store, "tiny", "r1", {"x.onnx": tmp_path / "nope"}, {}, PASS, True)
    with pytest.raises(UserInputError):
        publish_bundle(store, "a/b", "r1", {}, {}, PASS, True)


def test_plots_are_pngs_named_for_the_bundle(tmp_path):
    rows = [{"engine": "tensorflow-fp32", "exact_match": 10.0, "f1": 20.5, "questions": 10, "seconds": 1.5},
            {"engine": "onnxruntime-fp32", "exact_match": 10.0, "f1": 20.5, "questions": 10, "seconds": 0.7,
             "max_abs_dlogit": 8e-7}]
    plots = write_plots(rows, tmp_path / "plots")
    assert set(plots) == {"plots/accuracy.png", "plots/latency.png"}
    for path in plots.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prefect_tasks_publish_and_report(tmp_path, prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from bertbuild.tasks.publish import artifact_key, publish, render_plots, report_artifacts

    rows = [{"engine": "tensorflow-fp32", "exact_match": 1.0, "f1": 2.0, "questions": 4, "seconds": 0.4},
            {"engine": "onnxruntime-fp32", "exact_match": 1.0, "f1": 2.0, "questions": 4, "seconds": 0.2,
             "max_abs_dlogit": 1e-7}]
    files = {k: str(v) for k, v in make_files(tmp_path / "f").items()}
    store_dir = tmp_path / "store"

    @flow
    def fake_build(passed: bool):
        plots = render_plots(rows, str(tmp_path / "out"))
        gates = [GateResult("e", "parity", 1e-7, 1e-4, passed, "max")]
        published = publish(str(store_dir), "Tiny_Model", {**files, **plots}, {"config": {}}, gates)
        ids = report_artifacts(published, rows, plots)
        return published, ids

    published, ids = fake_build(True)
    assert published["released"] and published["latest"]
    store = ArtifactStore(store_dir)
    manifest = store.read_manifest("Tiny_Model", published["run_id"])
    assert "plots/accuracy.png" in manifest.files and manifest.flow_run_id
    assert published["run_id"].endswith(manifest.flow_run_id.replace("-", "")[:8])
    assert artifact_key("Tiny_Model") == "build-bert-tiny-model"

    failed, _ = fake_build(False)
    assert not failed["released"] and store.latest("Tiny_Model") == published["run_id"]

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["build-bert-tiny-model", "build-bert-tiny-model-report",
                                        "build-bert-tiny-model-bundle"])))
    by_key = {}
    for a in arts:
        by_key.setdefault(a.key, []).append(a)
    assert set(by_key) == {"build-bert-tiny-model", "build-bert-tiny-model-report", "build-bert-tiny-model-bundle"}
    assert len(by_key["build-bert-tiny-model"]) == 2  # one version per run: the history
    report = next(a for a in by_key["build-bert-tiny-model-report"] if published["run_id"] in a.data)
    assert "plots/accuracy.png" in report.data and "| onnxruntime-fp32 |" in report.data
    assert_images_render(report.data, expected=2)
    link = next(a for a in by_key["build-bert-tiny-model-bundle"] if published["run_id"] in a.data)
    assert published["url"] in link.data


def assert_images_render(markdown: str, expected: int) -> None:
    """Every image in the markdown is a PNG that decodes, or an absolute URL a browser can fetch."""
    import base64
    import re

    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", markdown)
    assert len(images) == expected, images
    for source in images:
        if source.startswith("data:"):
            header, _, payload = source.partition(",")
            assert header == "data:image/png;base64", header
            assert base64.b64decode(payload, validate=True)[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert re.match(r"^https?://[^/]+/", source), f"not an absolute URL a browser can open: {source}"


def test_report_markdown_embeds_each_plot_as_a_png(tmp_path):
    from bertbuild.reporting.run_report import results_markdown

    rows = [{"engine": "tensorflow-fp32", "exact_match": 1.0, "f1": 2.0, "questions": 4, "seconds": 0.4}]
    plots = {name: str(path) for name, path in write_plots(rows, tmp_path / "plots").items()}
    published = {"model": "m", "run_id": "r", "released": True, "latest": True, "url": "file:///store/m/runs/r"}
    markdown = results_markdown(published, rows, plots)
    assert_images_render(markdown, expected=2)
    assert "](plots/" not in markdown and "](file://" not in markdown
    (tmp_path / "plots" / "latency.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        results_markdown(published, rows, plots)


def test_publish_task_retries_io_errors_but_not_bad_input(tmp_path, prefect_harness, monkeypatch):
    """A store that drops the connection once is retried to success; a refused name is never retried."""
    from prefect import flow

    from bertbuild.artifacts import publish as publishing
    from bertbuild.tasks.publish import publish

    files = {k: str(v) for k, v in make_files(tmp_path / "f").items()}
    calls = []
    original = publishing.publish_bundle

    def flaky(*args, **kwargs):
        calls.append(args[1])
        if calls == ["m"]:  # the very first call drops the connection
            raise OSError("connection reset by peer")
        return original(*args, **kwargs)

    monkeypatch.setattr(publishing, "publish_bundle", flaky)
    fast = publish.with_options(retry_delay_seconds=0)

    @flow
    def attempt(model: str):
        return fast(str(tmp_path / "store"), model, files, {}, [GateResult("e", "g", None, None, True, "max")], run_id="r1")

    assert attempt("m")["released"] and len(calls) == 2
    calls.clear()
    with pytest.raises(UserInputError, match="invalid model name"):
        attempt("bad/name")
    assert len(calls) == 1  # UserInputError: tried once, not three times


# -- out of space ------------------------------------------------------------------------------------------

def _no_space(path):
    import errno

    return OSError(errno.ENOSPC, "No space left on device", str(path))


def _local_only(store):
    if not store.is_local:
        pytest.skip("a full disk is a local store's failure (S3 answers with its own errors)")


def _assert_nothing_published(store, root: Path, before_latest):
    assert store.runs("tiny") == ([before_latest] if before_latest else [])
    assert store.latest("tiny") == before_latest
    assert not [p for p in (root / ".staging").rglob("*") if p.is_file() and "blobs" in p.parts]
    assert not list(root.rglob("*.tmp"))


def test_a_full_disk_while_staging_blobs_is_one_line_and_nothing_half_written(store, tmp_path, monkeypatch):
    from bertbuild.errors import OutOfSpace

    _local_only(store)
    publish_bundle(store, "tiny", "old", make_files(tmp_path / "old"), {}, PASS, True)
    blobs_before = set(store.blobs())
    real_put, calls = store.fs.put_file, []

    def put_half_then_fill_up(local, path, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second blob: half its bytes land, then the disk is full
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(Path(local).read_bytes()[:100])
            raise _no_space(path)
        return real_put(local, path, **kwargs)

    monkeypatch.setattr(store.fs, "put_file", put_half_then_fill_up)
    with pytest.raises(OutOfSpace) as err:
        publish_bundle(store, "tiny", "new", make_files(tmp_path / "new"), {}, PASS, True)
    message = str(err.value)
    assert "\n" not in message and message.startswith("publish: no space left on device writing ")
    assert calls[1] in message and " free there)" in message and "nothing was published" in message
    assert err.value.exit_code == 1
    _assert_nothing_published(store, Path(store.root), "old")
    assert set(store.blobs()) == blobs_before  # no partial blob under its hash name


def test_a_full_disk_while_writing_the_manifest_leaves_no_run(store, tmp_path, monkeypatch):
    from bertbuild.artifacts import store as store_module
    from bertbuild.errors import OutOfSpace

    _local_only(store)

    def fsync_fails(fd):
        raise _no_space(f"fd {fd}")

    monkeypatch.setattr(store_module.os, "fsync", fsync_fails)
    with pytest.raises(OutOfSpace, match=r"no space left on device writing fd \d+ \(.* free there\)"):
        publish_bundle(store, "tiny", "r1", make_files(tmp_path / "a"), {}, PASS, True)
    monkeypatch.undo()
    _assert_nothing_published(store, Path(store.root), None)
    assert store.read_manifest("tiny", "r1") is None


def test_the_cli_prints_the_full_disk_as_one_line(tmp_path, monkeypatch, capsys):
    from bertbuild.cli import main
    from bertbuild.errors import OutOfSpace

    def handler(args):
        raise OutOfSpace("publish: no space left on device writing /s/x (1.0 MiB free there); nothing was published")

    from bertbuild.commands import artifacts

    monkeypatch.setattr(artifacts, "run_list", artifacts._with_store(handler))
    assert main(["artifacts", "list", "--store", str(tmp_path / "s")]) == 1
    assert capsys.readouterr().err == ("bertbuild: error: publish: no space left on device writing /s/x "
                                       "(1.0 MiB free there); nothing was published\n")
