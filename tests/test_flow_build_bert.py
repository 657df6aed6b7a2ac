"""The build-bert flow end to end on a generated checkpoint, under a Prefect test API."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from bertbuild.errors import GateFailed


def _config(tmp_path, **sections):
    config = {
        "model": {"source": "generated:tiny", "name": "tiny"},
        "eval": {"limit": 10, "batch_size": 4},
        "validation": {"batches": 2},
        "benchmark": {"batch": 2, "seq": 128, "warmup": 1, "iterations": 2},
        "engines": {"precisions": ["fp32"]},
        "publish": {"store": str(tmp_path / "store")},
        "output_dir": str(tmp_path / "run"),
    }
    return config | sections


def test_flow_exports_evaluates_validates_and_reports(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    result = build_bert(_config(tmp_path))
    reference, engine = result["rows"]
    assert reference["engine"] == "tensorflow-fp32" and engine["engine"] == "onnxruntime-fp32"
    assert engine["max_abs_dlogit"] <= 1e-4 and engine["questions"] == 10
    assert engine["validation_passed"] and engine["argmax_agreement"] == 1.0 and engine["gates"] == "PASS"
    assert engine["seq_per_s"] > 0 and engine["p50_ms"] > 0
    # Identical logits up to 1e-4 give identical answers, so identical scores.
    assert engine["f1"] == reference["f1"]
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"] == result["rows"] and all(g["passed"] for g in saved["gates"])
    predictions = json.loads((out / "predictions-onnxruntime-fp32.json").read_text())
    assert len(predictions) == 10 and all(isinstance(v, str) for v in predictions.values())
    assert (out / "vocab.txt").is_file() and (out / "validation-onnxruntime-fp32.json").is_file()
    assert "gates" in result["table"] and "PASS" in result["table"]


def test_parity_gate_fails_the_flow_run(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    state = build_bert(_config(tmp_path, parity={"max_abs_logit": 1e-12}), return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailed, match="max_abs_dlogit_vs_tensorflow"):
        state.result()


@pytest.fixture
def damaging_backend(monkeypatch):
    """Every engine the ONNX Runtime backend builds gets one weight matrix scaled by -3."""
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend

    original = OnnxRuntimeBackend.build

    def build_damaged(self, onnx_path, precision, profiles, out_dir):
        engine = original(self, onnx_path, precision, profiles, out_dir)
        model = onnx.load(str(engine.path))
        weight = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if len(t.dims) == 2 else 0)
        weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * -3.0, weight.name))
        onnx.save(model, str(engine.path))
        return engine

    monkeypatch.setattr(OnnxRuntimeBackend, "build", build_damaged)


def test_damaged_engine_fails_gates_flow_state_failed(tmp_path, prefect_harness, damaging_backend):
    from bertbuild.flows.build_bert import build_bert

    state = build_bert(_config(tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailed, match="polygraphy_parity"):
        state.result()
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
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


def _store_files(store):
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())


def test_all_precisions_are_written_scored_gated_and_published(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    # A random-weight model's F1 is noise on 10 questions: loosen only the F1 gate; parity gates stay.
    loose = {"max_f1_drop": 100.0, "min_argmax_agreement": 0.9}
    config = _config(tmp_path, engines={"precisions": ["fp32", "fused-fp32", "fp16", "int8"]},
                     precision={"int8": {"samples": 16, "max_seq_length": 128}},
                     gates={"fp16": loose, "int8": loose})
    result = build_bert(config)
    rows = {row["engine"]: row for row in result["rows"]}
    assert list(rows) == ["tensorflow-fp32", "onnxruntime-fp32", "onnxruntime-fused-fp32", "onnxruntime-fp16",
                          "onnxruntime-int8"]
    assert all(row["gates"] == "PASS" for row in result["rows"][1:])
    assert rows["onnxruntime-fused-fp32"]["max_abs_dlogit"] <= 1e-4
    assert rows["onnxruntime-fp16"]["max_abs_dlogit"] <= 0.05
    assert 0 < rows["onnxruntime-int8"]["max_abs_dlogit"] <= 1.0
    reports = json.loads((tmp_path / "run" / "results.json").read_text())["reports"]
    assert reports["fusion"]["passes"] == {"layernorm": 5, "gelu": 2, "attention": 2}
    assert reports["calibration"]["rows"] == 16 and reports["calibration"]["method"] == "percentile"
    assert reports["int8"]["onnx"].endswith("int8/model.int8-u8s8.onnx")  # ONNX Runtime runs u8s8

    published = result["published"]
    assert published["released"] and published["latest"]
    names = set(published["files"])
    assert {"model-fp32.onnx", "model-fused.onnx", "model-fp16.onnx", "int8/model.int8-s8s8.onnx",
            "int8/model.int8-u8s8.onnx", "results.json"} <= names
    assert not any(n.startswith("checkpoints/") or n.endswith(".npz") for n in names)


def test_int8_fallback_that_cannot_reach_the_gate_fails_and_publishes_no_engine(tmp_path, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    config = _config(tmp_path, engines={"precisions": ["fp32", "int8"]},
                     precision={"int8": {"samples": 16, "max_seq_length": 128},
                                "fallback": {"step": 2, "max_nodes": 4}},
                     gates={"int8": {"max_f1_drop": -100.0}})  # unreachable: F1 would have to rise 100 points
    state = build_bert(config, return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailed, match="onnxruntime-int8"):
        state.result()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    fallback = saved["reports"]["int8_fallback"]
    assert [len(step["excluded"]) for step in fallback["steps"]] == [2, 4] and not fallback["passed"]
    assert fallback["ranking"][:4] == fallback["steps"][1]["excluded"]
    stored = _store_files(tmp_path / "store")
    assert stored and not any(name.endswith(".onnx") for name in stored)  # reports only, under failed/
    assert all("/failed/" in f"/{name}" for name in stored if name.endswith("results.json"))
