"""The build-bert flow end to end on a generated checkpoint, under a Prefect test API.

Every test gets its own output root, store and step cache, so a cached entry
of one test can never stand in for the work another test checks.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest

from bertbuild.errors import GateFailed

pytestmark = pytest.mark.slow  # whole flow runs


def _config(tmp_path, **sections):
    config = {
        "model": {"source": "generated:tiny", "name": "tiny"},
        "eval": {"limit": 10, "batch_size": 4},
        "validation": {"batches": 2},
        "benchmark": {"batch": 2, "seq": 128, "warmup": 1, "iterations": 2},
        "engines": {"precisions": ["fp32"]},
        "publish": {"store": str(tmp_path / "store")},
        "cache": {"dir": str(tmp_path / "cache")},
        "output_dir": str(tmp_path / "runs"),
        # A sub-millisecond tiny model times within +-20% run to run: the latency gate against the
        # last release is exercised only where a test makes the second build slower on purpose.
        "regression": {"max_latency_ratio_vs_latest": None},
    }
    config |= sections
    # ONNX Runtime by name: these tests read its engine files and names; the default backend
    # (auto: OpenVINO on a CPU host) has its own test below.
    config["engines"] = {"backend": "onnxruntime", **config["engines"]}
    return config


def _manifest(result) -> dict:
    from bertbuild.artifacts.store import ArtifactStore

    published = result["published"]
    return ArtifactStore(published["store"]).read_manifest(published["model"], published["run_id"]).files


def test_flow_exports_evaluates_validates_and_reports(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    result = build_bert(_config(tmp_path))
    reference, engine = result["rows"]
    assert reference["engine"] == "tensorflow-fp32" and engine["engine"] == "onnxruntime-fp32"
    assert engine["max_abs_dlogit"] <= 1e-4 and engine["questions"] == 10
    assert engine["validation_passed"] and engine["argmax_agreement"] == 1.0 and engine["gates"] == "PASS"
    assert engine["seq_per_s"] > 0 and engine["p50_ms"] > 0
    # Identical logits up to 1e-4 give identical answers, so identical scores and a zero-width interval.
    assert engine["f1"] == reference["f1"]
    assert engine["delta"]["f1"] | {"questions": 10} == engine["delta"]["f1"] and engine["delta"]["f1"]["low"] == 0
    assert engine["delta"]["f1"]["high"] == 0 and engine["delta"]["f1"]["resamples"] == 2000
    out = Path(result["run_dir"])
    assert out.parent == tmp_path / "runs" / "tiny" and out.name == result["published"]["run_id"]
    assert (out.parent / "latest").resolve() == out.resolve()
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"] == result["rows"] and all(g["passed"] for g in saved["gates"])
    predictions = json.loads((out / "predictions-onnxruntime-fp32.json").read_text())
    assert len(predictions) == 10 and all(isinstance(v, str) for v in predictions.values())
    assert (out / "vocab.txt").is_file() and (out / "validation-onnxruntime-fp32.json").is_file()
    validation = json.loads((out / "validation-onnxruntime-fp32.json").read_text())
    assert validation["reference"] == "tensorflow-fp32"  # engines are held to TensorFlow, not to ONNX itself
    assert "gates" in result["table"] and "PASS" in result["table"]
    # The run directory holds exactly the bundle (plus hidden scratch), and the bundle exactly the run's files.
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".scratch" not in p.parts}
    assert on_disk == set(result["files"]) == set(_manifest(result))
    # Each engine is a Triton model too: its config (read with Triton's schema) serves the bundle's engine file.
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    triton = text_format.Parse((out / "triton/tiny-fp32/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    served = out / "triton/tiny-fp32/1" / triton.default_model_filename
    assert served.read_bytes() == (out / "engines/fp32" / triton.default_model_filename).read_bytes()
    # The release names exactly the weights it was built from.
    from bertbuild.artifacts.store import ArtifactStore
    from bertbuild.fetch.verify import tree_sha256

    published = result["published"]
    source = ArtifactStore(published["store"]).read_manifest(published["model"], published["run_id"]).source
    assert source["checkpoint_sha256"] == tree_sha256(Path(result["checkpoint_dir"])) is not None


def test_parity_gate_fails_the_flow_run(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    state = build_bert(_config(tmp_path, parity={"max_abs_logit": 1e-12}), return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailed, match="max_abs_dlogit_vs_tensorflow"):
        state.result()


def test_a_bad_config_parameter_is_refused_before_the_flow_starts(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    state = build_bert(_config(tmp_path, evall={}), return_state=True)
    assert state.is_failed() and "Validation of flow parameters failed" in state.message and "evall" in state.message
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_a_mistake_only_the_flow_sees_fails_it_in_one_line_without_a_traceback(tmp_path, prefect_harness, caplog):
    from bertbuild.errors import UserInputError
    from bertbuild.flows.build_bert import build_bert

    config = _config(tmp_path, eval={"limit": 10, "batch_size": 4, "offset": 10**6})  # as a deployment's parameter
    state = build_bert(config, return_state=True)
    assert state.is_failed() and "eval.offset" in state.message
    with pytest.raises(UserInputError, match="eval.offset"):
        state.result()
    records = [r for r in caplog.records if r.name.startswith("prefect")]
    assert any("Finished in state Failed" in r.getMessage() and "eval.offset" in r.getMessage() for r in records)
    assert not [r.getMessage() for r in records if r.exc_info]  # Prefect logs a raised exception with its traceback


@pytest.fixture
def damaging_backend(monkeypatch):
    """Every engine the ONNX Runtime backend builds gets one weight matrix scaled by -3."""
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend

    original = OnnxRuntimeBackend.build

    def build_damaged(self, onnx_path, precision, profiles, out_dir, float_parts=None):
        engine = original(self, onnx_path, precision, profiles, out_dir, float_parts)
        model = onnx.load(str(engine.path))
        weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if len(t.dims) == 2 else 0)
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * -3.0, weight.name))
        onnx.save(model, str(engine.path))
        return engine

    monkeypatch.setattr(OnnxRuntimeBackend, "build", build_damaged)


def test_damaged_engine_fails_gates_flow_state_failed(tmp_path, prefect_harness, damaging_backend, caplog):
    from bertbuild.flows.build_bert import build_bert

    state = build_bert(_config(tmp_path), return_state=True)
    assert state.is_failed() and "polygraphy_parity" in state.message
    # A failed gate is a verdict: the run ends Failed without a traceback in its log.
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    with pytest.raises(GateFailed, match="polygraphy_parity") as failed:
        state.result()
    rows = json.loads(Path(failed.value.results).read_text())["results"]
    assert rows[1]["gates"] == "FAIL" and not rows[1]["validation_passed"]


def test_damaged_engine_cli_exits_1_naming_the_gate(tmp_path, prefect_harness, damaging_backend, capsys):
    import yaml

    from bertbuild.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path)))
    assert main(["run", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out  # the table is still shown
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("bertbuild: error: ") and "polygraphy_parity" in last and "by " in last


def _assert_only_reports_published(store_dir, model):
    """Nothing released, and the failed run's bundle (and every stored blob) holds reports only."""
    from bertbuild.artifacts.store import ArtifactStore

    store = ArtifactStore(store_dir)
    assert store.runs(model) == [] and store.latest(model) is None
    (failed,) = store.runs(model, failed=True)
    manifest = store.read_manifest(model, failed, failed=True)
    assert manifest.files and not any(name.endswith(".onnx") for name in manifest.files)
    assert set(store.blobs()) == {entry["sha256"] for entry in manifest.files.values()}


