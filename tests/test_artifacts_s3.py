"""An S3 artifact store against a real S3 server on 127.0.0.1 (moto's server mode), through s3fs.

The generic store tests (publish, download, prune, regression, hostile
stores) also run on S3 through the `store` fixture; here: the CLI with the
AWS_* variables and with `--storage-option`, the flow's `publish.storage_options`
(secrets never recorded), listings that other processes change, and the
one-line errors for a missing bucket, an unreachable endpoint, a bad option
and a missing s3fs.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bertbuild.artifacts.download import verify_dir
from bertbuild.artifacts.manifest import MANIFEST_NAME
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.cli import main
from bertbuild.commands.arguments import storage_option
from bertbuild.errors import StoreUnavailable, UserInputError
from bundlefiles import write_files

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASS = [GateResult("onnxruntime-fp32", "parity", 1e-6, 1e-4, True, "max")]
AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")
FAST_FAIL = "config_kwargs={retries: {max_attempts: 1}}"  # botocore's retries make a dead endpoint take ~9 s


def bundle(directory: Path, run_id: str) -> dict[str, Path]:
    return write_files(directory / run_id, {
        "vocab.txt": b"shared by every run\n",
        "model-fp32.onnx": os.urandom(2048) + run_id.encode(),
        "engines/fp16/bert.plan": os.urandom(1024) + run_id.encode(),
        "results.json": json.dumps({"run": run_id}).encode(),
    })


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No AWS configuration from this host: no variables, no ~/.aws files."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def aws_env(s3_server, no_aws, monkeypatch):
    """The S3 server configured the usual way: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... only."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_list_download_history_prune_with_the_aws_variables(aws_env, tmp_path, capsys):
    url = f"s3://{aws_env.new_bucket()}/bert"
    runs = {run_id: bundle(tmp_path / "src", run_id) for run_id in ("r1", "r2", "r3")}
    for run_id, files in runs.items():
        publish_bundle(url, "tiny", run_id, files, {"results": []}, PASS, True)  # endpoint and keys: from the env

    assert main(["artifacts", "list", "--store", url]) == 0
    out = capsys.readouterr().out
    assert "r3*" in out and "r1 " in out and "r2 " in out and url in out

    assert main(["artifacts", "download", "--store", url, "--dest", str(tmp_path / "dl")]) == 0
    manifest = verify_dir(tmp_path / "dl")
    assert manifest.run_id == "r3" and json.loads((tmp_path / "dl" / "results.json").read_text()) == {"run": "r3"}
    assert (tmp_path / "dl" / "model-fp32.onnx").read_bytes() == runs["r3"]["model-fp32.onnx"].read_bytes()

    assert main(["artifacts", "history", "--store", url, "--model", "tiny", "--plot", str(tmp_path / "h.png")]) == 0
    out = capsys.readouterr().out
    assert all(run_id in out for run_id in runs) and "3 released runs" in out
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    store = ArtifactStore(url)
    before = set(store.blobs())
    assert main(["artifacts", "prune", "--store", url, "--model", "tiny", "--keep", "1"]) == 0
    assert "would remove 2 released runs: r1, r2" in capsys.readouterr().out and set(store.blobs()) == before
    assert main(["artifacts", "prune", "--store", url, "--model", "tiny", "--keep", "1", "--yes"]) == 0
    assert store.runs("tiny") == ["r3"] and store.latest("tiny") == "r3"
    # r1's and r2's own blobs are gone; the vocab every run shares stays (r3 lists it).
    assert set(store.blobs()) == {e["sha256"] for e in store.read_manifest("tiny", "r3").files.values()}
    assert main(["artifacts", "download", "--store", url, "--dest", str(tmp_path / "dl2")]) == 0
    assert verify_dir(tmp_path / "dl2").run_id == "r3"


