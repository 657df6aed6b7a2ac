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
        "output_dir": str(tmp_path / "run"),
    }
    return config | sections


def test_flow_exports_evaluates_validates_and_reports(tmp_path, prefect_harness):
    from flows.build_bert import build_bert

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
    from flows.build_bert import build_bert

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
    from flows.build_bert import build_bert

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
