"""Shared fixtures. Prefect gets a throwaway home and no telemetry (no network here)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Must happen before anything imports prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="bertbuild-prefect-")
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Runs that do not name a store publish here, never into the checkout's runs/store.
os.environ["BERTBUILD_STORE"] = tempfile.mkdtemp(prefix="bertbuild-store-")
# Downloads, generated checkpoints and step caches go here, never into ~/.cache.
os.environ["BERTBUILD_CACHE"] = tempfile.mkdtemp(prefix="bertbuild-cache-")

import pytest  # noqa: E402
# Prefect sets up its log handlers when `prefect.flow` is first imported, bound to the stderr of that moment:
# do it now, before any test swaps stderr (capsys), or later logging writes into a closed capture.
from prefect import flow  # noqa: E402,F401

from bertbuild.data import UNCASED_VOCAB, bundled_file  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VOCAB = bundled_file(UNCASED_VOCAB)


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    return VOCAB


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer random-weight QA checkpoint in the exact Google layout (adam slots, global_step)."""
    from bertbuild.model.random_checkpoint import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", VOCAB, layers=2, step=1000)


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL server for the session's Prefect servers (tests/prefect_server.py: `postgresql`).

    Its data folder is a temporary folder of this session made with `tempfile` (removed after), not one of
    pytest's: pytest closes /tmp/pytest-of-<user> to 0700 whenever a session starts, and PostgreSQL runs as
    another user when we are root.
    """
    import shutil

    from prefect_server import postgresql

    folder = Path(tempfile.mkdtemp(prefix="bertbuild-postgres-"))
    try:
        with postgresql(folder) as server:
            yield server
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_harness():
    """One throwaway Prefect API for every flow test (starting one takes seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    # 30 s (Prefect's default) is not always enough on a busy 2-core host; a slow start is not a failure.
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> dict:
    """The tiny checkpoint exported ({"fp32": path}) and fused ({"fused": path}), shared by precision tests."""
    from bertbuild.model.checkpoint import load_checkpoint
    from bertbuild.model.export import export_onnx
    from bertbuild.fuse import fuse_onnx

    import shutil

    directory = tmp_path_factory.mktemp("tiny-onnx")
    exported = export_onnx(load_checkpoint(tiny_checkpoint), directory / "model-fp32.onnx").path
    shutil.copy(tiny_checkpoint / "vocab.txt", directory / "vocab.txt")  # as a run directory has it
    fuse_onnx(exported, directory / "model-fused.onnx", num_layers=2)
    return {"fp32": Path(exported), "fused": directory / "model-fused.onnx", "checkpoint": tiny_checkpoint}


@pytest.fixture(scope="session")
def tiny_trt_files(tiny_onnx, vocab_path, tmp_path_factory) -> dict:
    """The files the flow hands TensorRT, of the tiny model: fp32, fused, fp16, bf16 and INT8 s8s8 (plus u8s8, not for TensorRT)."""
    from bertbuild.precision.calibration import calibrate
    from bertbuild.precision.calibration_set import calibration_set
    from bertbuild.config.precision import Fp16Config, Int8Config
    from bertbuild.precision.fp16 import convert_to_bf16, convert_to_fp16
    from bertbuild.precision.int8 import quantize_int8

    directory = tmp_path_factory.mktemp("tiny-trt")
    fp16 = directory / "model-fp16.onnx"
    convert_to_fp16(tiny_onnx["fused"], fp16, Fp16Config())
    bf16 = directory / "model-bf16.onnx"
    convert_to_bf16(tiny_onnx["fused"], bf16, Fp16Config())
    cfg = Int8Config(samples=16, max_seq_length=128, batch_size=8).plain()
    calibration = calibrate(tiny_onnx["fused"], calibration_set(cfg, vocab_path, lower_case=True), cfg,
                            out_dir=directory / "calibration")
    int8 = quantize_int8(tiny_onnx["fused"], directory, calibration, cfg).paths
    return {"fp32": tiny_onnx["fp32"], "fused": tiny_onnx["fused"], "fp16": fp16, "bf16": bf16,
            "s8s8": Path(int8["s8s8"]), "u8s8": Path(int8["u8s8"]), "checkpoint": tiny_onnx["checkpoint"]}


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server on 127.0.0.1 (moto's server mode), for the whole session."""
    from s3server import S3Server

    server, s3 = S3Server.start()
    yield s3
    server.stop()


@pytest.fixture
def store_cli_env(store, request, monkeypatch):
    """What a `bertbuild artifacts` command needs to reach `store`: the usual AWS variables for an S3 one."""
    if store.url.startswith("s3://"):
        for name, value in request.getfixturevalue("s3_server").env().items():
            monkeypatch.setenv(name, value)
    return store


@pytest.fixture(params=["local", "memory", "s3"])
def store(request, tmp_path):
    """An empty artifact store: a local directory, fsspec's in-memory filesystem, a bucket on a real S3 server."""
    import uuid

    from bertbuild.artifacts.store import ArtifactStore

    if request.param == "local":
        yield ArtifactStore(tmp_path / "store")
        return
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        yield ArtifactStore(f"s3://{s3.new_bucket()}/store", **s3.storage_options())
        return
    s = ArtifactStore(f"memory://bertbuild-test-{uuid.uuid4().hex[:8]}")
    yield s
    s.remove_tree(s.root)