def test_all_precisions_are_written_scored_gated_and_published(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    # A random-weight model's F1 is noise on 10 questions: loosen only the F1 gate; parity gates stay.
    loose = {"max_f1_drop": 100.0, "min_argmax_agreement": 0.9}
    config = _config(tmp_path, engines={"precisions": ["fp32", "fused-fp32", "fp16", "int8"]},
                     precision={"int8": {"samples": 16, "max_seq_length": 128}, "tune": {"questions": 12}},
                     gates={"fp16": loose, "int8": loose})
    result = build_bert(config)
    rows = {row["engine"]: row for row in result["rows"]}
    assert list(rows) == ["tensorflow-fp32", "onnxruntime-fp32", "onnxruntime-fused-fp32", "onnxruntime-fp16",
                          "onnxruntime-int8"]
    assert all(row["gates"] == "PASS" for row in result["rows"][1:])
    assert rows["onnxruntime-fused-fp32"]["max_abs_dlogit"] <= 1e-4
    assert rows["onnxruntime-fp16"]["max_abs_dlogit"] <= 0.05
    assert 0 < rows["onnxruntime-int8"]["max_abs_dlogit"] <= 1.0
    reports = json.loads((Path(result["run_dir"]) / "results.json").read_text())["reports"]
    assert reports["fusion"]["passes"] == {"layernorm": 5, "gelu": 2, "attention": 2}
    assert reports["calibration"]["rows"] == 16 and reports["calibration"]["method"] == "minmax"
    assert reports["tune"]["questions"] == 12 and len(reports["tune"]["question_ids"]) == 12
    assert reports["int8_choice"]["plain"]["questions"] == 12

    published = result["published"]
    assert published["released"] and published["latest"]
    names = set(published["files"])
    assert {"model-fp32.onnx", "model-fused.onnx", "model-fp16.onnx", "int8/model.int8-s8s8.onnx",
            "int8/model.int8-u8s8.onnx", "int8/model.int8-ort.onnx", "int8/calibration.json", "results.json",
            "engines/int8/model.int8-ort.ort.onnx"} <= names
    assert not any(n.endswith(".npz") for n in names)


def test_the_default_backend_on_a_cpu_host_builds_every_precision_on_openvino(tmp_path, prefect_harness):
    """`auto` on this CPU host: OpenVINO engines from the portable files, each saying what it computes in."""
    from bertbuild.backends.openvino import can_compute, capabilities
    from bertbuild.backends.registry import resolve_backend
    from bertbuild.flows.build_bert import build_bert

    if resolve_backend("auto")[0] != "openvino":
        pytest.skip(f"auto picks {resolve_backend('auto')[0]} here: {resolve_backend('auto')[1]}")
    bf16 = can_compute("bf16", capabilities())[0]
    loose = {"max_f1_drop": 100.0, "min_argmax_agreement": 0.5}
    config = _config(tmp_path, engines={"precisions": ["fp32", "fused-fp32", "fp16", "bf16", "int8"]},
                     precision={"int8": {"samples": 16, "max_seq_length": 128}, "tune": {"questions": 12,
                                                                                         "min_answer_agreement": 0.5}},
                     gates={"fp16": loose, "bf16": loose, "int8": loose})
    config["engines"]["backend"] = "auto"
    result = build_bert(config)
    rows = {row["engine"]: row for row in result["rows"]}
    expected = ["openvino-fp32", "openvino-fused-fp32", "openvino-fp16", *(["openvino-bf16"] if bf16 else []),
                "openvino-int8"]
    assert list(rows) == ["tensorflow-fp32", *expected]
    assert rows["openvino-fp32"]["compute_precision"] == "fp32" and rows["openvino-fp32"]["max_abs_dlogit"] <= 1e-4
    reports = json.loads((Path(result["run_dir"]) / "results.json").read_text())["reports"]
    parts = reports["int8_choice"]["float_parts"]
    assert parts["chosen"] in ("fp32", "bf16") and "fp32" in parts and ("bf16" in parts) == bf16
    assert rows["openvino-int8"]["compute_precision"] == f"int8+{parts['chosen']}"  # what OpenVINO reports
    assert reports["int8"]["paths"]["s8s8"] == reports["outputs"]["openvino-int8"]["onnx"]  # the portable file
    if bf16:
        assert rows["openvino-bf16"]["compute_precision"] == "bf16"
    else:
        assert reports["skipped_engines"] == {"openvino-bf16": capabilities() and
                                              can_compute("bf16", capabilities())[1]}
    names = set(result["published"]["files"])
    assert {"model-bf16.onnx", "engines/int8/model.int8-s8s8.openvino.xml",
            "engines/int8/model.int8-s8s8.openvino.bin", "triton/tiny-int8/1/model.xml",
            "triton/tiny-int8/1/model.bin", "triton/tiny-int8/config.pbtxt"} <= names
    assert "model-bf16.onnx" in reports["trt_ready"]


def test_tune_questions_are_train_half_and_never_calibration_questions(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert
    from bertbuild.precision.ranges import load_calibration
    from bertbuild.squad import data

    loose = {"max_f1_drop": 100.0, "min_argmax_agreement": 0.0}
    result = build_bert(_config(tmp_path, engines={"precisions": ["int8"]}, gates={"int8": loose},
                                precision={"int8": {"samples": 16, "max_seq_length": 128},
                                           "tune": {"questions": 20}}))
    train, heldout = data.split_by_article(data.load_dataset())
    train_ids, heldout_ids = ({e.qid for e in data.examples_from(half)} for half in (train, heldout))
    tune = set(result["reports"]["tune"]["question_ids"])
    calibration = set(load_calibration(result["files"]["int8/calibration.json"]).question_ids)
    assert len(tune) == 20 and tune <= train_ids and not tune & heldout_ids and not tune & calibration


def test_int8_that_misses_the_tune_gate_fails_and_publishes_no_engine(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    # Percentile 50 clips half of every activation: INT8 answers drift from FP32's, and
    # returning 4 of 12 MatMuls to FP32 cannot bring every answer back.
    config = _config(tmp_path, engines={"precisions": ["fp32", "int8"]},
                     precision={"int8": {"samples": 16, "max_seq_length": 128, "method": "percentile", "percentile": 50.5},
                                "tune": {"questions": 30, "min_answer_agreement": 1.0},
                                "fallback": {"step": 2, "max_nodes": 4}},
                     gates={"int8": {"max_f1_drop": 100.0, "min_argmax_agreement": 0.0}})
    state = build_bert(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailed, match="onnxruntime-int8: tune_answer_agreement") as failed:
        state.result()
    saved = json.loads(Path(failed.value.results).read_text())
    fallback = saved["reports"]["int8_choice"]["fallback"]
    assert [len(step["excluded"]) for step in fallback["steps"]] == [2, 4] and not fallback["passed"]
    assert fallback["ranking"][:4] == fallback["steps"][1]["excluded"] and fallback["pareto"]
    _assert_only_reports_published(tmp_path / "store", "tiny")


@pytest.mark.parametrize("budget", [{"max_tries": 0}, {"max_nodes": 0}, {"enabled": False}])
def test_a_fallback_with_no_budget_is_a_named_gate_failure(tmp_path, prefect_harness, budget):
    from bertbuild.flows.build_bert import build_bert

    config = _config(tmp_path, engines={"precisions": ["int8"]},
                     precision={"int8": {"samples": 16, "max_seq_length": 128, "method": "percentile", "percentile": 50.5},
                                "tune": {"questions": 30, "min_answer_agreement": 1.0}, "fallback": budget},
                     gates={"int8": {"max_f1_drop": 100.0, "min_argmax_agreement": 0.0}})
    state = build_bert(config, return_state=True)
    with pytest.raises(GateFailed, match="tune_answer_agreement"):
        state.result()
    _assert_only_reports_published(tmp_path / "store", "tiny")


def test_a_stale_file_in_the_output_tree_is_never_published(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    stale = tmp_path / "runs" / "tiny" / "int8-fallback-9" / "stale.onnx"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"not from this run")
    first = build_bert(_config(tmp_path))
    (Path(first["run_dir"]) / "leftover.onnx").write_bytes(b"planted after the first run")
    second = build_bert(_config(tmp_path))
    for result in (first, second):
        names = set(_manifest(result))
        assert not any("stale" in n or "leftover" in n or "fallback" in n for n in names)
    assert first["run_dir"] != second["run_dir"]


def test_two_concurrent_runs_publish_disjoint_correct_bundles(tmp_path, prefect_harness):
    from bertbuild.artifacts.download import download, verify_dir
    from bertbuild.flows.build_bert import build_bert

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: build_bert(_config(tmp_path)), range(2)))
    run_dirs = {r["run_dir"] for r in results}
    run_ids = {r["published"]["run_id"] for r in results}
    assert len(run_dirs) == 2 and len(run_ids) == 2
    for result in results:
        dest = tmp_path / f"download-{result['published']['run_id']}"
        download(tmp_path / "store", "tiny", dest, run=result["published"]["run_id"])
        manifest = verify_dir(dest)
        assert manifest.run_id == result["published"]["run_id"] and set(manifest.files) == set(result["files"])


def test_a_rerun_reuses_every_step_and_a_new_gate_threshold_rebuilds_nothing(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    cfg = _config(tmp_path, engines={"precisions": ["fp32", "fused-fp32"]})
    cold = build_bert(cfg)
    assert cold["reports"]["export"]["cached"] is False
    warm = build_bert(cfg | {"gates": {"fused-fp32": {"max_f1_drop": 0.01}}})
    assert warm["reports"]["export"]["cached"] is True and warm["reports"]["fusion"] == cold["reports"]["fusion"]
    assert [r["f1"] for r in warm["rows"]] == [r["f1"] for r in cold["rows"]]
    steps = sorted(p.parent.parent.name for p in (tmp_path / "cache" / "steps").glob("*/*/result.json"))
    # One entry per step and engine: the second run added none.
    assert steps.count("export") == 1 and steps.count("engine") == 2 and steps.count("evaluation") == 2
    fresh = build_bert(cfg | {"cache": {"dir": str(tmp_path / "cache"), "refresh": ["export"]}})
    assert fresh["reports"]["export"]["cached"] is False


def test_a_slower_build_than_the_last_release_fails_its_regression_gate(tmp_path, prefect_harness, monkeypatch):
    """The second build times twice as slow on the same host: its own gates pass, the one against latest fails."""
    from dataclasses import replace

    from bertbuild.artifacts.store import ArtifactStore
    from bertbuild.evaluation import latency
    from bertbuild.flows.build_bert import build_bert

    cfg = _config(
        tmp_path,
        benchmark={"batch": 2, "seq": 128, "warmup": 1, "iterations": 2, "reuse": False},
        regression={"max_latency_ratio_vs_latest": 1.15},
    )
    first = build_bert(cfg)
    assert first["reports"]["regression"]["latest_run_id"] is None  # a first release has nothing to lose to
    measure = latency.measure

    def twice_as_slow(*args, **kwargs):
        stats = measure(*args, **kwargs)
        return replace(stats, p50_ms=2 * first["rows"][1]["p50_ms"], mean_ms=2 * stats.mean_ms)

    monkeypatch.setattr(latency, "measure", twice_as_slow)
    state = build_bert(cfg, return_state=True)
    with pytest.raises(GateFailed, match="onnxruntime-fp32: max_latency_ratio_vs_latest") as failed:
        state.result()
    saved = json.loads(Path(failed.value.results).read_text())
    assert saved["reports"]["regression"]["latest_run_id"] == first["published"]["run_id"]
    regression = json.loads((Path(failed.value.results).parent / "regression.json").read_text())
    assert regression["same_host"] is True
    store = ArtifactStore(tmp_path / "store")
    assert store.latest("tiny") == first["published"]["run_id"] and len(store.runs("tiny", failed=True)) == 1


def test_no_held_out_question_is_read_before_the_final_scoring(tmp_path, prefect_harness, monkeypatch):
    """Every featurization is recorded with the task that asked for it: calibration, the tune split,
    the fallback and its ranking see train-half questions only; held-out ones reach only the scoring set."""
    from prefect.runtime import task_run

    from bertbuild.evaluation import score
    from bertbuild.evaluation import tune_split as tuning
    from bertbuild.squad import data, sets

    _, heldout = data.split_by_article(data.load_dataset())
    heldout_ids = {e.qid for e in data.examples_from(heldout)}
    seen: list[tuple[str, bool]] = []
    featurize = sets.featurize

    def recording(examples, *args, **kwargs):
        seen.append((task_run.task_name or "-", any(e.qid in heldout_ids for e in examples)))
        return featurize(examples, *args, **kwargs)

    for module in (sets, tuning, score):  # every module that holds the name
        monkeypatch.setattr(module, "featurize", recording)
    from bertbuild.flows.build_bert import build_bert

    loose = {"max_f1_drop": 100.0, "min_argmax_agreement": 0.0}
    state = build_bert(_config(tmp_path, engines={"precisions": ["int8"]}, gates={"int8": loose},
                               precision={"int8": {"samples": 16, "max_seq_length": 128},
                                          "tune": {"questions": 20, "min_answer_agreement": 1.0},
                                          "fallback": {"step": 2, "max_tries": 1}}), return_state=True)
    tasks = {name for name, _ in seen}
    assert {"featurize-squad", "prepare-int8-source", "calibrate-int8", "tune-windows"} <= tasks
    # Held-out questions: the scoring set, and (its benchmark shape differs from the scoring one here)
    # the timing feed, which only times the engine after scoring.
    assert [name for name, held_out in seen if held_out] == ["featurize-squad", "benchmark-engine"]
    assert state.is_completed() or "tune_answer_agreement" in state.message