def test_cli_storage_option_flags_instead_of_the_environment(s3_server, no_aws, tmp_path, capsys):
    url = f"s3://{s3_server.new_bucket()}/bert"
    publish_bundle(url, "tiny", "r1", bundle(tmp_path, "r1"), {}, PASS, True,
                   storage_options=s3_server.storage_options())
    flags = ["--storage-option", f"endpoint_url={s3_server.endpoint}", "--storage-option", "key=testing",
             "--storage-option", "secret=testing", "--storage-option", "client_kwargs={region_name: us-east-1}"]
    assert main(["artifacts", "list", "--store", url, *flags]) == 0
    assert "r1*" in capsys.readouterr().out
    assert main(["artifacts", "download", "--store", url, *flags, "--dest", str(tmp_path / "dl")]) == 0
    assert verify_dir(tmp_path / "dl").run_id == "r1"


@pytest.mark.parametrize("text, expected", [
    ("endpoint_url=http://127.0.0.1:9000", ("endpoint_url", "http://127.0.0.1:9000")),
    ("anon=true", ("anon", True)),
    ("max_concurrency=4", ("max_concurrency", 4)),
    ("secret=a #b", ("secret", "a #b")),  # YAML would cut a comment off: text stays text
    ("secret=!x&y", ("secret", "!x&y")),
    ("key=", ("key", "")),
    ("client_kwargs={region_name: eu-west-1}", ("client_kwargs", {"region_name": "eu-west-1"})),
])
def test_storage_option_values(text, expected):
    assert storage_option(text) == expected


@pytest.mark.parametrize("bad", ["endpoint_url", "=value"])
def test_a_malformed_storage_option_is_one_line(bad, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["artifacts", "list", "--store", "s3://bucket/x", "--storage-option", bad])
    assert exited.value.code == 2
    assert "expected KEY=VALUE" in one_line_error(capsys)


def test_a_missing_bucket_is_one_line_and_is_not_created(aws_env, tmp_path, capsys):
    import boto3

    url = "s3://no-such-bucket-here/bert"
    assert main(["artifacts", "list", "--store", url]) == 2
    assert "bucket 'no-such-bucket-here' does not exist" in one_line_error(capsys)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        publish_bundle(url, "tiny", "r1", bundle(tmp_path, "r1"), {}, PASS, True)
    buckets = boto3.client("s3").list_buckets()["Buckets"]  # s3fs's makedirs would have made it
    assert "no-such-bucket-here" not in {b["Name"] for b in buckets}


def test_a_run_that_would_publish_to_a_missing_bucket_stops_before_any_work(aws_env, prefect_harness, tmp_path,
                                                                           capsys):
    """Not after an hour of building: the store is checked as the run starts."""
    code = main(["run", "--config", "configs/generated-tiny.yaml", "--set", "publish.store=s3://no-such-bucket-x/b",
                 "--set", f"output_dir={tmp_path / 'runs'}", "--no-cache"])
    assert code == 2 and "bucket 'no-such-bucket-x' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # no run directory: nothing was built


