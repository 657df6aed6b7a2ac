"""ArtifactStore layout, pointer and manifest round trip, on a local dir and on memory://."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from bertbuild.artifacts.manifest import Manifest, build_manifest, is_report
from bertbuild.host import package_versions
from bertbuild.artifacts.store import ArtifactStore, default_store, make_run_id, new_token
from bertbuild.errors import IntegrityError, UserInputError


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        yield ArtifactStore(tmp_path / "store")
        return
    root = f"memory://bertbuild-test-{uuid.uuid4().hex[:8]}"
    s = ArtifactStore(root)
    yield s
    s.remove_tree(s.root)


def test_layout_paths(tmp_path):
    s = ArtifactStore(tmp_path / "store")
    root = (tmp_path / "store").resolve().as_posix()
    assert s.run_path("bert-base", "r1") == f"{root}/bert-base/runs/r1"
    assert s.latest_path("bert-base") == f"{root}/bert-base/latest"
    assert s.failed_path("bert-base", "r1") == f"{root}/failed/bert-base/r1"
    assert s.staging_path("tok") == f"{root}/.staging/tok"
    assert s.url == f"file://{root}"
    mem = ArtifactStore("memory://bucket/x")
    assert mem.run_path("m", "r") == "/bucket/x/m/runs/r"
    assert mem.url_of(mem.run_path("m", "r")) == "memory:///bucket/x/m/runs/r"


def test_default_store_honours_env(monkeypatch):
    monkeypatch.delenv("BERTBUILD_STORE", raising=False)
    assert default_store() == "runs/store"
    monkeypatch.setenv("BERTBUILD_STORE", "memory://elsewhere")
    assert default_store() == "memory://elsewhere"
    assert ArtifactStore().url == "memory:///elsewhere"


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "failed", "blobs", "x" * 300])
def test_model_names_are_single_safe_segments(tmp_path, bad):
    with pytest.raises(UserInputError):
        ArtifactStore(tmp_path).run_path(bad, "r1")


def test_run_id_latest_is_reserved(tmp_path):
    with pytest.raises(UserInputError, match="latest"):
        ArtifactStore(tmp_path).run_path("m", "latest")


def test_latest_pointer_round_trip(store):
    assert store.latest("m") is None
    store.set_latest("m", "r1")
    assert store.latest("m") == "r1"
    store.set_latest("m", "r2")
    assert store.latest("m") == "r2"
    assert store.models() == ["m"]


def test_pointer_write_leaves_no_temp_files(tmp_path):
    s = ArtifactStore(tmp_path / "store")
    for i in range(5):
        s.set_latest("m", f"r{i}")
    assert sorted(p.name for p in (tmp_path / "store" / "m").iterdir()) == ["latest"]


def test_runs_lists_only_bundles_with_a_manifest(store):
    store.write_atomic(f"{store.run_path('m', 'complete')}/a.bin", b"a")
    store.write_atomic(f"{store.run_path('m', 'complete')}/manifest.json", b"{}")
    store.write_atomic(f"{store.run_path('m', 'partial')}/a.bin", b"a")
    assert store.runs("m") == ["complete"]
    assert store.runs("m", failed=True) == []


def test_prune_staging_removes_only_old_tokens(store):
    old = new_token(datetime.now(timezone.utc) - timedelta(days=3))
    fresh = new_token()
    for token in (old, fresh):
        store.write_atomic(f"{store.staging_path(token)}/f.bin", b"x")
    assert store.prune_staging(24 * 3600) == [old]
    assert store.exists(f"{store.staging_path(fresh)}/f.bin")
    assert not store.exists(f"{store.staging_path(old)}/f.bin")


def test_run_ids_sort_by_time():
    early = make_run_id(datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc), "abcdef12-3456")
    late = make_run_id(datetime(2026, 1, 2, 2, 0, tzinfo=timezone.utc), "00000000-0000")
    assert early == "20260101T020000Z-abcdef12"
    assert sorted([late, early]) == [early, late]


def test_manifest_round_trips_and_records_provenance(tmp_path):
    f = tmp_path / "model-fp32.onnx"
    f.write_bytes(b"onnx bytes")
    config = {"model": {"source": "generated:tiny", "sha256": None, "name": "tiny"}, "eval": {"limit": 10}}
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "bert_config.json").write_text("{}")
    m = build_manifest({"model-fp32.onnx": f}, model="tiny", run_id="r1", passed=True,
                       gates=[{"name": "parity", "passed": True, "value": 1e-6, "threshold": 1e-4}],
                       meta={"config": config, "flow_run_id": "fr-1", "checkpoint_dir": str(ckpt),
                             "export": {"opset": 17, "path": tmp_path}})
    assert m.files["model-fp32.onnx"] == {"sha256": hashlib.sha256(b"onnx bytes").hexdigest(), "size": 10}
    assert m.source["source"] == "generated:tiny" and len(m.source["checkpoint_sha256"]) == 64
    assert m.config == config and m.flow_run_id == "fr-1" and m.passed is True
    assert m.meta["export"]["path"] == str(tmp_path)  # paths become strings
    for name in ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "polygraphy", "tensorrt", "prefect"):
        assert name in m.versions
    assert m.versions["prefect"] == "3.8.8"
    assert m.hardware["cores"] >= 1 and isinstance(m.hardware["gpus"], list)
    assert "commit" in m.git and m.created.endswith("Z")
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert json.loads(m.to_json())["schema"] == 2 and m.content_addressed


def test_versions_never_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from bertbuild.host import package_versions; v = package_versions(); "
            "print('tensorflow' in sys.modules, 'tensorrt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert package_versions()["python"]


def test_bundle_name_classes():
    assert is_report("results.json") and is_report("plots/accuracy.png") and not is_report("model-int8.onnx")


def test_the_layout_names_each_file_once_with_its_precision(tmp_path):
    from bertbuild.artifacts.layout import Bundle, onnx_name

    bundle = Bundle()
    bundle.add(onnx_name("fp16"), tmp_path / "a.onnx", "fp16")
    bundle.add_int8({"s8s8": "/x/model.int8-s8s8.onnx", "ort": "/x/model.int8-ort.onnx"}, "/x/calibration.json")
    bundle.add("results.json", tmp_path / "results.json")
    assert bundle.precisions == {"model-fp16.onnx": "fp16", "int8/model.int8-s8s8.onnx": "int8",
                                 "int8/model.int8-ort.onnx": "int8", "int8/calibration.json": "int8"}
    # TensorRT gets the FP16 file and the signed INT8 file, never ONNX Runtime's ort file
    assert sorted(bundle.tensorrt_inputs({"s8s8": "/x/model.int8-s8s8.onnx", "ort": "/x/model.int8-ort.onnx"})) == \
        ["int8/model.int8-s8s8.onnx", "model-fp16.onnx"]
    manifest = build_manifest({"results.json": _write(tmp_path / "r.json")}, model="m", run_id="r", passed=True,
                              precisions={"results.json": "int8"})
    assert manifest.precision_of("results.json") == "int8" and manifest.records_precisions()


def _write(path):
    path.write_text("{}")
    return path


def test_file_url_is_a_local_store(tmp_path):
    s = ArtifactStore(f"file://{tmp_path}/store")
    assert s.is_local and s.root == f"{tmp_path}/store"
    s.set_latest("m", "r1")
    assert (tmp_path / "store" / "m" / "latest").read_text() == "r1\n"


def test_a_manifest_written_before_the_one_gate_record_still_reads():
    """Bundles published earlier recorded gates as {name: "engine:gate", value, threshold, message}."""
    from bertbuild.evaluation.gates import GateResult

    old = {"schema": 2, "model": "m", "run_id": "r", "passed": True, "files": {}, "gates": [
        {"name": "onnxruntime-int8:f1_drop_vs_fp32", "passed": True, "value": 0.3, "threshold": 1.0, "message": ""},
        {"name": "max_f1_drop_vs_latest", "passed": True, "value": None, "threshold": 0.5,
         "message": "skipped: first release of m"}]}
    first, second = Manifest.from_json(json.dumps(old)).gates
    assert first == GateResult("onnxruntime-int8", "f1_drop_vs_fp32", 0.3, 1.0, True, "max")
    assert second.skipped == "first release of m" and second.passed and second.engine == "-"
    bad = {**old, "gates": [{"engine": "e", "gate": "g", "measured": "high", "threshold": 1.0, "passed": True,
                             "kind": "max"}]}
    with pytest.raises(IntegrityError, match="manifest.json: gates.0.measured"):
        Manifest.from_json(json.dumps(bad))