def test_an_unreachable_endpoint_is_one_line(no_aws, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    code = main(["artifacts", "list", "--store", "s3://bucket/bert", "--storage-option", f"endpoint_url={dead}",
                 "--storage-option", "key=k", "--storage-option", "secret=s", "--storage-option", FAST_FAIL])
    assert code == 2
    err = one_line_error(capsys)
    assert "cannot reach it" in err and dead in err


def test_an_unknown_storage_option_is_one_line(aws_env, capsys):
    assert main(["artifacts", "list", "--store", f"s3://{aws_env.new_bucket()}/x",
                 "--storage-option", "retries=3"]) == 2
    assert "storage option S3FileSystem does not take" in one_line_error(capsys)


def test_storage_options_are_refused_for_a_local_store(tmp_path, capsys):
    with pytest.raises(UserInputError, match="not the local directory"):
        ArtifactStore(tmp_path / "store", key="k")
    assert main(["artifacts", "list", "--store", str(tmp_path), "--storage-option", "key=k"]) == 2
    assert "are for a URL store" in one_line_error(capsys)


def test_without_s3fs_the_error_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['s3fs'] = None; from bertbuild.cli import main; "
            "sys.exit(main(['artifacts', 'list', '--store', 's3://bucket/bert']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [out.stderr.strip()]
    assert "s3fs is not installed" in out.stderr and "pip install 'bertbuild[s3]'" in out.stderr


def test_another_process_writes_are_seen_at_once(s3_server, tmp_path):
    """A store that listed the bucket before still sees runs, blobs and the pointer written since."""
    url = f"s3://{s3_server.new_bucket()}/bert"
    reader = ArtifactStore(url, **s3_server.storage_options())
    assert reader.runs("tiny") == [] and reader.blobs() == {} and reader.models() == []
    files = bundle(tmp_path, "r1")
    publish_bundle(ArtifactStore(url, **s3_server.storage_options()), "tiny", "r1", files, {}, PASS, True)
    assert reader.models() == ["tiny"] and reader.runs("tiny") == ["r1"] and reader.latest("tiny") == "r1"
    manifest = reader.read_manifest("tiny", "r1")
    for name, entry in manifest.files.items():
        assert reader.exists(reader.blob_path(entry["sha256"]))
        assert reader.stored_size(reader.blob_path(entry["sha256"])) == files[name].stat().st_size


def test_a_manifest_is_created_once(s3_server, tmp_path):
    """S3's conditional PUT: the second writer of a run's manifest learns it exists and writes nothing."""
    store = ArtifactStore(f"s3://{s3_server.new_bucket()}/bert", **s3_server.storage_options())
    path = f"{store.run_path('tiny', 'r1')}/{MANIFEST_NAME}"
    assert store.create_once(path, b"first") is True
    assert store.create_once(path, b"second") is False
    assert store.read_bytes(path) == b"first"


def test_the_flow_publishes_with_config_storage_options_and_records_no_secret(s3_server, no_aws, tmp_path,
                                                                                prefect_harness):
    """publish_run (the flow's last step) on S3: regression against latest, publish, and secrets redacted."""
    from prefect import flow

    from bertbuild.artifacts.layout import Bundle
    from bertbuild.config import parse_config
    from bertbuild.tasks.publish import publish_run
    from bertbuild.runs import open_run

    secret = "s3cr3t-" + os.urandom(6).hex()
    url = f"s3://{s3_server.new_bucket()}/bert"
    # moto takes any secret; the point is that this one is never written anywhere
    options = {**s3_server.storage_options(), "secret": secret}
    cfg = parse_config({"model": {"source": "generated:tiny", "name": "tiny"}, "output_dir": str(tmp_path / "runs"),
                        "publish": {"store": url, "storage_options": options}})
    answers = {"q1": "Denver Broncos", "q2": "1990"}
    rows = [{"engine": "onnxruntime-fp32", "precision": "fp32", "exact_match": 50.0, "f1": 60.0, "p50_ms": 3.0,
             "questions": 2, "seconds": 0.1, "gates": "PASS"}]

    @flow
    def last_step(run_id: str):
        run = open_run(cfg.output_dir, cfg.model_name, run_id, cache_enabled=False)
        predictions = run.path("predictions-onnxruntime-fp32.json")
        predictions.write_text(json.dumps(answers))
        model = run.path("model-fp32.onnx")
        model.write_bytes(b"not really onnx " + run_id.encode())
        bundle = Bundle()
        bundle.add("predictions-onnxruntime-fp32.json", predictions, "fp32")
        bundle.add("model-fp32.onnx", model, "fp32")
        return publish_run(cfg, run, rows, bundle, {}, [])

    first = last_step("20260101T000000Z-aaaaaaaa")
    second = last_step("20260102T000000Z-bbbbbbbb")
    store = ArtifactStore(url, **s3_server.storage_options())
    assert store.runs("tiny") == ["20260101T000000Z-aaaaaaaa", "20260102T000000Z-bbbbbbbb"]
    assert store.latest("tiny") == "20260102T000000Z-bbbbbbbb" and second["published"]["latest"]
    assert first["reports"]["regression"]["latest_run_id"] is None  # a first release has nothing to compare with
    assert second["reports"]["regression"]["latest_run_id"] == "20260101T000000Z-aaaaaaaa"
    compared = json.loads(Path(second["files"]["regression.json"]).read_text())["precisions"][0]
    # latest's predictions were fetched from the bucket (with the config's options) and checked
    assert compared["answers_compared"] == 2 and compared["answer_agreement"] == 1.0
    manifest_bytes = store.read_manifest_bytes("tiny", "20260102T000000Z-bbbbbbbb")
    results = Path(second["files"]["results.json"]).read_text()
    for recorded in (manifest_bytes.decode(), results):
        assert secret not in recorded and s3_server.endpoint not in recorded
    recorded_options = json.loads(results)["config"]["publish"]["storage_options"]
    assert recorded_options == {key: "<redacted>" for key in options}


def test_a_server_without_conditional_writes_still_creates_a_manifest_once(s3_server, monkeypatch):
    """An S3-compatible server that answers If-None-Match with NotImplemented: check, then write."""
    store = ArtifactStore(f"s3://{s3_server.new_bucket()}/bert", **s3_server.storage_options())
    real = store.fs.pipe_file

    def no_conditional_writes(path, data, mode="overwrite", **kwargs):
        if mode == "create":
            raise OSError(errno.ENOSYS, "A header you provided implies functionality that is not implemented")
        return real(path, data, **kwargs)

    monkeypatch.setattr(store.fs, "pipe_file", no_conditional_writes)
    path = f"{store.run_path('tiny', 'r1')}/{MANIFEST_NAME}"
    assert store.create_once(path, b"first") is True
    assert store.create_once(path, b"second") is False
    assert store.read_bytes(path) == b"first"


def test_config_storage_options_are_redacted_when_recorded_but_survive_overrides():
    from bertbuild.config import REDACTED, BuildConfig, parse_config, with_overrides

    options = {"key": "AKIA-not-a-real-key", "secret": "s3cr3t", "client_kwargs": {"region_name": "eu-west-1"}}
    cfg = parse_config({"model": {"source": "generated:tiny"},
                        "publish": {"store": "s3://bucket/bert", "storage_options": options}})
    recorded = json.dumps(cfg.model_dump(mode="json"))
    assert "s3cr3t" not in recorded and "AKIA" not in recorded and "eu-west-1" not in recorded
    assert cfg.model_dump(mode="json")["publish"]["storage_options"] == {k: REDACTED for k in options}
    from prefect import flow

    @flow
    def takes_a_config(config: BuildConfig):
        return config

    # what Prefect records as the flow run's parameters
    assert "s3cr3t" not in json.dumps(takes_a_config.serialize_parameters({"config": cfg}))
    changed = with_overrides(cfg, ["eval.limit=5", "publish.storage_options.endpoint_url=http://127.0.0.1:9000"])
    assert changed.eval.limit == 5
    assert changed.publish.storage_options == {**options, "endpoint_url": "http://127.0.0.1:9000"}


@pytest.mark.parametrize("publish, message", [
    ({"store": "runs/store", "storage_options": {"secret": "s3cr3t"}}, "are for a URL store"),
    ({"store": "s3://b/x", "storage_options": {"secret": "s3cr3t", "bad": {"x": {1, 2}}}}, "bad.x: expected text"),
    ({"store": "s3://b/x", "storage_options": "secret=s3cr3t"}, "valid dictionary"),
])
def test_bad_storage_options_are_one_line_that_does_not_echo_them(publish, message):
    from bertbuild.config import parse_config
    from bertbuild.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        parse_config({"model": {"source": "generated:tiny"}, "publish": publish})
    text = str(raised.value)
    assert message in text and "s3cr3t" not in text and len(text.splitlines()) == 1
